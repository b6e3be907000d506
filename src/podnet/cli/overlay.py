"""`podnet overlay ...`: the network config, the subnet leases, and the overlay daemon (flanneld's job)."""

from __future__ import annotations

import ipaddress
import json
import logging
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict

import typer

from podnet.cli import source as source_opts
from podnet.errors import Problem, ValidationError

if TYPE_CHECKING:
    from podnet.store import Store

app = typer.Typer(help="Pod network overlay (flannel-compatible): net-conf, subnet leases, the node daemon.",
                  no_args_is_help=True)
config_app = typer.Typer(help="The network config (flannel's net-conf.json at /coreos.com/network/config).",
                         no_args_is_help=True)
app.add_typer(config_app, name="config")


def _store(ctx: typer.Context) -> Store:
    return ctx.obj.store()


class _LeaseRow(TypedDict):
    """One row of `overlay leases` (the JSON output's keys)."""

    subnet: str
    public_ip: str
    backend_type: str | None
    backend_data: dict[str, Any] | None
    subnet_v6: str | None
    public_ipv6: str | None
    backend_v6_data: dict[str, Any] | None
    expires_in: int | None
    reservation: bool


@config_app.command("set")
def config_set(
    ctx: typer.Context,
    filename: str = typer.Option(..., "-f", "--filename", help="net-conf.json to store ('-' = stdin)."),
) -> None:
    """Validate a net-conf and store it as given. Nothing is stored if any field is wrong."""
    from podnet.overlay.netconf import save_netconf

    try:
        data = sys.stdin.buffer.read() if filename == "-" else Path(filename).read_bytes()
    except OSError as e:
        raise ValidationError([Problem("--filename", filename, f"cannot read: {e.strerror}")]) from e
    conf = save_netconf(_store(ctx), data)
    typer.echo(f"network config stored: Network {conf.network}, SubnetLen {conf.subnet_len}, "
               f"backend {conf.backend_type}")


@config_app.command("get")
def config_get(
    ctx: typer.Context,
    effective: bool = typer.Option(False, "--effective", help="Show the config with flannel's defaults filled in."),
) -> None:
    """Print the stored net-conf (exactly as stored, or with defaults filled in)."""
    from podnet.errors import NotFound
    from podnet.overlay.netconf import ConfigNotFound, load_netconf

    try:
        conf, raw = load_netconf(_store(ctx))
    except ConfigNotFound as e:
        raise NotFound(str(e)) from e
    if effective:
        typer.echo(json.dumps(conf.summary(), indent=2))
    else:
        sys.stdout.write(raw.decode(errors="replace"))
        if not raw.endswith(b"\n"):
            sys.stdout.write("\n")


@app.command("leases")
def leases(ctx: typer.Context, output: str = typer.Option("table", "-o", "--output", help="table or json")) -> None:
    """List every node's subnet lease (the flannel keys under /coreos.com/network/subnets/)."""
    from podnet.overlay.storesubnet import SubnetManager

    store = _store(ctx)
    items, _ = SubnetManager(store).list_leases()
    ttl_of = getattr(store, "lease_ttl", None)
    rows: list[_LeaseRow] = []
    for lease in items:
        left: float | None = None
        if lease.store_lease and ttl_of is not None:
            try:
                left = ttl_of(lease.store_lease)
            except Exception:
                left = None
        rows.append({
            "subnet": str(lease.subnet), "public_ip": str(lease.public_ip), "backend_type": lease.backend_type,
            "backend_data": lease.backend_data,
            "subnet_v6": None if lease.subnet_v6 is None else str(lease.subnet_v6),
            "public_ipv6": None if lease.public_ipv6 is None else str(lease.public_ipv6),
            "backend_v6_data": lease.backend_v6_data,
            "expires_in": None if not lease.store_lease else (None if left is None else round(left)),
            "reservation": not lease.store_lease,
        })
    if output == "json":
        typer.echo(json.dumps(rows, indent=2))
        return
    if output != "table":
        raise ValidationError([Problem("--output", output, "must be table or json")])
    from rich.table import Table

    from podnet.console import console

    v6 = any(r["subnet_v6"] for r in rows)
    heads = ["SUBNET", "PUBLIC IP"] + (["IPV6 SUBNET", "PUBLIC IPV6"] if v6 else []) + [
        "BACKEND", "BACKEND DATA", "EXPIRES IN"]
    table = Table(*heads, box=None)
    for r in rows:
        exp = "never (reservation)" if r["reservation"] else ("?" if r["expires_in"] is None else f"{r['expires_in']}s")
        cells = [r["subnet"], r["public_ip"]] + ([r["subnet_v6"] or "", r["public_ipv6"] or ""] if v6 else [])
        table.add_row(*cells, r["backend_type"] or "",
                      json.dumps(r["backend_data"]) if r["backend_data"] is not None else "", exp)
    console().print(table)


