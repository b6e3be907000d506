"""`as=Table` answers: the columns kube-apiserver's printers give each kind (pkg/printers/internalversion),
so `kubectl get` prints what it prints against a real cluster. priority 1 columns are the `-o wide` ones.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

Row = list[Any]
Column = tuple[str, str, int]  # name, type, priority


def human_duration(seconds: float) -> str:
    """apimachinery's duration.HumanDuration: 45s, 5m3s, 47m, 5h2m, 30h, 3d4h, 400d, 3y20d."""
    s = int(seconds)
    if seconds < -1:
        return "<invalid>"
    if s < 0:
        return "0s"
    if s < 120:
        return f"{s}s"
    m = s // 60
    if m < 10:
        return f"{m}m{s % 60}s" if s % 60 else f"{m}m"
    if m < 180:
        return f"{m}m"
    h = s // 3600
    if h < 8:
        return f"{h}h{m % 60}m" if m % 60 else f"{h}h"
    if h < 48:
        return f"{h}h"
    d = h // 24
    if h < 24 * 8:
        return f"{d}d{h % 24}h" if h % 24 else f"{d}d"
    if d < 365 * 2:
        return f"{d}d"
    y = d // 365
    if y < 8:
        return f"{y}y{d % 365}d" if d % 365 else f"{y}y"
    return f"{y}y"


def age(obj: dict[str, Any], field: str = "creationTimestamp", now: datetime | None = None) -> str:
    ts = obj.get("metadata", {}).get(field) if field == "creationTimestamp" else obj.get(field)
    if not ts:
        return "<unknown>"
    t = _timestamp(ts) if isinstance(ts, str) else None
    if t is None:
        return "<unknown>"
    return human_duration(((now or datetime.now(UTC)) - t).total_seconds())


@functools.lru_cache(maxsize=4096)
def _timestamp(ts: str) -> datetime | None:
    """An RFC 3339 UTC timestamp as the API writes them (2026-12-03T05:46:21Z); objects made together share one,
    so the parses are cached."""
    if len(ts) != 20 or not ts.endswith("Z"):
        return None
    try:
        return datetime.fromisoformat(ts[:-1]).replace(tzinfo=UTC)
    except ValueError:
        return None


def _name(o: dict[str, Any]) -> str:
    return str(o.get("metadata", {}).get("name", ""))


def _selector(sel: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((sel or {}).items())) or "<none>"


def _service(o: dict[str, Any]) -> Row:
    spec, status = o.get("spec", {}), o.get("status", {})
    typ = spec.get("type", "ClusterIP")
    ingress = [i.get("ip") or i.get("hostname") for i in status.get("loadBalancer", {}).get("ingress", [])]
    external = [*(x for x in ingress if x), *spec.get("externalIPs", [])]
    if typ == "ExternalName":
        ext = spec.get("externalName", "<none>")
    elif external:
        ext = ",".join(external)
    else:
        ext = "<pending>" if typ == "LoadBalancer" else "<none>"
    ports = []
    for p in spec.get("ports", []):
        proto = p.get("protocol", "TCP")
        ports.append(f"{p.get('port')}:{p['nodePort']}/{proto}" if p.get("nodePort") else f"{p.get('port')}/{proto}")
    return [_name(o), typ, spec.get("clusterIP") or "<none>", ext, ",".join(ports) or "<none>", age(o),
            _selector(spec.get("selector"))]


def _pod(o: dict[str, Any]) -> Row:
    spec, status = o.get("spec", {}), o.get("status", {})
    containers = spec.get("containers", [])
    statuses = status.get("containerStatuses", [])
    phase = status.get("phase") or "Pending"
    ready_cond = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", []))
    ready = sum(1 for s in statuses if s.get("ready")) if statuses else (len(containers) if ready_cond else 0)
    restarts = sum(int(s.get("restartCount", 0)) for s in statuses)
    reason = status.get("reason") or phase
    if o.get("metadata", {}).get("deletionTimestamp"):
        reason = "Terminating"
    return [_name(o), f"{ready}/{len(containers)}", reason, str(restarts), age(o), status.get("podIP") or "<none>",
            spec.get("nodeName") or "<none>", status.get("nominatedNodeName") or "<none>", "<none>"]


