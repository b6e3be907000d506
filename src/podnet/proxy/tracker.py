"""Decoded Services and EndpointSlices -> service ports with their endpoints (kube-proxy's change trackers).

kube-proxy's `serviceport.go` and `endpointslicecache.go`: a Service becomes one ServicePort per port of the
proxy's IP family, an EndpointSlice contributes endpoints to the ports it names, and the join is a
`DesiredState`. Objects are decoded once, by api/decode.py; this module only combines the results.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from podnet.api.decode import (
    DecodedService,
    DecodedSlice,
    as_dict,
    decode_endpoint_slice,
    decode_node,
    decode_service,
)
from podnet.api.defaults import IPV4, IPV6
from podnet.errors import Problem, ValidationError
from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName, service_port_order


@dataclass(frozen=True, slots=True)
class ParsedService:
    """A Service as service ports of one family, before endpoints are attached."""

    namespace: str
    name: str
    ports: tuple[ServicePort, ...]  # without endpoints; empty when the service is ignored

    @property
    def namespaced_name(self) -> str:
        return f"{self.namespace}/{self.name}"


def service_ports(svc: DecodedService) -> ParsedService:
    """kube-proxy's newBaseServiceInfo: one ServicePort per port, sharing the service's IPs and policies."""
    ports = tuple(
        ServicePort(
            name=ServicePortName(svc.namespace, svc.name, p.name, p.protocol),
            cluster_ip=svc.cluster_ip,
            port=p.port,
            node_port=p.node_port,
            external_ips=svc.external_ips,
            load_balancer_ips=svc.load_balancer_ips,
            load_balancer_source_ranges=svc.load_balancer_source_ranges,
            client_ip_affinity=svc.client_ip_affinity,
            sticky_max_age_seconds=svc.sticky_max_age_seconds,
            external_policy_local=svc.external_policy_local,
            internal_policy_local=svc.internal_policy_local,
            health_check_node_port=svc.health_check_node_port,
        )
        for p in svc.ports
    )
    return ParsedService(svc.namespace, svc.name, ports)


def parse_service(obj: Any, ip_family: str = IPV4) -> ParsedService:
    """A Service object (dict or model) as service ports of one family; ValidationError when malformed.

    Headless (clusterIP None/empty) and ExternalName services yield no ports; so does a service
    without a cluster IP of this family.
    """
    return service_ports(decode_service(obj, ip_family))


def _service_endpoints(
    svc: ParsedService, slices: Iterable[DecodedSlice], node_name: str, ip_family: str
) -> tuple[ServicePort, ...]:
    """The service's ports with their endpoints, as kube-proxy's EndpointSliceCache joins them.

    Endpoints are matched by (port name, protocol), take their port number from the slice, keep
    only the first address, are deduplicated by "ip:port" (a local copy wins) and sorted by it.
    """
    if not svc.ports:
        return ()
    wanted = {(sp.name.port, sp.name.protocol) for sp in svc.ports}
    buckets: dict[tuple[str, str], dict[str, Endpoint]] = {}
    for sl in slices:
        if sl.address_type != ip_family:
            continue
        for pname, pnum, proto in sl.ports:
            if (pname, proto) not in wanted:
                continue
            bucket = buckets.setdefault((pname, proto), {})
            for se in sl.endpoints:
                if se.family != ip_family:
                    continue
                local = bool(node_name) and se.node_name == node_name
                key = f"[{se.address}]:{pnum}" if ip_family == IPV6 else f"{se.address}:{pnum}"
                if local or key not in bucket:
                    bucket[key] = Endpoint(
                        se.address, pnum, se.ready, se.serving, se.terminating, local,
                        se.node_name, se.zone, se.zone_hints, se.node_hints,
                    )
    out = []
    for sp in svc.ports:
        found = buckets.get((sp.name.port, sp.name.protocol))
        out.append(replace(sp, endpoints=tuple(found[k] for k in sorted(found))) if found else sp)
    return tuple(out)


def build_desired_state(
    services: Iterable[ParsedService],
    slices: Iterable[DecodedSlice],
    node_name: str,
    *,
    ip_family: str = IPV4,
    topology_zone: str = "",
    node_pod_cidrs: Iterable[str] = (),
) -> DesiredState:
    """Join parsed services with their slices' endpoints.

    A sync loop can call it per changed service (with that service's slices) and merge the results;
    per-service work is independent of the cluster size.
    """
    by_service: dict[str, list[DecodedSlice]] = {}
    for sl in slices:
        by_service.setdefault(f"{sl.namespace}/{sl.service}", []).append(sl)
    ports = {svc.namespaced_name: _service_endpoints(svc, by_service.get(svc.namespaced_name, ()), node_name, ip_family)
             for svc in services}
    return _assemble(ports, node_name, ip_family, topology_zone, tuple(node_pod_cidrs))


def _assemble(
    ports: Mapping[str, tuple[ServicePort, ...]], node_name: str, ip_family: str, zone: str, cidrs: tuple[str, ...]
) -> DesiredState:
    # Deterministic order: by "ns/name:port", then protocol (as proxier.py orders its states too).
    flat = {sp.name: sp for group in ports.values() for sp in group}
    ordered = {k: flat[k] for k in sorted(flat, key=service_port_order)}
    return DesiredState(node_name=node_name, ip_family=ip_family, services=ordered, topology_zone=zone,
                        node_pod_cidrs=cidrs)


def desired_state_from_objects(
    objects: Iterable[Any], node_name: str, *, ip_family: str = IPV4
) -> DesiredState:
    """Desired state from a mixed list of Service, EndpointSlice and Node objects (dicts or models).

    Raises one ValidationError carrying every problem of every object. Objects of other kinds are
    ignored (an OBJECTS.yaml may also hold Pods).
    """
    services: list[ParsedService] = []
    slices: list[DecodedSlice] = []
    problems: list[Problem] = []
    zone = ""
    pod_cidrs: tuple[str, ...] = ()
    for i, obj in enumerate(objects):
        try:
            d = as_dict(obj)
        except ValidationError as e:
            problems.extend(Problem(f"objects[{i}]", p.value, p.reason) for p in e.problems)
            continue
        kind = d.get("kind")
        try:
            if kind == "Service":
                services.append(parse_service(d, ip_family))
            elif kind == "EndpointSlice":
                slices.append(decode_endpoint_slice(d))
            elif kind == "Node":
                name, z, cidrs = decode_node(d)
                if name == node_name:
                    zone, pod_cidrs = z, cidrs
        except ValidationError as e:
            problems.extend(e.problems)
    if problems:
        raise ValidationError(problems)
    return build_desired_state(
        services, slices, node_name, ip_family=ip_family, topology_zone=zone, node_pod_cidrs=pod_cidrs
    )


class ChangeTracker:
    """What the informers delivered, and which services changed since the rules were last written.

    kube-proxy keeps, per changed service, the ports as last synced (previous) and as now (current), and
    drops the entry when both are equal. Here the informer side records *which* services changed (with
    the time of the change, for the programming-latency metric); the sync side recomputes those services'
    ports (`update`) and compares them with what it last applied (`previous`, `current`, `applied`).
    Informer threads call the `*_changed` methods; one sync thread calls the rest.
    """

    def __init__(self, node_name: str, ip_family: str = IPV4, *, clock: Callable[[], float] = time.time) -> None:
        self.node_name = node_name
        self.ip_family = ip_family
        self.clock = clock
        self._lock = threading.Lock()
        # informer side (under the lock)
        self._services: dict[str, ParsedService] = {}  # "ns/name" -> parsed
        self._service_keys: dict[str, str] = {}  # store key -> "ns/name"
        self._slices: dict[str, DecodedSlice] = {}  # store key -> decoded
        self._slices_by_service: dict[str, set[str]] = {}  # "ns/name" -> slice keys
        self._zone = ""
        self._pod_cidrs: tuple[str, ...] = ()
        self._dirty: dict[str, float] = {}  # "ns/name" -> time of the change that made it dirty
        self._node_changed = True
        # sync side
        self.ports: dict[ServicePortName, ServicePort] = {}
        self._ports_by_service: dict[str, list[ServicePortName]] = {}
        self._applied: dict[ServicePortName, ServicePort] = {}
        self._applied_by_service: dict[str, list[ServicePortName]] = {}

    # ---- informer side ------------------------------------------------------------------------------

    def service_changed(self, old: tuple[str, ParsedService] | None, new: tuple[str, ParsedService] | None) -> None:
        """A Service was added (old None), updated or deleted (new None); each side is (store key, parsed)."""
        now = self.clock()
        with self._lock:
            if old is not None:
                name = self._service_keys.pop(old[0], None)
                if name is not None:
                    self._services.pop(name, None)
                    self._dirty.setdefault(name, now)
            if new is not None:
                key, svc = new
                self._service_keys[key] = svc.namespaced_name
                self._services[svc.namespaced_name] = svc
                self._dirty.setdefault(svc.namespaced_name, now)

    def slice_changed(self, old: tuple[str, DecodedSlice, float | None] | None,
                      new: tuple[str, DecodedSlice, float | None] | None) -> None:
        """An EndpointSlice changed; each side is (store key, decoded, last-change-trigger-time or None)."""
        now = self.clock()
        with self._lock:
            if old is not None:
                key = old[0]
                prev = self._slices.pop(key, None)
                if prev is not None:
                    name = f"{prev.namespace}/{prev.service}"
                    self._slices_by_service.get(name, set()).discard(key)
                    self._dirty.setdefault(name, now)
            if new is not None:
                key, sl, trigger = new
                name = f"{sl.namespace}/{sl.service}"
                self._slices[key] = sl
                self._slices_by_service.setdefault(name, set()).add(key)
                self._dirty[name] = min(self._dirty.get(name, now), trigger or now)

    def node_changed(self, zone: str, pod_cidrs: Iterable[str]) -> bool:
        """This node's zone label and podCIDRs; True when they differ from before (a full sync is due)."""
        cidrs = tuple(pod_cidrs)
        with self._lock:
            if (zone, cidrs) == (self._zone, self._pod_cidrs):
                return False
            self._zone, self._pod_cidrs = zone, cidrs
            self._node_changed = True
            return True

    # ---- sync side ----------------------------------------------------------------------------------

    def take(self) -> tuple[bool, dict[str, float]]:
        """(node facts changed, dirty services with their change times) since the last take; resets both."""
        with self._lock:
            dirty, self._dirty = self._dirty, {}
            node_changed, self._node_changed = self._node_changed, False
            return node_changed, dirty

    def requeue(self, dirty: Mapping[str, float], *, node_changed: bool = False) -> None:
        """Give back what a failed sync took, keeping the earliest change time of each service."""
        with self._lock:
            for n, t in dirty.items():
                self._dirty[n] = min(self._dirty.get(n, t), t)
            self._node_changed = self._node_changed or node_changed

    @property
    def node_pod_cidrs(self) -> tuple[str, ...]:
        with self._lock:
            return self._pod_cidrs

    def known_services(self) -> set[str]:
        """Every service that has ports now or had them at the last update (what a full sync recomputes)."""
        with self._lock:
            names = set(self._services) | set(self._slices_by_service)
        return names | set(self._ports_by_service)

    def update(self, names: Iterable[str]) -> None:
        """Rebuild the service ports of these services from what the informers hold."""
        with self._lock:
            inputs = {
                n: (self._services.get(n),
                    [self._slices[k] for k in self._slices_by_service.get(n, ()) if k in self._slices])
                for n in names
            }
            zone, cidrs = self._zone, self._pod_cidrs
        for name, (svc, slices) in inputs.items():
            for spn in self._ports_by_service.pop(name, ()):
                self.ports.pop(spn, None)
            if svc is None:
                continue
            st = build_desired_state([svc], slices, self.node_name, ip_family=self.ip_family, topology_zone=zone,
                                     node_pod_cidrs=cidrs)
            self.ports.update(st.services)
            self._ports_by_service[name] = list(st.services)

    def state(self, ports: Mapping[ServicePortName, ServicePort], *, ordered: bool) -> DesiredState:
        """A DesiredState of these ports with this node's facts (ordered as a full sync writes them)."""
        with self._lock:
            zone, cidrs = self._zone, self._pod_cidrs
        if ordered:
            ports = {k: ports[k] for k in sorted(ports, key=service_port_order)}
        return DesiredState(node_name=self.node_name, ip_family=self.ip_family, services=dict(ports),
                            topology_zone=zone, node_pod_cidrs=cidrs)

    def previous(self, names: Iterable[str]) -> dict[ServicePortName, ServicePort]:
        """The ports of these services as last applied."""
        return {spn: self._applied[spn] for n in names for spn in self._applied_by_service.get(n, ())}

    def current(self, names: Iterable[str]) -> dict[ServicePortName, ServicePort]:
        """The ports of these services as now wanted."""
        return {spn: self.ports[spn] for n in names for spn in self._ports_by_service.get(n, ())}

    def applied_all(self) -> None:
        """A full sync wrote every current port."""
        self._applied = dict(self.ports)
        self._applied_by_service = {k: list(v) for k, v in self._ports_by_service.items()}

    def applied(self, names: Iterable[str]) -> None:
        """A partial sync wrote these services' current ports."""
        for n in names:
            for spn in self._applied_by_service.pop(n, ()):
                self._applied.pop(spn, None)
            for spn in self._ports_by_service.get(n, ()):
                self._applied[spn] = self.ports[spn]
            if n in self._ports_by_service:
                self._applied_by_service[n] = list(self._ports_by_service[n])

    @property
    def total_endpoints(self) -> int:
        return sum(len(sp.endpoints) for sp in self.ports.values())
