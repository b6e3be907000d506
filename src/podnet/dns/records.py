"""What the DNS server knows of the cluster: Services, endpoints, pods and namespaces, reduced and indexed.

Each stored object is reduced once, when it changes, to the few fields DNS answers from (the shapes of
CoreDNS's plugin/kubernetes/object: Service, Endpoints, Pod). A View is an immutable snapshot with the
indexes the answers need (by service, by IP); cache.py builds a new one after each change and swaps it in,
so a query never sees half an update and never takes a lock.

Kubernetes names are lower case (DNS-1123/1035), so the indexes are keyed by the stored names and
queries are lowered before lookup: comparisons are case-insensitive, as the specification requires.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass, field

from podnet.api.cluster import Namespace
from podnet.api.endpointslice import EndpointSlice
from podnet.api.meta import Resource
from podnet.api.pod import Pod
from podnet.api.service import Service

# Every cluster has these (kube-apiserver's system namespaces controller makes them).
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
NO_PORT = -1  # CoreDNS's stand-in port for a Service or slice without ports: A records, no SRV


@dataclass(frozen=True, slots=True)
class Port:
    name: str
    protocol: str
    port: int


@dataclass(frozen=True, slots=True)
class ServiceRecord:
    namespace: str
    name: str
    type: str
    cluster_ips: tuple[str, ...]  # ("None",) for headless, ("",) for none (ExternalName), as CoreDNS keeps them
    external_name: str
    ports: tuple[Port, ...]

    @property
    def headless(self) -> bool:
        return self.cluster_ips[0] == "None"


@dataclass(frozen=True, slots=True)
class Address:
    ip: str
    hostname: str  # the endpoint's hostname field ("" if unset)
    target: str  # the name of the pod the endpoint targets ("" if none)


@dataclass(frozen=True, slots=True)
class EndpointsRecord:
    """One EndpointSlice: its ready addresses and ports (CoreDNS converts each slice to one Endpoints)."""

    namespace: str
    service: str
    addresses: tuple[Address, ...]
    ports: tuple[Port, ...]


@dataclass(frozen=True, slots=True)
class PodRecord:
    namespace: str
    name: str
    ip: str


Record = ServiceRecord | EndpointsRecord | PodRecord | str  # a str is a namespace name


def _canonical_ip(text: str) -> str | None:
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return str(ip)


def reduce(obj: Resource) -> Record | None:
    """The DNS-relevant part of a stored object, or None if DNS has no use for it."""
    if isinstance(obj, Service):
        return service_record(obj)
    if isinstance(obj, EndpointSlice):
        return endpoints_record(obj)
    if isinstance(obj, Pod):
        return pod_record(obj)
    if isinstance(obj, Namespace):
        return obj.name
    return None


def service_record(svc: Service) -> ServiceRecord:
    s = svc.spec
    ips: tuple[str, ...] = tuple(s.cluster_ips) if s.cluster_ips else (s.cluster_ip or "",)
    ips = tuple(ip if ip in ("", "None") else (_canonical_ip(ip) or ip) for ip in ips)
    ports = tuple(Port(p.name or "", p.protocol or "TCP", p.port) for p in s.ports) or (Port("", "", NO_PORT),)
    return ServiceRecord(svc.namespace or "default", svc.name, s.type or "ClusterIP", ips,
                         s.external_name or "", ports)


def endpoints_record(es: EndpointSlice) -> EndpointsRecord | None:
    """Ready endpoints only (unset readiness counts as ready), as CoreDNS's EndpointSliceToEndpoints."""
    if es.address_type not in ("IPv4", "IPv6"):
        return None  # FQDN slices hold names, not addresses
    addresses = []
    for ep in es.endpoints:
        if not ep.is_ready:
            continue
        target = ep.target_ref.name if ep.target_ref is not None and ep.target_ref.name else ""
        for a in ep.addresses:
            ip = _canonical_ip(a)
            if ip is not None:
                addresses.append(Address(ip, ep.hostname or "", target if len(target) < 64 else ""))
    ports = tuple(Port(p.name or "", p.protocol or "", p.port if p.port is not None else NO_PORT)
                  for p in es.ports) or (Port("", "", NO_PORT),)
    return EndpointsRecord(es.namespace or "default", es.service_name or "", tuple(addresses), ports)


def pod_record(pod: Pod) -> PodRecord | None:
    """A pod by its status.podIP, unless it is terminating (CoreDNS's ToPod)."""
    if pod.metadata.deletion_timestamp is not None:
        return None
    ip = _canonical_ip(pod.status.pod_ip or "")
    return PodRecord(pod.namespace or "default", pod.name, ip) if ip else None


@dataclass
class View:
    """An indexed snapshot. `serial` is the SOA serial (unix time of the last change, as CoreDNS's)."""

    synced: bool = False
    serial: int = 0
    generation: int = 0
    services: dict[tuple[str, str], list[ServiceRecord]] = field(default_factory=dict)
    endpoints: dict[tuple[str, str], list[EndpointsRecord]] = field(default_factory=dict)
    services_by_ip: dict[str, list[ServiceRecord]] = field(default_factory=dict)
    endpoints_by_ip: dict[str, list[EndpointsRecord]] = field(default_factory=dict)
    pods_by_ip: dict[str, list[PodRecord]] = field(default_factory=dict)
    namespaces: frozenset[str] = frozenset(BUILTIN_NAMESPACES)

    @staticmethod
    def build(records: Iterable[Record], *, synced: bool = True, serial: int = 0, generation: int = 0) -> View:
        v = View(synced=synced, serial=serial, generation=generation)
        namespaces = set(BUILTIN_NAMESPACES)
        for r in records:
            if isinstance(r, str):
                namespaces.add(r)
            elif isinstance(r, ServiceRecord):
                namespaces.add(r.namespace)
                v.services.setdefault((r.namespace, r.name), []).append(r)
                for ip in r.cluster_ips:
                    if ip not in ("", "None"):
                        v.services_by_ip.setdefault(ip, []).append(r)
            elif isinstance(r, EndpointsRecord):
                namespaces.add(r.namespace)
                v.endpoints.setdefault((r.namespace, r.service), []).append(r)
                for a in r.addresses:
                    lst = v.endpoints_by_ip.setdefault(a.ip, [])
                    if not lst or lst[-1] is not r:
                        lst.append(r)
            elif isinstance(r, PodRecord):
                # podnet lets objects name a namespace nobody created; Kubernetes cannot have them, so a
                # namespace that holds objects counts as existing.
                namespaces.add(r.namespace)
                v.pods_by_ip.setdefault(r.ip, []).append(r)
        v.namespaces = frozenset(namespaces)
        for svcs in v.services_by_ip.values():
            svcs.sort(key=lambda r: (r.namespace, r.name))
        for eps in v.endpoints_by_ip.values():
            eps.sort(key=lambda r: (r.namespace, r.service))
        return v

    def namespace_exists(self, namespace: str) -> bool:
        return namespace in self.namespaces
