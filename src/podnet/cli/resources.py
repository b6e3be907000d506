"""kubectl-like commands: apply, get, describe, delete.

Output follows kubectl's so that people read it without learning anything new: `service/x created`,
the same table columns, `describe service`'s block. The write path (defaulting, allocation, derived
EndpointSlices, one commit) is controllers/apply.py; this module only reads arguments and prints.

The resource models (podnet.api, pydantic) are imported by the commands that use them, not here:
every `podnet` command loads this module, and the daemons (`podnet proxy run` restarted after a crash)
must not pay a third of a second building models they never read.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

import typer

from podnet.cli.context import CliState
from podnet.errors import NotFound, PodnetError, Problem, ValidationError
from podnet.store import Store, StoreError, StoreUnavailable, keys

if TYPE_CHECKING:
    from podnet.api.deployment import Deployment
    from podnet.api.endpointslice import EndpointSlice
    from podnet.api.meta import Resource
    from podnet.api.node import Node
    from podnet.api.pod import Pod
    from podnet.api.service import Service
    from podnet.api.statefulset import StatefulSet
    from podnet.controllers.allocators import AllocatorConfig

# kubectl's resource names, short names and singulars
_ALIASES = {
    "services": "Service", "service": "Service", "svc": "Service",
    "pods": "Pod", "pod": "Pod", "po": "Pod",
    "nodes": "Node", "node": "Node", "no": "Node",
    "endpointslices": "EndpointSlice", "endpointslice": "EndpointSlice",
    "deployments": "Deployment", "deployment": "Deployment", "deploy": "Deployment",
    "statefulsets": "StatefulSet", "statefulset": "StatefulSet", "sts": "StatefulSet",
}


def _kind(name: str) -> str:
    kind = _ALIASES.get(name.lower()) or _ALIASES.get(name.lower().split(".")[0])
    if kind is None:
        raise PodnetError(f'the server doesn\'t have a resource type "{name}" '
                          f"(podnet knows: {', '.join(sorted(keys.KIND_PLURAL.values()))})")
    return kind


def _store(ctx: typer.Context, *, create: bool = True) -> Store:
    state: CliState = ctx.obj if isinstance(ctx.obj, CliState) else CliState()
    try:
        return state.store(create=create)
    except StoreUnavailable:
        raise
    except StoreError as e:  # a malformed --store URL is a usage error, not an unreachable store
        raise PodnetError(str(e)) from None


def _config(service_cidr: str | None, node_port_range: str | None) -> AllocatorConfig:
    from podnet.controllers.allocators import AllocatorConfig

    try:
        return AllocatorConfig.from_env(service_cidr, node_port_range)
    except ValueError as e:
        raise ValidationError([Problem(field="--node-port-range", value=None, reason=str(e))]) from None


def _read(store: Store, kind: str, namespace: str | None) -> list[Resource]:
    """Objects of a kind (one namespace, or all when None), with resourceVersion as kubectl shows it."""
    from podnet.api.loader import from_json

    out: list[Resource] = []
    for kv in store.list(keys.kind_prefix(kind, namespace)).items:
        try:
            obj = from_json(kv.value)
        except PodnetError as e:
            print(f"warning: {kv.key}: not a valid object, skipped: {e}", file=sys.stderr)
            continue
        obj.metadata.resource_version = str(kv.mod_revision)
        out.append(obj)
    return sorted(out, key=lambda o: (o.namespace or "", o.name))


# ---- apply / delete -----------------------------------------------------------------------------------


def _load(files: Sequence[str], namespace: str | None) -> list[Resource]:
    from podnet.api.loader import load_paths

    loaded = load_paths(files)
    for w in loaded.warnings:
        print(f"Warning: {w}", file=sys.stderr)
    problems = list(loaded.problems)
    if namespace:
        for obj in loaded.objects:
            if not obj.NAMESPACED:
                continue
            if "namespace" in obj.metadata.model_fields_set and obj.metadata.namespace != namespace:
                problems.append(Problem(
                    field="metadata.namespace", value=obj.metadata.namespace, obj=obj.ref,
                    reason=f"does not match the namespace {namespace!r} given with -n"))
            else:
                obj.metadata.namespace = namespace
    if problems:
        raise ValidationError(problems)
    return loaded.objects


def apply(
    ctx: typer.Context,
    filename: list[str] = typer.Option(..., "-f", "--filename", help="File, directory or - (stdin); repeatable"),
    namespace: str = typer.Option(None, "-n", "--namespace", help="Namespace for objects that name none"),
    service_cidr: str = typer.Option(None, "--service-cidr", envvar="PODNET_SERVICE_CIDR",
                                     help="ClusterIP range [default: 10.96.0.0/12]"),
    node_port_range: str = typer.Option(None, "--node-port-range", envvar="PODNET_NODE_PORT_RANGE",
                                        help="NodePort range FIRST-LAST [default: 30000-32767]"),
) -> None:
    """Create or update objects from files (validated first; written all at once or not at all)."""
    from podnet.controllers.apply import apply_objects

    config = _config(service_cidr, node_port_range)
    objs = _load(filename, namespace)
    if not objs:
        raise PodnetError("no objects passed to apply")
    for result in apply_objects(_store(ctx), objs, config):
        typer.echo(str(result))


def delete(
    ctx: typer.Context,
    args: list[str] = typer.Argument(None, help="KIND NAME [NAME...]"),
    filename: list[str] = typer.Option(None, "-f", "--filename", help="Delete the objects in these files"),
    namespace: str = typer.Option(None, "-n", "--namespace"),
    selector: str = typer.Option(None, "-l", "--selector", help="Delete the KIND objects with these labels"),
    ignore_not_found: bool = typer.Option(False, "--ignore-not-found"),
) -> None:
    """Delete objects named in files, or KIND NAME..., or KIND -l SELECTOR; frees ClusterIPs and NodePorts.

    With -f, as kubectl: each document is found by kind, namespace and name alone (the rest is not
    validated), and a document naming nothing podnet knows is reported and skipped: the others are still
    deleted, and the command exits 1.
    """
    from podnet.api.loader import KINDS
    from podnet.api.selectors import parse_selector
    from podnet.controllers.apply import delete_objects

    refs: list[tuple[str, str | None, str]] = []
    skipped: list[Problem] = []
    store: Store | None = None
    if filename:
        if args or selector:
            raise PodnetError("give either -f FILE or KIND NAME / KIND -l SELECTOR, not both")
        refs, skipped = _refs(filename, namespace)
        if not refs and not skipped:
            raise PodnetError("no objects passed to delete")
    elif args and selector and len(args) == 1:
        kind = _kind(args[0])
        match = parse_selector(selector)
        ns = namespace or "default" if KINDS[kind].NAMESPACED else None
        store = _store(ctx)
        refs = [(kind, o.namespace, o.name) for o in _read(store, kind, ns) if match(o.metadata.labels)]
        if not refs:
            print("No resources found", file=sys.stderr)
            return
    else:
        if not args or len(args) < 2 or selector:
            raise PodnetError("usage: podnet delete -f FILE | KIND NAME [NAME...] | KIND -l SELECTOR")
        kind = _kind(args[0])
        refs = [(kind, namespace or "default", n) for n in args[1:]]
    if refs:
        for r in delete_objects(store or _store(ctx), refs, ignore_not_found=ignore_not_found):
            typer.echo(f'{r.obj.KIND.lower()} "{r.obj.name}" deleted')
    if skipped:
        raise ValidationError(skipped)


def _refs(files: Sequence[str], namespace: str | None) -> tuple[list[tuple[str, str | None, str]], list[Problem]]:
    """(kind, namespace, name) of what the files name, -n applied as apply does; and what was skipped."""
    from podnet.api.loader import KINDS, load_refs

    found, skipped = load_refs(files)
    refs: list[tuple[str, str | None, str]] = []
    for r in found:
        if not KINDS[r.kind].NAMESPACED:
            refs.append((r.kind, None, r.name))
        elif namespace and r.namespace and r.namespace != namespace:
            skipped.append(Problem(field="metadata.namespace", value=r.namespace, obj=f"{r.kind}/{r.namespace}/{r.name}",
                                   reason=f"does not match the namespace {namespace!r} given with -n"))
        else:
            refs.append((r.kind, r.namespace or namespace or "default", r.name))
    unique = list(dict.fromkeys(refs))  # the same object in two files is deleted once
    return unique, [Problem(p.field, p.value, f"{p.reason}; not deleted", p.obj) for p in skipped]


# ---- get ----------------------------------------------------------------------------------------------


def age(obj: Resource, now: datetime | None = None) -> str:
    """kubectl's HumanDuration of the object's age."""
    ts = obj.metadata.creation_timestamp
    if not ts:
        return "<unknown>"
    try:
        created = datetime.strptime(ts, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return "<unknown>"
    s = int(((now or datetime.now(UTC)) - created).total_seconds())
    if s < 0:
        return "<invalid>"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = m // 60
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if d < 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    return f"{d // 365}y"


def _selector(sel: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((sel or {}).items())) or "<none>"


def _service_row(svc: Service, wide: bool) -> list[str]:
    s = svc.spec
    if s.type == "LoadBalancer":
        external = ",".join(svc.load_balancer_ips + s.external_ips) or "<pending>"
    else:
        external = ",".join(s.external_ips) or "<none>"
    ports = ",".join(
        f"{p.port}:{p.node_port}/{p.protocol}" if p.node_port else f"{p.port}/{p.protocol}" for p in s.ports
    ) or "<none>"
    row = [svc.name, s.type, s.cluster_ip or "<none>", external, ports, age(svc)]
    return row + [_selector(s.selector)] if wide else row


def _pod_row(pod: Pod, wide: bool) -> list[str]:
    n = len(pod.spec.containers)
    ready = f"{n if pod.is_ready else 0}/{n}"
    status = "Terminating" if pod.metadata.deletion_timestamp else (pod.status.phase or "Pending")
    row = [pod.name, ready, status, "0", age(pod)]
    if wide:
        row += [pod.status.pod_ip or "<none>", pod.spec.node_name or "<none>", "<none>", "<none>"]
    return row


def _node_row(node: Node, wide: bool) -> list[str]:
    # kubectl's printNode: Ready True -> Ready; any other Ready status (False, Unknown) -> NotReady
    status = {None: "Unknown", "True": "Ready"}.get(node.ready, "NotReady")
    if node.spec.unschedulable:
        status += ",SchedulingDisabled"
    roles = ",".join(sorted(k.split("/", 1)[1] for k in node.metadata.labels
                            if k.startswith("node-role.kubernetes.io/"))) or "<none>"
    version = node.status.node_info.kubelet_version if node.status.node_info else ""
    row = [node.name, status, roles, age(node), version or "<none>"]
    if wide:
        row += [node.address("InternalIP") or "<none>", node.address("ExternalIP") or "<none>",
                node.spec.pod_cidr or "<none>"]
    return row


def _slice_row(es: EndpointSlice, wide: bool) -> list[str]:
    ports = ",".join(str(p.port) for p in es.ports if p.port is not None) or "<unset>"
    addrs = [a for e in es.endpoints for a in e.addresses]
    eps = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "") if addrs else "<none>"
    return [es.name, es.address_type, ports, eps, age(es)]


def _deployment_row(d: Deployment, wide: bool, pods: list[Pod]) -> list[str]:
    sel = d.spec.selector.match_labels
    mine = [p for p in pods if p.namespace == d.namespace and sel and all(p.metadata.labels.get(k) == v
                                                                        for k, v in sel.items())]
    ready = sum(1 for p in mine if p.is_ready)
    row = [d.name, f"{ready}/{d.replicas}", str(len(mine)), str(ready), age(d)]
    if wide:
        row += [",".join(c.name for c in d.spec.template.spec.containers), "<none>", _selector(sel)]
    return row


def _statefulset_row(sts: StatefulSet, wide: bool) -> list[str]:
    row = [sts.name, f"{sts.status.ready_replicas or 0}/{sts.replicas}", age(sts)]
    if wide:
        containers = sts.spec.template.spec.containers
        row += [",".join(c.name for c in containers), ",".join(c.image or "" for c in containers) or "<none>"]
    return row


_HEADERS = {
    "Service": (["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP", "PORT(S)", "AGE"], ["SELECTOR"]),
    "Pod": (["NAME", "READY", "STATUS", "RESTARTS", "AGE"], ["IP", "NODE", "NOMINATED NODE", "READINESS GATES"]),
    "Node": (["NAME", "STATUS", "ROLES", "AGE", "VERSION"], ["INTERNAL-IP", "EXTERNAL-IP", "POD-CIDR"]),
    "EndpointSlice": (["NAME", "ADDRESSTYPE", "PORTS", "ENDPOINTS", "AGE"], []),
    "Deployment": (["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"], ["CONTAINERS", "IMAGES", "SELECTOR"]),
    "StatefulSet": (["NAME", "READY", "AGE"], ["CONTAINERS", "IMAGES"]),
}


def format_table(rows: list[list[str]]) -> str:
    """Columns padded like kubectl's tabwriter (3 spaces between columns, no trailing blanks)."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("   ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows) + "\n"


