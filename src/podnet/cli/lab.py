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
    lb_pool: str = typer.Option(None, "--lb-pool", help="CIDR inside the underlay for LoadBalancer Service "
                                "addresses (default: its top quarter, 192.168.77.192/26)"),
    source: str = typer.Option("store", "--source", help="Where node agents' proxy and overlay read objects: "
                               "store (podnet's store) or kube (the lab's Kubernetes API server, as kube-proxy "
                               "and flanneld --kube-subnet-mgr; the control plane assigns node podCIDRs)"),
    ip_family: str = typer.Option("ipv4", "--ip-family", help="The cluster's IP families: ipv4 | ipv6 | dual "
                                  "(nodes, pods and Services; dual: IPv4 first, as kind's dual-stack)"),
) -> None:
    """Create the lab: underlay, nodes, agents (overlay, proxy, pods), Node objects in the store."""
    from podnet.controllers.allocators import AllocatorConfig
    from podnet.lab import cluster, topology

    spec = topology.build(name, nodes, backend, proxy_mode, store, underlay, AllocatorConfig.from_env().service_cidr,
                          lb_pool, source, ip_family)
    st = cluster.up(spec, _store_url(ctx))
    typer.echo(f"lab {name} is up: {nodes} nodes, backend {backend}, proxy {proxy_mode}, store {st.store_url}"
               + (", agents watch the API server" if source == "kube" else "")
               + (f", {ip_family}" if ip_family != "ipv4" else ""))
    if st.store_url != _store_url(ctx):
        typer.echo(f"  use it with: export PODNET_STORE={st.store_url}")
    if spec.service_cidr != AllocatorConfig.from_env().service_cidr:
        # every Service writer must allocate from the same ranges (the lab's API server already does)
        typer.echo(f"  `podnet apply` on it: export PODNET_SERVICE_CIDR={spec.service_cidr}")
    for n in spec.node_specs:
        typer.echo(f"  {n.name}: netns {n.netns}, InternalIP {', '.join(n.internal_ips(spec.ip_family))}")
    if spec.lb_pool:
        typer.echo(f"  LoadBalancer pool {spec.lb_pool}, announced on the underlay (`podnet lab exec underlay`)")
    else:
        typer.echo("  no LoadBalancer pool: the underlay has no room above the nodes (give --lb-pool)")


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


@app.command("ui")
def ui(
    name: str = typer.Option("lab", "--name", help="The lab to show"),
    listen: str = typer.Option("127.0.0.1:8480", "--listen", help="HOST:PORT to serve the page on (port 0: any)"),
    allow_non_loopback: bool = typer.Option(False, "--allow-non-loopback",
                                            help="Serve on a non-loopback address (anyone who reaches it "
                                                 "sees the lab and can run traces)"),
    snapshot: str = typer.Option(None, "--snapshot", help="Write the picture to this SVG file and exit"),
    trace_from: str = typer.Option("", "--trace-from", help="With --snapshot: draw this trace's path too"),
    trace_to: str = typer.Option("", "--trace-to", help="With --snapshot: the trace's destination"),
) -> None:
    """A live web page of the lab's network (nodes, pods, Services, traced paths), or --snapshot FILE.svg."""
    from podnet.ui import main as ui_main

    ui_main.run(name, listen, allow_non_loopback=allow_non_loopback, snapshot=snapshot,
                trace_from=trace_from, trace_to=trace_to)


@app.command("exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def exec_(
    ctx: typer.Context,
    target: str = typer.Argument(..., help="A node name (node1), a pod ([NS/]POD), or `underlay`: a host on "
                                 "the lab's underlay that is no node (the bridge's own address)"),
    name: str = typer.Option("lab", "--name"),
) -> None:
    """Run a command inside a node's or a pod's namespace: podnet lab exec node1 -- ip route."""
    from podnet.lab import cluster

    argv = list(ctx.args)
    if not argv:
        raise typer.BadParameter("give the command after --, e.g. podnet lab exec node1 -- ip route")
    ns = cluster.resolve_target(name, target)
    from podnet.net.exec import in_netns

    full = in_netns(ns, argv)
    os.execvp(full[0], full)


@app.command("supervise", hidden=True)
def supervise(name: str = typer.Option(..., "--name")) -> None:
    from podnet.lab import supervisor

    sys.exit(supervisor.main(name))


@app.command("controller", hidden=True)
def controller(name: str = typer.Option(..., "--name")) -> None:
    """The lab's control plane (scheduler, Deployment and EndpointSlice controllers), run by the supervisor."""
    from podnet.lab import controller as lab_controller

    sys.exit(lab_controller.main(name))


@app.command("speaker", hidden=True)
def speaker(ctx: typer.Context, name: str = typer.Option(..., "--name"),
            node: str = typer.Option(..., "--node")) -> None:
    """Runs inside a node namespace: answers ARP on the underlay for the LoadBalancer addresses it wins."""
    from podnet.lab import speaker as lab_speaker

    sys.exit(lab_speaker.main(name, node, _store_url(ctx)))


@app.command("agent", hidden=True)
def agent(ctx: typer.Context, name: str = typer.Option(..., "--name"), node: str = typer.Option(..., "--node")) -> None:
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
