"""`podnet dns run`: the cluster DNS server (CoreDNS with the kubernetes plugin, as kubeadm configures it)."""

from __future__ import annotations

import ipaddress

import typer

from podnet.errors import Problem, ValidationError

app = typer.Typer(help="Cluster DNS: names for Services and pods (CoreDNS's kubernetes plugin).",
                  no_args_is_help=True)


@app.command("run")
def run_command(
    ctx: typer.Context,
    listen: str = typer.Option("0.0.0.0:53", "--listen", help="HOST:PORT for UDP and TCP ([::]:53 for IPv6)."),
    zone: list[str] = typer.Option(["cluster.local"], "--zone", help="Cluster domain(s); the first is primary."),
    reverse: bool = typer.Option(True, "--reverse/--no-reverse",
                                 help="Also answer in-addr.arpa and ip6.arpa (PTR for ClusterIPs and endpoints)."),
    fallthrough: list[str] = typer.Option(
        ["in-addr.arpa", "ip6.arpa"], "--fallthrough",
        help="Zones whose misses go down the plugin chain (SERVFAIL here: there is no upstream), as kubeadm's "
             "Corefile; give --fallthrough none for NXDOMAIN everywhere."),
    pods: str = typer.Option("insecure", "--pods", help="<ip-dashed>.<ns>.pod.<zone>: insecure, verified or disabled."),
    ttl: int = typer.Option(5, "--ttl", help="TTL of the answers, 0-3600 (the plugin's default is 5)."),
    endpoint_pod_names: bool = typer.Option(False, "--endpoint-pod-names",
                                            help="Name endpoints without a hostname by their pod's name."),
    publish: str | None = typer.Option(None, "--publish", help="NAMESPACE/SERVICE: list this server in the "
                                       "Service's EndpointSlices while it serves (with --node and --advertise)."),
    node: str | None = typer.Option(None, "--node", help="The node this server runs on (for --publish)."),
    advertise: str | None = typer.Option(None, "--advertise", help="The address clients reach this server at "
                                         "(the endpoint for --publish; NS records answer with it)."),
    health: str = typer.Option("", "--health-listen", help="HOST:PORT for /health and /ready ('' disables)."),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Serve the cluster's DNS records from the store: A/AAAA, SRV, PTR, CNAME, as CoreDNS answers them."""
    import logging
    import signal
    import threading

    from podnet.api.validation import dns1123_subdomain
    from podnet.dns.answer import POD_MODES, Config
    from podnet.dns.daemon import Options, Publish, run
    from podnet.dns.server import ListenError, parse_listen

    logging.basicConfig(level=getattr(logging, log_level.upper(), logging.INFO),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    problems: list[Problem] = []
    host, port = "", 0
    try:
        host, port = parse_listen(listen)
    except ListenError as e:
        problems.append(Problem("--listen", listen, str(e).split(": ", 1)[-1]))
    zones = [z.strip().rstrip(".").lower() for z in zone]
    for z in zones:
        if reason := dns1123_subdomain(z):
            problems.append(Problem("--zone", z, reason))
    if pods not in POD_MODES:
        problems.append(Problem("--pods", pods, f"must be one of {', '.join(POD_MODES)}"))
    if not 0 <= ttl <= 3600:
        problems.append(Problem("--ttl", ttl, "must be between 0 and 3600"))
    falls = [] if [f.lower() for f in fallthrough] == ["none"] else [f.strip().rstrip(".").lower() for f in fallthrough]
    for f in falls:
        if reason := dns1123_subdomain(f):
            problems.append(Problem("--fallthrough", f, reason))
    if advertise is not None:
        try:
            ipaddress.ip_address(advertise)
        except ValueError:
            problems.append(Problem("--advertise", advertise, "must be an IP address"))
    pub = None
    if publish is not None:
        ns, sep, svc = publish.partition("/")
        if not sep or not ns or not svc:
            problems.append(Problem("--publish", publish, "must be NAMESPACE/SERVICE"))
        if not node:
            problems.append(Problem("--node", node, "is required with --publish"))
        if not advertise:
            problems.append(Problem("--advertise", advertise, "is required with --publish"))
        pub = Publish(ns, svc, node or "", advertise or "")
    health_addr = None
    if health:
        try:
            health_addr = parse_listen(health)
        except ListenError as e:
            problems.append(Problem("--health-listen", health, str(e).split(": ", 1)[-1]))
    if problems:
        raise ValidationError(problems)
    all_zones = [*zones, *(["in-addr.arpa", "ip6.arpa"] if reverse else [])]
    local = (advertise,) if advertise else ((host,) if host not in ("0.0.0.0", "::") else ())
    config = Config(zones=tuple(all_zones), ttl=ttl, pods=pods, fallthrough=tuple(falls), local_ips=local,
                    endpoint_pod_names=endpoint_pod_names)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    run(ctx.obj.store(), Options(host, port, config, pub, health_addr), stop)