def get(
    ctx: typer.Context,
    resource: str = typer.Argument(..., help="services | pods | nodes | endpointslices | deployments | statefulsets"),
    names: list[str] = typer.Argument(None, help="Only these objects"),
    namespace: str = typer.Option(None, "-n", "--namespace"),
    all_namespaces: bool = typer.Option(False, "-A", "--all-namespaces"),
    output: str = typer.Option(None, "-o", "--output", help="wide | yaml | json | name"),
    selector: str = typer.Option(None, "-l", "--selector", help="Label selector, e.g. app=web,tier!=db"),
) -> None:
    """List objects as kubectl get does."""
    from podnet.api import EndpointSlice, Node, Pod, Service
    from podnet.api.deployment import Deployment
    from podnet.api.loader import KINDS, dump_json, dump_yaml
    from podnet.api.selectors import parse_selector
    from podnet.api.statefulset import StatefulSet

    if output not in (None, "wide", "yaml", "json", "name"):
        raise PodnetError(f"-o {output}: unknown output format (use wide, yaml, json or name)")
    kind = _kind(resource)
    cls = KINDS[kind]
    ns = None if (all_namespaces or not cls.NAMESPACED) else (namespace or "default")
    store = _store(ctx, create=False)
    objs = _read(store, kind, ns)
    if selector:
        match = parse_selector(selector)
        objs = [o for o in objs if match(o.metadata.labels)]
    if names:
        by_name = {o.name: o for o in objs}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise NotFound("\n".join(f'{keys.KIND_PLURAL[kind]} "{n}" not found' for n in missing))
        objs = [by_name[n] for n in names]
    if output == "yaml":
        typer.echo(dump_yaml(objs[0] if names and len(objs) == 1 else objs), nl=False)
        return
    if output == "json":
        typer.echo(dump_json(objs[0] if names and len(objs) == 1 else objs), nl=False)
        return
    if output == "name":
        for o in objs:
            typer.echo(o.kubectl_name)
        return
    if not objs:
        where = " in " + ns + " namespace" if ns else ""
        print(f"No resources found{where}.", file=sys.stderr)
        return
    wide = output == "wide"
    pods = [p for p in _read(store, "Pod", None) if isinstance(p, Pod)] if kind == "Deployment" else []
    base, extra = _HEADERS[kind]
    header = base + (extra if wide else [])
    show_ns = all_namespaces and cls.NAMESPACED
    rows = [(["NAMESPACE"] if show_ns else []) + header]
    for o in objs:
        if isinstance(o, Service):
            row = _service_row(o, wide)
        elif isinstance(o, Pod):
            row = _pod_row(o, wide)
        elif isinstance(o, Node):
            row = _node_row(o, wide)
        elif isinstance(o, EndpointSlice):
            row = _slice_row(o, wide)
        elif isinstance(o, StatefulSet):
            row = _statefulset_row(o, wide)
        elif isinstance(o, Deployment):
            row = _deployment_row(o, wide, pods)
        else:  # _HEADERS covers every kind a listing reaches; this is an object stored under another's prefix
            raise PodnetError(f"{o.kind} {o.name}: not a {kind}, cannot show it as one")
        rows.append(([o.namespace or ""] if show_ns else []) + row)
    typer.echo(format_table(rows), nl=False)