def _node(o: dict[str, Any]) -> Row:
    status, meta = o.get("status", {}), o.get("metadata", {})
    conds = {c.get("type"): c.get("status") for c in status.get("conditions", [])}
    state = "Ready" if conds.get("Ready") == "True" else ("NotReady" if "Ready" in conds else "Unknown")
    if o.get("spec", {}).get("unschedulable"):
        state += ",SchedulingDisabled"
    roles = sorted(k.split("/", 1)[1] for k in meta.get("labels", {})
                   if k.startswith("node-role.kubernetes.io/") and "/" in k) or ["<none>"]
    addr = {a.get("type"): a.get("address") for a in status.get("addresses", [])}
    info = status.get("nodeInfo", {})
    return [_name(o), state, ",".join(roles), age(o), info.get("kubeletVersion") or "<none>",
            addr.get("InternalIP") or "<none>", addr.get("ExternalIP") or "<none>", info.get("osImage") or "<unknown>",
            info.get("kernelVersion") or "<unknown>", info.get("containerRuntimeVersion") or "<unknown>"]


def _endpoints(o: dict[str, Any]) -> Row:
    eps: list[str] = []
    for sub in o.get("subsets", []):
        ports = [p.get("port") for p in sub.get("ports", [])] or [None]
        for a in sub.get("addresses", []):
            eps.extend(f"{a['ip']}:{p}" if p else a["ip"] for p in ports)
    text = ",".join(eps[:3]) + (f" + {len(eps) - 3} more..." if len(eps) > 3 else "")
    return [_name(o), text or "<none>", age(o)]


def _endpointslice(o: dict[str, Any]) -> Row:
    ports = ",".join(str(p.get("port")) for p in o.get("ports", []) if p.get("port") is not None) or "<unset>"
    addrs = [a for e in o.get("endpoints", []) for a in e.get("addresses", [])]
    text = ",".join(addrs[:3]) + (f" + {len(addrs) - 3} more..." if len(addrs) > 3 else "")
    return [_name(o), o.get("addressType", ""), ports, text or "<unset>", age(o)]


def _deployment(o: dict[str, Any]) -> Row:
    spec, status = o.get("spec", {}), o.get("status", {})
    want = spec.get("replicas", 1)
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    return [_name(o), f"{status.get('readyReplicas', 0)}/{want}", status.get("updatedReplicas", 0),
            status.get("availableReplicas", 0), age(o), ",".join(c.get("name", "") for c in containers),
            ",".join(c.get("image", "") for c in containers),
            _selector(spec.get("selector", {}).get("matchLabels"))]


def _statefulset(o: dict[str, Any]) -> Row:
    # kubectl's printStatefulSet: READY is readyReplicas/spec.replicas
    spec, status = o.get("spec", {}), o.get("status", {})
    containers = spec.get("template", {}).get("spec", {}).get("containers", [])
    return [_name(o), f"{status.get('readyReplicas', 0)}/{spec.get('replicas', 1)}", age(o),
            ",".join(c.get("name", "") for c in containers), ",".join(c.get("image", "") for c in containers)]


def _namespace(o: dict[str, Any]) -> Row:
    return [_name(o), o.get("status", {}).get("phase") or "Active", age(o)]


def _configmap(o: dict[str, Any]) -> Row:
    return [_name(o), len(o.get("data", {})) + len(o.get("binaryData", {})), age(o)]


def _event(o: dict[str, Any]) -> Row:
    inv = o.get("involvedObject", {})
    last = o.get("lastTimestamp") or o.get("metadata", {}).get("creationTimestamp")
    first = o.get("firstTimestamp") or last
    return [age({"metadata": {"creationTimestamp": last}}), o.get("type", ""), o.get("reason", ""),
            f"{str(inv.get('kind', '')).lower()}/{inv.get('name', '')}", o.get("message", ""),
            o.get("source", {}).get("component", ""), age({"metadata": {"creationTimestamp": first}}),
            o.get("count", 1), _name(o)]


