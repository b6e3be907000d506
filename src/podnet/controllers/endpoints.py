"""EndpointSlices of a Service, derived from its pods as Kubernetes' EndpointSlice controller derives them.

Endpoints are derived, never hand-written (for services with a selector), so proxy, `describe` and
tests agree. The pure core is endpoint_slices_for(service, pods). Writers of services or pods
(`podnet apply`/`delete`, the lab) call slice_ops()/sync_ops() and commit the result in the same
transaction, so every node's proxy only watches EndpointSlices, as kube-proxy does.

Selector-less services are left alone: their EndpointSlices are whatever the user applied.

What follows the upstream controller (pkg/controller/endpointslice, staging endpointslice reconciler):
- one set of slices per IP family of the service (a dual-stack service has IPv4 and IPv6 slices, each
  with its own placeholder when empty).
- pods: same namespace, labels match the selector, an IP of the slice's family, not terminal
  (Succeeded/Failed); terminating pods stay, with ready=false.
- conditions: serving = pod Ready condition (or publishNotReadyAddresses), ready = serving and not
  terminating, terminating = deletionTimestamp set. All three always set, as upstream does.
- ports: one EndpointPort per service port, named like the service port; a named targetPort is looked
  up per pod in its container ports (name and protocol); a pod lacking it gets no entry for that port.
  Pods with different resolved port sets go to different slices.
- at most 100 endpoints per slice (the controller's default --max-endpoints-per-slice).
- labels: the service's labels, plus kubernetes.io/service-name and endpointslice.kubernetes.io/managed-by;
  service.kubernetes.io/headless for headless services.
- a service whose selector matches nothing gets one empty placeholder slice.
Where we differ: slice names. Upstream uses generateName (random suffix); ours are <service>-<hash of
the port set and chunk>, so the same inputs always give the same slices and no write happens for nothing.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import TypeVar

from podnet.api.defaults import HEADLESS_LABEL
from podnet.api.endpointslice import (
    CONTROLLER_NAME,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
    ObjectReference,
)
from podnet.api.loader import from_json, to_json
from podnet.api.meta import ObjectMeta, Resource
from podnet.api.pod import Pod
from podnet.api.service import Service
from podnet.errors import PodnetError
from podnet.store import Delete, KeyValue, Op, Put, Store, keys

MAX_ENDPOINTS_PER_SLICE = 100

_R = TypeVar("_R", bound=Resource)

PortKey = tuple[tuple[str, int, str], ...]


def selector_matches(selector: dict[str, str] | None, labels: dict[str, str]) -> bool:
    """Equality-based selector, as a Service's. An empty selector selects nothing (selector-less)."""
    if not selector:
        return False
    return all(labels.get(k) == v for k, v in selector.items())


def _address_types(svc: Service) -> list[str]:
    """One set of slices per IP family of the Service, in its order (the controller's
    serviceSupportedAddressesTypes); a stored Service without families has its cluster IP's."""
    if svc.spec.ip_families:
        return [f for f in dict.fromkeys(svc.spec.ip_families) if f in ("IPv4", "IPv6")] or ["IPv4"]
    ips = svc.cluster_ips
    if ips:
        try:
            return ["IPv6" if ipaddress.ip_address(ips[0]).version == 6 else "IPv4"]
        except ValueError:
            pass
    return ["IPv4"]


def _pod_address(pod: Pod, address_type: str) -> str | None:
    want = 6 if address_type == "IPv6" else 4
    for ip in pod.ips:
        try:
            if ipaddress.ip_address(ip).version == want:
                return ip
        except ValueError:
            continue
    return None


def _endpoint_ports(svc: Service, pod: Pod) -> list[EndpointPort]:
    ports = []
    for sp in svc.ports:
        target = sp.effective_target_port
        if isinstance(target, str):
            number = pod.find_port(target, sp.protocol)
            if number is None:
                continue  # upstream logs "failed to find port" and leaves this port out for the pod
        else:
            number = target
        ports.append(EndpointPort(name=sp.name, port=number, protocol=sp.protocol, app_protocol=sp.app_protocol))
    return ports