@app.command("revoke")
def revoke(ctx: typer.Context, subnet: str = typer.Argument(
        ..., help="Lease subnet, IPv4 or IPv6, e.g. 10.244.3.0/24 or fd00:10:244:3::/64")) -> None:
    """Delete a node's lease now (its daemon exits; peers drop its routes)."""
    from podnet.errors import NotFound
    from podnet.overlay.storesubnet import SubnetManager

    try:
        net = ipaddress.ip_network(subnet)
    except ValueError as e:
        raise ValidationError([Problem("SUBNET", subnet, "not a subnet like 10.244.3.0/24 or fd00:10:244:3::/64")]
                              ) from e
    if not SubnetManager(_store(ctx)).revoke(net):
        raise NotFound(f"no lease for {net}")
    typer.echo(f"lease {net} revoked")


@app.command("run")
def run(
    ctx: typer.Context,
    node: str = typer.Option(..., "--node", envvar="NODE_NAME",
                             help="This node's name (its Node object with --kube-subnet-mgr; logs)."),
    iface: str = typer.Option(None, "--iface", help="Underlay interface (name or IPv4); default: the default route's."),
    public_ip: str = typer.Option(None, "--public-ip", help="IP peers send to (default: the interface's address)."),
    public_ipv6: str = typer.Option(None, "--public-ipv6", help="IPv6 peers send to with an IPv6 pod network "
                                    "(default: the interface's global IPv6 address)."),
    ip_masq: bool = typer.Option(False, "--ip-masq", help="Masquerade pod traffic leaving the pod network."),
    subnet_file: str = typer.Option("/run/flannel/subnet.env", "--subnet-file", help="Where to write subnet.env."),
    lease_ttl: float = typer.Option(24 * 3600.0, "--lease-ttl", help="Lease TTL in seconds (flannel: 24 h)."),
    renew_margin: float = typer.Option(3600.0, "--renew-margin",
                                       help="Renew this many seconds before expiry (flannel: 60 min)."),
    resync: float = typer.Option(5.0, "--iptables-resync", help="Seconds between rule and route checks."),
    forward_rules: bool = typer.Option(True, "--iptables-forward-rules/--no-iptables-forward-rules",
                                       help="Install FLANNEL-FWD accept rules."),
    healthz_ip: str = typer.Option("0.0.0.0", "--healthz-ip", help="Address of /healthz, /readyz, /metrics."),
    healthz_port: int = typer.Option(0, "--healthz-port", help="Port of /healthz, /readyz, /metrics (0 = off)."),
    config_timeout: float = typer.Option(None, "--config-timeout",
                                         help="Give up if no network config appears within this many seconds."),
    verbose: bool = typer.Option(False, "-v", "--verbose", help="Debug logging."),
    kube_subnet_mgr: bool = typer.Option(
        False, "--kube-subnet-mgr", help="flannel's Kubernetes subnet manager: lease = the Node's spec.podCIDR, "
        "peers from Node annotations, net-conf from --net-config-path; Nodes from a Kubernetes API server."),
    net_config_path: str = typer.Option("/etc/kube-flannel/net-conf.json", "--net-config-path",
                                        help="net-conf.json with --kube-subnet-mgr (the kube-flannel-cfg ConfigMap)."),
    annotation_prefix: str = typer.Option("flannel.alpha.coreos.com", "--kube-annotation-prefix",
                                          help="Prefix of the Node annotations (flannel's)."),
    source: str = source_opts.SourceOpt,
    kubeconfig: str = typer.Option(None, "--kubeconfig", "--kubeconfig-file",
                                   help="kubeconfig of the API server (flannel's --kubeconfig-file)."),
    master: str = typer.Option(None, "--master", "--kube-api-url",
                               help="URL of the API server (flannel's --kube-api-url)."),
) -> None:
    """Run the overlay on this node (inside its network namespace): lease, backend, subnet.env, rules.

    Leases come from podnet's store (flannel's etcd layout), or with --kube-subnet-mgr from the Nodes of a
    Kubernetes API server (--kubeconfig, --master, or in-cluster), as flanneld in kube-flannel.yml.
    """
    from podnet.overlay.daemon import DaemonOptions, OverlayDaemon

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO, stream=sys.stderr,
        format=f"%(asctime)s {node} %(levelname)s %(name)s: %(message)s",
    )
    problems = []
    if public_ip is not None:
        try:
            ipaddress.IPv4Address(public_ip)
        except ValueError:
            problems.append(Problem("--public-ip", public_ip, "not an IPv4 address"))
    if public_ipv6 is not None:
        try:
            ipaddress.IPv6Address(public_ipv6)
        except ValueError:
            problems.append(Problem("--public-ipv6", public_ipv6, "not an IPv6 address"))
    if lease_ttl <= 0:
        problems.append(Problem("--lease-ttl", lease_ttl, "must be > 0"))
    if not 0 <= healthz_port <= 65535:
        problems.append(Problem("--healthz-port", healthz_port, "must be between 0 and 65535"))
    if resync <= 0:
        problems.append(Problem("--iptables-resync", resync, "must be > 0"))
    if problems:
        raise ValidationError(problems)
    opts = DaemonOptions(
        node=node, iface=iface, public_ip=public_ip, public_ipv6=public_ipv6, ip_masq=ip_masq, subnet_file=subnet_file,
        lease_ttl=lease_ttl, renew_margin=renew_margin, resync_period=resync, forward_rules=forward_rules,
        healthz_ip=healthz_ip, healthz_port=healthz_port,
    )
    if kube_subnet_mgr:
        opts.kube_subnet_mgr = True
        opts.net_config_path = net_config_path
        from podnet.overlay.kubesubnet import Annotations

        Annotations.for_prefix(annotation_prefix)  # refuses a bad prefix before anything starts
        opts.annotation_prefix = annotation_prefix
        src = source_opts.open_source(ctx, source or "kube", kubeconfig, master)
        daemon = OverlayDaemon(None, opts, source=src)
    else:
        if source == "kube" or kubeconfig or master:
            raise ValidationError([Problem("--kube-subnet-mgr", False, "--source kube, --kubeconfig and --master "
                                           "need --kube-subnet-mgr (leases are then the Nodes' podCIDRs)")])
        daemon = OverlayDaemon(_store(ctx), opts)
    signal.signal(signal.SIGTERM, lambda *_: daemon.stop())
    signal.signal(signal.SIGINT, lambda *_: daemon.stop())
    try:
        lease = daemon.start(config_timeout=config_timeout)
    except BaseException:
        daemon.shutdown()
        raise
    typer.echo(f"{node}: lease {lease.describe()} acquired; overlay running", err=True)
    code = daemon.wait()
    if daemon.lost is not None:
        typer.echo(f"error: {daemon.lost}. Shutting down daemon.", err=True)
    elif daemon.failure is not None:
        typer.echo(f"error: {daemon.failure}", err=True)
    else:
        typer.echo(f"{node}: stopped at {time.strftime('%H:%M:%S')}; lease {lease.describe()} kept", err=True)
    # sys.exit, not typer.Exit: main() runs the app with standalone_mode=False, where click turns Exit into
    # a return value that main() drops, and a lost lease must be a non-zero exit for supervisors.
    sys.exit(code)