S, N = "string", "integer"
PRINTERS: dict[str, tuple[list[Column], Callable[[dict[str, Any]], Row]]] = {
    "Service": ([("Name", S, 0), ("Type", S, 0), ("Cluster-IP", S, 0), ("External-IP", S, 0), ("Port(s)", S, 0),
                 ("Age", S, 0), ("Selector", S, 1)], _service),
    "Pod": ([("Name", S, 0), ("Ready", S, 0), ("Status", S, 0), ("Restarts", S, 0), ("Age", S, 0), ("IP", S, 1),
             ("Node", S, 1), ("Nominated Node", S, 1), ("Readiness Gates", S, 1)], _pod),
    "Node": ([("Name", S, 0), ("Status", S, 0), ("Roles", S, 0), ("Age", S, 0), ("Version", S, 0),
              ("Internal-IP", S, 1), ("External-IP", S, 1), ("OS-Image", S, 1), ("Kernel-Version", S, 1),
              ("Container-Runtime", S, 1)], _node),
    "Endpoints": ([("Name", S, 0), ("Endpoints", S, 0), ("Age", S, 0)], _endpoints),
    "EndpointSlice": ([("Name", S, 0), ("AddressType", S, 0), ("Ports", S, 0), ("Endpoints", S, 0),
                       ("Age", S, 0)], _endpointslice),
    "Deployment": ([("Name", S, 0), ("Ready", S, 0), ("Up-to-date", N, 0), ("Available", N, 0), ("Age", S, 0),
                    ("Containers", S, 1), ("Images", S, 1), ("Selector", S, 1)], _deployment),
    "StatefulSet": ([("Name", S, 0), ("Ready", S, 0), ("Age", S, 0), ("Containers", S, 1), ("Images", S, 1)],
                    _statefulset),
    "Namespace": ([("Name", S, 0), ("Status", S, 0), ("Age", S, 0)], _namespace),
    "ConfigMap": ([("Name", S, 0), ("Data", N, 0), ("Age", S, 0)], _configmap),
    "Event": ([("Last Seen", S, 0), ("Type", S, 0), ("Reason", S, 0), ("Object", S, 0), ("Message", S, 0),
               ("Source", S, 1), ("First Seen", S, 1), ("Count", N, 1), ("Name", S, 1)], _event),
}

_ROW_CACHED = {"Service", "ConfigMap", "Namespace", "EndpointSlice"}
_ROWS: dict[tuple[str, Any, Any], Row] = {}
_ROWS_MAX = 50_000


def columns(kind: str) -> list[dict[str, Any]]:
    cols, _ = PRINTERS[kind]
    return [{"name": n, "type": t, "format": "name" if n == "Name" else "", "description": "", "priority": p}
            for n, t, p in cols]


def table(kind: str, objs: list[dict[str, Any]], *, resource_version: str = "", include: str = "Metadata",
          with_columns: bool = True, cont: str | None = None) -> dict[str, Any]:
    """A meta.k8s.io/v1 Table. include is the request's includeObject: None, Metadata (the default) or Object."""
    cols, row = PRINTERS[kind]
    # Kinds whose only time-dependent cell is Age: the other cells are kept per stored version (uid and
    # resourceVersion), so paging through 10k Services builds each row once; the Age is computed per answer.
    age_at = next((i for i, (n, _, _) in enumerate(cols) if n == "Age"), None) if kind in _ROW_CACHED else None
    rows = []
    for o in objs:
        if age_at is None:
            cells = row(o)
        else:
            obj_meta = o.get("metadata") or {}
            ck = (kind, obj_meta.get("uid"), obj_meta.get("resourceVersion"))
            cached = _ROWS.get(ck) if ck[1] and ck[2] else None
            if cached is None:
                cached = row(o)
                if ck[1] and ck[2]:
                    if len(_ROWS) >= _ROWS_MAX:
                        _ROWS.clear()
                    _ROWS[ck] = cached
            cells = [*cached[:age_at], age(o), *cached[age_at + 1:]]
        r: dict[str, Any] = {"cells": cells}
        if include == "Object":
            r["object"] = o
        elif include != "None":
            r["object"] = {"kind": "PartialObjectMetadata", "apiVersion": "meta.k8s.io/v1",
                           "metadata": o.get("metadata", {})}
        rows.append(r)
    meta: dict[str, Any] = {"resourceVersion": resource_version}
    if cont:
        meta["continue"] = cont
    return {"kind": "Table", "apiVersion": "meta.k8s.io/v1", "metadata": meta,
            "columnDefinitions": columns(kind) if with_columns else [], "rows": rows}