# ---- describe -----------------------------------------------------------------------------------------


def _endpoints(slices: list[EndpointSlice], port_name: str) -> str:
    """kubectl's formatEndpointSlices: ready `ip:port`, at most 3, then `+ N more...`."""
    from podnet.controllers.endpoints import ready_addresses

    found = ready_addresses(slices, port_name)
    if not found:
        return "<none>"
    text = ",".join(found[:3])
    return text + (f" + {len(found) - 3} more..." if len(found) > 3 else "")


def _multiline(label: str, items: dict[str, str], sep: str = "=") -> list[list[str]]:
    """Labels as `k=v`, annotations as `k: v`, one per line, sorted (kubectl's print*Multiline)."""
    items = {k: v for k, v in items.items() if k != "kubectl.kubernetes.io/last-applied-configuration"}
    if not items:
        return [[f"{label}:", "<none>"]]
    lines = [f"{k}{sep}{v}" for k, v in sorted(items.items())]
    return [[f"{label}:", lines[0]]] + [["", line] for line in lines[1:]]


def describe_service_lines(svc: Service, slices: list[EndpointSlice]) -> str:
    """The block `kubectl describe service` prints, from the service and its EndpointSlices."""
    s = svc.spec
    rows: list[list[str]] = [["Name:", svc.name], ["Namespace:", svc.namespace or ""]]
    rows += _multiline("Labels", svc.metadata.labels)
    rows += _multiline("Annotations", svc.metadata.annotations, ": ")
    rows += [["Selector:", _selector(s.selector)], ["Type:", s.type]]
    if s.ip_family_policy:
        rows.append(["IP Family Policy:", s.ip_family_policy])
    rows.append(["IP Families:", ",".join(s.ip_families) or "<none>"])
    rows.append(["IP:", s.cluster_ip or ""])
    rows.append(["IPs:", ",".join(svc.cluster_ips) or ("None" if svc.is_headless else "<none>")])
    if s.external_ips:
        rows.append(["External IPs:", ",".join(s.external_ips)])
    if s.load_balancer_ip:
        rows.append(["Desired LoadBalancer IP:", s.load_balancer_ip])
    if svc.load_balancer_ips:
        rows.append(["LoadBalancer Ingress:", ", ".join(svc.load_balancer_ips)])
    for p in s.ports:
        name = p.name or "<unset>"
        rows.append(["Port:", name, f"{p.port}/{p.protocol}"])
        rows.append(["TargetPort:", f"{p.effective_target_port}/{p.protocol}"])
        if p.node_port:
            rows.append(["NodePort:", name, f"{p.node_port}/{p.protocol}"])
        rows.append(["Endpoints:", _endpoints(slices, p.name)])
    rows.append(["Session Affinity:", s.session_affinity])
    timeout = svc.session_affinity_timeout
    if timeout is not None:
        rows.append(["Session Affinity Timeout:", f"{timeout}s"])
    if s.external_traffic_policy:
        rows.append(["External Traffic Policy:", s.external_traffic_policy])
    if s.internal_traffic_policy:
        rows.append(["Internal Traffic Policy:", s.internal_traffic_policy])
    if s.health_check_node_port:
        rows.append(["HealthCheck NodePort:", str(s.health_check_node_port)])
    if s.load_balancer_source_ranges:
        rows.append(["LoadBalancer Source Ranges:", ",".join(s.load_balancer_source_ranges)])
    rows.append(["Events:", "<none>"])
    return _tabwrite(rows)