def _port_key(ports: Sequence[EndpointPort]) -> PortKey:
    return tuple((p.name or "", p.port or 0, p.protocol or "TCP") for p in ports)


def _slice_name(svc: Service, key: PortKey, chunk: int, address_type: str = "IPv4") -> str:
    # IPv4 slices keep the names they had before dual-stack; IPv6 ones hash their address type too
    parts: list[object] = [list(key), chunk] if address_type == "IPv4" else [list(key), chunk, address_type]
    digest = hashlib.sha256(json.dumps(parts).encode()).hexdigest()[:5]
    return f"{svc.name[:57]}-{digest}"


def _labels(svc: Service) -> dict[str, str]:
    labels = dict(svc.metadata.labels)
    labels[SERVICE_NAME_LABEL] = svc.name
    labels[MANAGED_BY_LABEL] = CONTROLLER_NAME
    if svc.is_headless:
        labels[HEADLESS_LABEL] = ""
    return labels


def _ip_sort_key(ep: Endpoint) -> tuple[int, int, str]:
    addr = ep.addresses[0]
    try:
        ip = ipaddress.ip_address(addr)
        return (ip.version, int(ip), addr)
    except ValueError:
        return (9, 0, addr)


def endpoint_slices_for(
    service: Service, pods: Iterable[Pod], *, max_endpoints: int = MAX_ENDPOINTS_PER_SLICE
) -> list[EndpointSlice]:
    """The EndpointSlices the controller keeps for service, given every pod (any namespace).

    Selector-less services get none: their slices are the user's. Neither do ExternalName ones, whose only
    record is a CNAME (the upstream controller skips them).
    """
    if not service.has_selector or service.spec.type == "ExternalName":
        return []
    pods = list(pods)
    return [sl for address_type in _address_types(service)
            for sl in _slices_of_family(service, pods, address_type, max_endpoints)]


def _slices_of_family(service: Service, pods: list[Pod], address_type: str, max_endpoints: int) -> list[EndpointSlice]:
    publish_not_ready = bool(service.spec.publish_not_ready_addresses)
    groups: dict[PortKey, tuple[list[EndpointPort], list[Endpoint]]] = {}
    for pod in pods:
        if pod.namespace != service.namespace or not selector_matches(service.spec.selector, pod.metadata.labels):
            continue
        if pod.is_terminal:
            continue
        address = _pod_address(pod, address_type)
        if address is None:
            continue
        terminating = pod.metadata.deletion_timestamp is not None
        serving = publish_not_ready or pod.is_ready
        hostname = pod.spec.hostname if pod.spec.hostname and pod.spec.subdomain == service.name else None
        endpoint = Endpoint(
            addresses=[address],
            conditions=EndpointConditions(ready=serving and not terminating, serving=serving,
                                          terminating=terminating),
            hostname=hostname,
            node_name=pod.spec.node_name or None,
            target_ref=ObjectReference(kind="Pod", namespace=pod.namespace, name=pod.name, uid=pod.metadata.uid),
        )
        ports = _endpoint_ports(service, pod)
        groups.setdefault(_port_key(ports), (ports, []))[1].append(endpoint)

    slices = []
    for key, (ports, endpoints) in sorted(groups.items()):
        endpoints.sort(key=_ip_sort_key)
        for chunk, start in enumerate(range(0, len(endpoints), max_endpoints)):
            slices.append(_slice(service, key, chunk, address_type, ports, endpoints[start:start + max_endpoints]))
    if not slices:
        slices.append(_slice(service, (), 0, address_type, [], []))  # upstream's placeholder, per family
    return slices


def _slice(svc: Service, key: PortKey, chunk: int, address_type: str, ports: list[EndpointPort],
           endpoints: list[Endpoint]) -> EndpointSlice:
    return EndpointSlice(
        metadata=ObjectMeta(name=_slice_name(svc, key, chunk, address_type), namespace=svc.namespace, labels=_labels(svc)),
        address_type=address_type,
        endpoints=endpoints,
        ports=list(ports),
    )


