"""Decoded Services and EndpointSlices -> service ports with their endpoints (kube-proxy's change trackers).

kube-proxy's `serviceport.go` and `endpointslicecache.go`: a Service becomes one ServicePort per port of the
proxy's IP family, an EndpointSlice contributes endpoints to the ports it names, and the join is a
`DesiredState`. Objects are decoded once, by api/decode.py; this module only combines the results.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
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
        bucket = buckets.get((sp.name.port, sp.name.protocol))
        out.append(replace(sp, endpoints=tuple(bucket[k] for k in sorted(bucket))) if bucket else sp)
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