def _tabwrite(rows: list[list[str]]) -> str:
    """Go's tabwriter (padding 2) for key/value rows: the first column is aligned over the whole block;
    a middle cell (a port's name) only over the consecutive rows that have one."""
    width0 = max(len(r[0]) for r in rows) + 2
    out = []
    i = 0
    while i < len(rows):
        j = i
        while j < len(rows) and len(rows[j]) == 3:
            j += 1
        if j > i:  # a run of three-cell rows
            width1 = max(len(r[1]) for r in rows[i:j]) + 2
            out += [(r[0].ljust(width0) + r[1].ljust(width1) + r[2]).rstrip() for r in rows[i:j]]
            i = j
            continue
        out.append((rows[i][0].ljust(width0) + rows[i][1]).rstrip())
        i += 1
    return "\n".join(out) + "\n"


def describe(
    ctx: typer.Context,
    resource: str = typer.Argument(..., help="service"),
    names: list[str] = typer.Argument(None, help="Service names (all in the namespace if none)"),
    namespace: str = typer.Option(None, "-n", "--namespace"),
) -> None:
    """Show a service as kubectl describe does, with the endpoints its EndpointSlices hold."""
    from podnet.api import EndpointSlice, Service
    from podnet.api.endpointslice import SERVICE_NAME_LABEL

    kind = _kind(resource)
    if kind != "Service":
        raise PodnetError(f"describe {resource}: podnet describes services only")
    ns = namespace or "default"
    store = _store(ctx, create=False)
    services = {s.name: s for s in _read(store, "Service", ns)}
    if names:
        missing = [n for n in names if n not in services]
        if missing:
            raise NotFound("\n".join(f'services "{n}" not found' for n in missing))
        chosen = [services[n] for n in names]
    else:
        chosen = list(services.values())
    slices = [es for es in _read(store, "EndpointSlice", ns) if isinstance(es, EndpointSlice)]
    blocks = []
    for svc in chosen:
        assert isinstance(svc, Service)
        mine = [es for es in slices if es.metadata.labels.get(SERVICE_NAME_LABEL) == svc.name]
        blocks.append(describe_service_lines(svc, mine))
    if not blocks:
        print(f"No resources found in {ns} namespace.", file=sys.stderr)
    typer.echo("\n\n".join(b.rstrip("\n") for b in blocks) + ("\n" if blocks else ""), nl=False)


def repair(ctx: typer.Context) -> None:
    """Free ClusterIPs/NodePorts no Service holds, record those held without a record, delete orphaned
    EndpointSlices (kube-apiserver's repair controllers). Safe to run at any time and repeatedly."""
    from podnet.controllers.repair import repair_allocations

    report = repair_allocations(_store(ctx))
    for line in report.lines():
        typer.echo(line)
    if not report.lines():
        typer.echo("nothing to repair")


def register(app: typer.Typer) -> None:
    app.command("apply")(apply)
    app.command("get")(get)
    app.command("describe")(describe)
    app.command("delete")(delete)
    app.command("repair")(repair)


__all__ = ["age", "describe_service_lines", "format_table", "register"]

