"""`podnet lab ...`: build, inspect and remove a multi-node cluster network made of namespaces."""

from __future__ import annotations

import os
import sys

import typer

app = typer.Typer(help="A multi-node cluster network in network namespaces on this machine.", no_args_is_help=True)


def _store_url(ctx: typer.Context) -> str:
    from podnet.store import DEFAULT_STORE_URL

    return ctx.obj.store_url or os.environ.get("PODNET_STORE") or DEFAULT_STORE_URL


@app.command("up")
def up(
    ctx: typer.Context,
    name: str = typer.Option("lab", "--name", help="Lab name; namespaces are pn-<name>.*"),
    nodes: int = typer.Option(2, "--nodes", help="Number of nodes"),
    backend: str = typer.Option("vxlan", "--backend", help="Overlay backend: vxlan | host-gw | udp"),
    proxy_mode: str = typer.Option("iptables", "--proxy-mode", help="Service proxy mode: iptables | nftables"),
    store: str = typer.Option("sqlite", "--store", help="The lab's store: sqlite (the global --store URL) or "
                              "etcd (a member started inside the lab, reached through a unix socket)"),
    underlay: str = typer.Option("192.168.77.0/24", "--underlay", help="Underlay CIDR (isolated bridge)"),
    source: str = typer.Option("store", "--source", help="Where node agents' proxy and overlay read objects: "
                               "store (podnet's store) or kube (the lab's Kubernetes API server, as kube-proxy "
                               "and flanneld --kube-subnet-mgr; the control plane assigns node podCIDRs)"),
) -> None:
    """Create the lab: underlay, nodes, agents (overlay, proxy, pods), Node objects in the store."""
    from podnet.lab import cluster, topology

    spec = topology.build(name, nodes, backend, proxy_mode, store, underlay, source)
    st = cluster.up(spec, _store_url(ctx))
    typer.echo(f"lab {name} is up: {nodes} nodes, backend {backend}, proxy {proxy_mode}, store {st.store_url}"
               + (", agents watch the API server" if source == "kube" else ""))
    if st.store_url != _store_url(ctx):
        typer.echo(f"  use it with: export PODNET_STORE={st.store_url}")
    for n in spec.node_specs:
        typer.echo(f"  {n.name}: netns {n.netns}, InternalIP {n.underlay_ip}")


@app.command("down")
def down(name: str = typer.Option("lab", "--name")) -> None:
    """Remove everything the lab made (also after its processes were killed)."""
    from podnet.lab import cluster

    removed = cluster.down(name)
    if not removed:
        typer.echo(f"lab {name}: nothing to remove")
    else:
        typer.echo(f"lab {name} removed ({len(removed)} objects)")


@app.command("kubeconfig")
def kubeconfig(name: str = typer.Option("lab", "--name")) -> None:
    """Print the path of the lab's kubeconfig: export KUBECONFIG=$(podnet lab kubeconfig)."""
    from podnet.lab import apiserver
    from podnet.lab.state import LabState

    st = LabState.load(name)
    if st is None or not apiserver.kubeconfig_path(st).exists():
        from podnet.lab.cluster import LabError

        raise LabError(f"lab {name!r}: no such lab (or it has no API server); run `podnet lab up --name {name}`")
    typer.echo(str(apiserver.kubeconfig_path(st)))


@app.command("status")
def status(ctx: typer.Context, name: str = typer.Option("lab", "--name")) -> None:
    """Nodes, subnets, pods, services and the health of the lab's processes."""
    from podnet.lab import status as lab_status

    lab_status.show(name)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="A node name (node1) or a pod ([NS/]POD)"),
    name: str = typer.Option("lab", "--name"),
) -> None:
    """Run a command inside a node's or a pod's namespace: podnet lab exec node1 -- ip route."""
    from podnet.lab import cluster

    argv = list(ctx.args)
    if not argv:
        raise typer.BadParameter("give the command after --, e.g. podnet lab exec node1 -- ip route")
    ns = cluster.resolve_target(name, target)
    os.execvp("ip", ["ip", "netns", "exec", ns, *argv])


@app.command("supervise", hidden=True)
def supervise(name: str = typer.Option(..., "--name")) -> None:
    from podnet.lab import supervisor

    sys.exit(supervisor.main(name))


@app.command("controller", hidden=True)
def controller(name: str = typer.Option(..., "--name")) -> None:
    """The lab's control plane (scheduler, Deployment and EndpointSlice controllers), run by the supervisor."""
    from podnet.lab import controller as lab_controller

    sys.exit(lab_controller.main(name))


@app.command("agent", hidden=True)
def agent(name: str = typer.Option(..., "--name"), node: str = typer.Option(..., "--node"), ctx: typer.Context = None) -> None:  # type: ignore[assignment]
    """Runs inside a node namespace: wires and runs the pods bound to that node."""
    from podnet.lab import agent as lab_agent

    sys.exit(lab_agent.main(name, node, _store_url(ctx)))


@app.command("serve-http", hidden=True)
def serve_http(
    pod: str = typer.Option(..., "--pod"), port: list[int] = typer.Option([80], "--port")
) -> None:
    """The built-in pod server: answers every HTTP request with the pod's name and IP."""
    from podnet.lab import podserver

    podserver.serve(pod, port)