def ready_addresses(slices: Iterable[EndpointSlice], port_name: str) -> list[str]:
    """`ip:port` of ready endpoints for one service port, across slices (what `describe` shows)."""
    out: list[str] = []
    for es in slices:
        port = next((p.port for p in es.ports if (p.name or "") == port_name), None)
        if port is None:
            continue
        for ep in es.endpoints:
            if ep.is_ready:
                out.extend(f"{a}:{port}" for a in ep.addresses)  # kubectl's "%s:%d", IPv6 too
    return out


# ---- store side: the ops that make the stored slices equal the derived ones ----------------------------


def slice_ops(
    services: Iterable[Service],
    pods: Iterable[Pod],
    existing: dict[str, tuple[EndpointSlice, int]],
    scope: set[tuple[str, str]] | None = None,
    now: datetime | None = None,
) -> list[Op]:
    """Puts/deletes turning the stored controller-managed slices into the derived ones.

    existing maps key -> (slice, mod_revision) for the stored slices. Only slices managed by the
    controller are touched. scope, when given, limits the work to those (namespace, service name)
    pairs: a writer that changed one pod recomputes the services that select it, not the cluster.
    Every op is conditional on the revision it was computed from, so a concurrent writer makes the
    commit fail instead of losing data.
    """
    # (namespace, label, value) -> pods: each service only looks at pods carrying one of its selector's
    # pairs, so syncing S services over P pods is not S x P.
    index: dict[tuple[str | None, str, str], list[Pod]] = {}
    for pod in pods:
        for k, v in pod.metadata.labels.items():
            index.setdefault((pod.namespace, k, v), []).append(pod)
    want: dict[str, EndpointSlice] = {}
    for svc in services:
        if scope is not None and (svc.namespace or "default", svc.name) not in scope:
            continue
        candidates: list[Pod] = []
        if svc.spec.selector:
            k, v = min(svc.spec.selector.items(), key=lambda kv: len(index.get((svc.namespace, *kv), ())))
            candidates = index.get((svc.namespace, k, v), [])
        for es in endpoint_slices_for(svc, candidates):
            want[keys.resource("EndpointSlice", es.namespace, es.name)] = es
    ops: list[Op] = []
    created = (now or datetime.now(UTC)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for key, es in sorted(want.items()):
        current = existing.get(key)
        meta = es.metadata
        if current is None:
            meta.creation_timestamp, meta.uid = created, str(uuid.uuid4())
            ops.append(Put(key, to_json(es), if_absent=True))
            continue
        # identity and age stay with the stored slice; only content changes cause a write
        meta.creation_timestamp, meta.uid = current[0].metadata.creation_timestamp, current[0].metadata.uid
        old = current[0].to_dict()
        old.get("metadata", {}).pop("resourceVersion", None)
        if old != es.to_dict():
            ops.append(Put(key, to_json(es), if_revision=current[1]))
    for key, (es, rev) in sorted(existing.items()):
        if key in want or not es.is_controller_managed:
            continue
        if scope is not None and (es.namespace or "default", es.service_name or "") not in scope:
            continue
        ops.append(Delete(key, if_revision=rev))
    return ops


def _decode_all(items: Iterable[KeyValue], cls: type[_R]) -> dict[str, tuple[_R, int]]:
    out: dict[str, tuple[_R, int]] = {}
    for kv in items:
        try:
            obj = from_json(kv.value)
        except PodnetError:
            continue  # not ours to judge here; `podnet get` shows it, apply validates on the way in
        if isinstance(obj, cls):
            out[kv.key] = (obj, kv.mod_revision)
    return out


def sync_ops(store: Store) -> list[Op]:
    """Ops bringing every controller-managed EndpointSlice in the store up to date: a full recompute.

    The writers themselves work incrementally (apply recomputes the touched namespaces, the lab controller
    the services a change selects); this is the reference they must agree with, costing a decode of
    every service, pod and slice. An empty result means the stored slices are all derived correctly.
    """
    services = _decode_all(store.list(keys.kind_prefix("Service")).items, Service)
    pods = _decode_all(store.list(keys.kind_prefix("Pod")).items, Pod)
    slices = _decode_all(store.list(keys.kind_prefix("EndpointSlice")).items, EndpointSlice)
    return slice_ops(
        (s for s, _ in services.values()),
        (p for p, _ in pods.values()),
        slices,
    )
