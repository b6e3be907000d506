"""`podnet proxy ...` commands.

`render` (below) is pure: objects + kube-proxy config + host facts -> restore input on stdout.
`run` (the daemon) lives in its own section further down.
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import typer
import yaml

from podnet.cli import source as source_opts
from podnet.errors import Problem, ValidationError

app = typer.Typer(help="proxy commands", no_args_is_help=True)


# =============================================================================================
# podnet proxy render
# =============================================================================================


def _read_all(paths: list[Path]) -> tuple[list[Any], dict[str, Any] | None]:
    """Objects of every -f (as `kubectl apply -f A -f B`), with the slices derived from all their Pods
    (a Service in one file, its Pods in another). A kube-proxy golden case carries its own settings
    (`proxier:`), so it must be the only -f."""
    objs: list[Any] = []
    problems: list[Problem] = []
    for path in paths:
        try:
            found, proxier_block, golden = _read_objects(path)
        except ValidationError as e:
            problems.extend(e.problems)
            continue
        if golden:
            if len(paths) > 1:
                problems.append(Problem("-f", str(path), "a kube-proxy golden case must be the only -f"))
                continue
            return found, proxier_block
        objs += found
    if problems:
        raise ValidationError(problems)
    return _with_derived_slices(objs), None


def _read_objects(path: Path) -> tuple[list[Any], dict[str, Any] | None, bool]:
    """Objects of OBJECTS.yaml and, for kube-proxy golden cases (the bool), their `proxier:` block.

    Accepted: what `kubectl apply -f` takes (multi-document YAML/JSON, `kind: List`, a directory),
    and the golden-case format of shared/reference/kube-proxy-golden (`stateAfterEvent` with
    services/endpointSlices/nodes and an optional `proxier:` block of resolved settings).
    Objects are checked for shape only: kube-proxy's own test inputs (nodePort 3001, ...) would not
    pass the API server's rules, yet they are exactly what this command must reproduce.
    """
    from podnet.api import load

    raw: bytes | None = None
    if str(path) == "-":  # as `kubectl apply -f -`
        import sys

        raw = sys.stdin.buffer.read()
    if raw is not None or path.is_file():
        try:
            if raw is None:
                raw = path.read_bytes()
            # Only a golden case is read here; everything else is parsed once, by the loader below.
            golden = b"stateAfterEvent" in raw or b"proxier" in raw
            docs = list(yaml.load_all(raw, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))) if golden else []
        except (OSError, yaml.YAMLError, UnicodeDecodeError):
            docs = []  # the loader below reports it with line and column
        if len(docs) == 1 and isinstance(docs[0], dict) and (
            "stateAfterEvent" in docs[0] or ("proxier" in docs[0] and "services" in docs[0])
        ):
            state = docs[0].get("stateAfterEvent", docs[0]) or {}
            if not isinstance(state, dict):
                raise ValidationError([Problem("stateAfterEvent", None, "must be a mapping", str(path))])
            objs = [*(state.get("services") or []), *(state.get("endpointSlices") or []), *(state.get("nodes") or [])]
            return objs, _proxier_block(docs[0].get("proxier"), path), True
    if raw is None:  # a directory, or a file that could not be read: the loader says why
        return load(path, check=False).raise_for_problems(), None, False
    # The bytes read above, not the file again; problems name the file as the loader would.
    return load(raw, check=False, name="<input>" if str(path) == "-" else str(path)).raise_for_problems(), None, False


def _with_derived_slices(objects: list[Any]) -> list[Any]:
    """Add the EndpointSlices the controller would keep for selector Services, when Pods are given.

    kube-proxy only reads EndpointSlices; in podnet (as in Kubernetes) those of a Service with a
    selector are derived from its Pods, so a file of Services and Pods renders like the cluster would.
    """
    from podnet.api import Pod, Service
    from podnet.controllers.endpoints import endpoint_slices_for

    pods = [o for o in objects if isinstance(o, Pod)]
    if not pods:
        return objects
    derived = [sl for o in objects if isinstance(o, Service) for sl in endpoint_slices_for(o, pods)]
    return [*objects, *derived]


def _warn_unallocated(objects: list[Any]) -> None:
    """Say on stderr which Services get no rules because they have no ClusterIP yet.

    kube-proxy skips them silently (the API server allocates before they exist); a file written by
    hand usually lacks the field because `podnet apply` is what allocates it. Headless Services
    (clusterIP: None) and ExternalName ones have no rules by design and are not mentioned.
    """
    from podnet.api import Service

    for o in objects:
        if isinstance(o, Service) and o.spec.type != "ExternalName" and not o.is_headless and not o.cluster_ips:
            typer.echo(f"warning: Service/{o.metadata.namespace or 'default'}/{o.metadata.name}: spec.clusterIP is "
                       "not set, so it gets no rules (`podnet apply` allocates one; kube-proxy sees none before)",
                       err=True)


def _proxier_block(block: Any, path: Path) -> dict[str, Any] | None:
    """The `proxier:` block; `$ref: FILE` (relative to the case) supplies defaults it overrides."""
    if block is None:
        return None
    if not isinstance(block, dict):
        raise ValidationError([Problem("proxier", None, "must be a mapping", str(path))])
    block = dict(block)
    ref = block.pop("$ref", None)
    if ref:
        try:
            base = yaml.safe_load((path.parent / ref).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise ValidationError([Problem("proxier.$ref", ref, f"cannot be read: {e}", str(path))]) from None
        if not isinstance(base, dict):
            raise ValidationError([Problem("proxier.$ref", ref, "must hold a mapping", str(path))])
        block = {**base, **block}
    return block


def render_command(
    mode: str = typer.Option("iptables", "--mode", help="Proxy mode whose rules to print: iptables or nftables."),
    layout: str = typer.Option(
        "podnet", "--layout",
        help="nftables only: podnet (the table `podnet run --mode nftables` loads) or kube-proxy (kube-proxy's own "
        "`ip kube-proxy` table for the same inputs, to compare when migrating).",
    ),
    objects: list[Path] = typer.Option(
        ..., "-f", "--filename",
        help="Services, EndpointSlices, Nodes (Pods give selector Services their endpoints); repeatable, a file, "
        "a directory or - (stdin). Or one kube-proxy golden case (stateAfterEvent + proxier block, as in "
        "shared/reference/kube-proxy-golden).",
    ),
    config: Path | None = typer.Option(
        None, "--config", help="kube-proxy's KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1)."
    ),
    host_facts: Path | None = typer.Option(
        None, "--host-facts", help="YAML with nodeName, nodeIPs, nfacct, randomFully (what a live host would show)."
    ),
    ip_family: str | None = typer.Option(
        None, "--ip-family", help="IPv4 or IPv6 (default: the family of the first node IP, else IPv4)."
    ),
    previous: list[Path] = typer.Option(
        [], "--previous",
        help="iptables only: the objects of the last successful sync (repeatable, as -f). Prints the partial "
        "sync kube-proxy writes going from them to -f's objects: every top-level chain, but the per-service "
        "chains of changed Services only, and the chains of removed ones deleted.",
    ),
) -> None:
    """Print the rules of a full sync for these objects (or, with --previous, of kube-proxy's partial sync).

    iptables: the iptables-restore input, as kube-proxy v1.33 writes it. nftables: the `nft -f` script of
    podnet's table (or, with --layout kube-proxy, kube-proxy's own nftables table).
    """
    from podnet.api.loader import paused_gc

    # Loading, decoding and rendering 10k Services build millions of objects without a cycle among them.
    with paused_gc():
        _render(mode, layout, objects, config, host_facts, ip_family, previous)


def _render(
    mode: str, layout: str, objects: list[Path], config: Path | None, host_facts: Path | None,
    ip_family: str | None, previous: list[Path],
) -> None:
    from podnet.api.defaults import IPV4, IPV6
    from podnet.api.ipaddr import parse_ip
    from podnet.proxy.config import HostFacts, KubeProxyConfiguration, load_host_facts, load_proxy_config
    from podnet.proxy.iptables.render import render
    from podnet.proxy.settings import effective_node_name, resolve_settings, settings_from_proxier_block
    from podnet.proxy.tracker import desired_state_from_objects

    problems: list[Problem] = []
    if mode not in ("iptables", "nftables"):
        problems.append(Problem("--mode", mode, "must be iptables or nftables"))
    if layout not in ("podnet", "kube-proxy"):
        problems.append(Problem("--layout", layout, "must be podnet or kube-proxy"))
    if ip_family not in (None, IPV4, IPV6):
        problems.append(Problem("--ip-family", ip_family, "must be IPv4 or IPv6"))
    cfg: KubeProxyConfiguration | None = None
    facts: HostFacts | None = None
    if config is not None:
        try:
            cfg = load_proxy_config(config)
        except ValidationError as e:
            problems.extend(e.problems)
    if host_facts is not None:
        try:
            facts = load_host_facts(host_facts)
        except ValidationError as e:
            problems.extend(e.problems)
    try:
        objs, proxier_block = _read_all(objects)
    except ValidationError as e:
        problems.extend(e.problems)
        objs, proxier_block = [], None
    if cfg is not None and cfg.mode not in ("", mode) and mode in ("iptables", "nftables"):
        problems.append(Problem("mode", cfg.mode, f"the config selects another proxy mode than --mode {mode}", "KubeProxyConfiguration"))
    before: list[Any] = []
    if previous and mode != "iptables":
        problems.append(Problem("--previous", ", ".join(map(str, previous)), "partial syncs are printed for --mode iptables only"))
    elif previous:
        try:
            before, prev_block = _read_all(previous)
        except ValidationError as e:
            problems.extend(e.problems)
        else:
            if prev_block is not None or proxier_block is not None:
                problems.append(Problem("--previous", ", ".join(map(str, previous)),
                                        "takes API objects, not a kube-proxy golden case"))
    if problems:
        raise ValidationError(problems)
    _warn_unallocated(objs)

    service_cidrs: list[str] = []
    if proxier_block is not None and cfg is None and facts is None:
        settings = settings_from_proxier_block(proxier_block)
        cidrs = proxier_block.get("serviceCIDRs") or []
        service_cidrs = [c.strip() for c in (cidrs.split(",") if isinstance(cidrs, str) else cidrs) if c.strip()]
        family = ip_family or settings.ip_family
        desired = desired_state_from_objects(objs, settings.node_name, ip_family=family)
    else:
        if facts is None:
            facts = HostFacts(node_name=effective_node_name(cfg, socket.gethostname().lower()))
        first_ip = parse_ip(facts.node_ips[0]) if facts.node_ips else None  # HostFacts holds parsed IPs only
        family = ip_family or (IPV6 if first_ip is not None and first_ip.version == 6 else IPV4)
        node_name = effective_node_name(cfg, facts.node_name)
        if mode == "nftables":
            from podnet.proxy.nftables.backend import NftablesBackend

            cfg = NftablesBackend.adjust_config(cfg or load_proxy_config(None))
        desired = desired_state_from_objects(objs, node_name, ip_family=family)
        settings = resolve_settings(cfg, facts, ip_family=family, node_pod_cidrs=desired.node_pod_cidrs)
    if mode == "nftables":
        if layout == "kube-proxy":
            from podnet.proxy.nftables.kubeproxy import render_kp

            text = render_kp(desired, settings, service_cidrs=service_cidrs)
        else:
            from podnet.proxy.nftables.layout import render as render_nft

            text = render_nft(desired, settings, service_cidrs=service_cidrs).text
        typer.echo(text, nl=False)
        return
    if previous:  # the same node and family as the new state: only the objects differ
        last = desired_state_from_objects(before, desired.node_name, ip_family=desired.ip_family)
        typer.echo(render(desired, settings, previous=last, full=False).text, nl=False)
        return
    typer.echo(render(desired, settings, full=True).text, nl=False)


app.command(name="render")(render_command)


# =============================================================================================
# podnet proxy run
# =============================================================================================


def run_command(
    ctx: typer.Context,
    node: str = typer.Option(..., "--node", envvar="NODE_NAME",
                             help="Name of the node this proxy serves (its Node object, local endpoints)."),
    config: Path | None = typer.Option(
        None, "--config", help="kube-proxy's KubeProxyConfiguration (kubeproxy.config.k8s.io/v1alpha1)."
    ),
    mode: str | None = typer.Option(None, "--mode", help="iptables (default) or nftables; overrides the config's mode."),
    source: str | None = source_opts.SourceOpt,
    kubeconfig: str | None = source_opts.KubeconfigOpt,
    master: str | None = source_opts.MasterOpt,
    metrics_bind_address: str | None = typer.Option(
        None, "--metrics-bind-address", help="host:port for /metrics (default 127.0.0.1:10249; '' disables)."
    ),
    healthz_bind_address: str | None = typer.Option(
        None, "--healthz-bind-address", help="host:port for /healthz and /livez (default 0.0.0.0:10256; '' disables)."
    ),
    cluster_cidr: str | None = typer.Option(
        None, "--cluster-cidr",
        help="Pod CIDR(s), comma-separated, one per family (overrides the config's clusterCIDR).",
    ),
    log_level: str = typer.Option("info", "--log-level", help="debug, info, warning or error."),
) -> None:
    """Keep this node's kernel in sync with the cluster's Services and EndpointSlices (kube-proxy's job).

    Objects come from podnet's store, or with --kubeconfig / --master / --source kube from a Kubernetes API
    server, as kube-proxy reads them. Runs where the node's network namespace is (start it with
    `ip netns exec NODE podnet proxy run ...`, or as a hostNetwork DaemonSet pod: deploy/).
    """
    import logging
    import signal

    from podnet.proxy.backend import MODES, make_backend
    from podnet.proxy.config import load_proxy_config
    from podnet.proxy.healthcheck import serve_proxy_health
    from podnet.proxy.hostfacts import detect_node_ips
    from podnet.proxy.iptables.restore import Runner
    from podnet.proxy.metaproxier import MetaProxier, node_families
    from podnet.proxy.metrics import metrics_routes, serve, split_hostport

    logging.basicConfig(
        level=getattr(logging, log_level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    problems: list[Problem] = []
    if not node.strip():
        problems.append(Problem("--node", node, "must not be empty"))
    cfg = None
    try:
        cfg = load_proxy_config(config)
    except ValidationError as e:
        problems.extend(e.problems)
    if cluster_cidr is not None:
        try:
            load_proxy_config({"clusterCIDR": cluster_cidr})  # the config's own check of the value
            cfg = cfg.model_copy(update={"cluster_cidr": cluster_cidr}) if cfg else None
        except ValidationError as e:
            problems.extend(Problem("--cluster-cidr", cluster_cidr, p.reason) for p in e.problems)
    chosen = mode if mode is not None else (cfg.mode if cfg else "")
    if chosen not in ("", *MODES):
        problems.append(Problem("--mode" if mode is not None else "mode", chosen,
                                f"podnet supports {' and '.join(MODES)}"))
    addrs = {}
    for flag, value, default, port in (
        ("--metrics-bind-address", metrics_bind_address, cfg.metrics_bind_address if cfg else "127.0.0.1:10249", 10249),
        ("--healthz-bind-address", healthz_bind_address, cfg.healthz_bind_address if cfg else "0.0.0.0:10256", 10256),
    ):
        text = default if value is None else value
        if not text:
            continue
        try:
            addrs[flag] = split_hostport(text, port)
        except ValueError:
            problems.append(Problem(flag, text, "must be HOST:PORT"))
    if problems or cfg is None:
        raise ValidationError(problems)
    # one backend per family the node has addresses of (the proxy runs in the node's namespace)
    runner = Runner()
    families = node_families(cfg, detect_node_ips())
    backends = {fam: make_backend(chosen, runner.netns, fam) for fam in families}

    # kube-proxy reads the kubeconfig from its config file's clientConnection too; the flag wins.
    if source != "store":
        kubeconfig = kubeconfig or (cfg.client_connection or {}).get("kubeconfig") or None
    # one proxier per family the node has addresses of (kube-proxy's metaproxier), sharing the source
    proxier = MetaProxier(source_opts.open_source(ctx, source, kubeconfig, master), node, cfg, families,
                          backends=backends, runner=runner)
    try:
        if "--metrics-bind-address" in addrs:
            serve(addrs["--metrics-bind-address"], metrics_routes(proxier.metrics))
        if "--healthz-bind-address" in addrs:
            counters = {"/healthz": proxier.metrics.healthz_total, "/livez": proxier.metrics.livez_total}
            serve_proxy_health(addrs["--healthz-bind-address"], proxier.health,
                               on_answer=lambda path, code: counters[path].labels(str(code)).inc())
    except OSError as e:
        raise ValidationError([Problem("bind address", None, str(e))]) from None

    def _stop(signum: int, _frame: object) -> None:
        proxier.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        proxier.run()
    finally:
        proxier.close()


app.command(name="run")(run_command)
