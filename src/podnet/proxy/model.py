"""What the cluster wants from this node's proxy, per service port: pure data, no parsing, no I/O.

kube-proxy's ServicePortName, ServicePort (BaseServicePortInfo) and Endpoint (BaseEndpointInfo), and the
`DesiredState` a renderer reads: every service port of one IP family keyed by its name. proxy/tracker.py
builds them from decoded objects; renderers only read them, so a new backend never touches the tracking.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NamedTuple

from podnet.api.defaults import DEFAULT_PROTOCOL, IPV4
from podnet.api.ipaddr import join_host_port


@dataclass(frozen=True, slots=True, order=True)
class ServicePortName:
    """kube-proxy's ServicePortName: namespace/name + port name + protocol."""

    namespace: str
    name: str
    port: str  # the Service port's name; "" when unnamed
    protocol: str = DEFAULT_PROTOCOL

    def __str__(self) -> str:  # ServicePortName.String(): "ns/name:port" or "ns/name"
        base = f"{self.namespace}/{self.name}"
        return f"{base}:{self.port}" if self.port else base

    @property
    def namespaced_name(self) -> str:
        return f"{self.namespace}/{self.name}"


class Endpoint(NamedTuple):
    """One backend of a service port, with the conditions kube-proxy looks at.

    A NamedTuple rather than a frozen dataclass: a 10k-service cluster has ~100k of them per state,
    and tuples are several times cheaper to create and compare.
    """

    ip: str  # canonical text form
    port: int
    ready: bool = True
    serving: bool = True
    terminating: bool = False
    local: bool = False  # nodeName == this node
    node_name: str = ""
    zone: str = ""
    zone_hints: frozenset[str] = frozenset()
    node_hints: frozenset[str] = frozenset()

    def __str__(self) -> str:  # Endpoint.String(): "ip:port", "[ip6]:port"
        return join_host_port(self.ip, self.port)


@dataclass(frozen=True, slots=True)
class ServicePort:
    """Everything the proxy needs to know about one port of one Service, endpoints included."""

    name: ServicePortName
    cluster_ip: str
    port: int
    node_port: int = 0
    external_ips: tuple[str, ...] = ()
    load_balancer_ips: tuple[str, ...] = ()  # VIP-mode ingress IPs only (ipMode: Proxy is skipped)
    load_balancer_source_ranges: tuple[str, ...] = ()  # trimmed, masked, this family only
    client_ip_affinity: bool = False
    sticky_max_age_seconds: int = 0
    external_policy_local: bool = False
    internal_policy_local: bool = False
    health_check_node_port: int = 0
    endpoints: tuple[Endpoint, ...] = ()  # sorted by str(endpoint), deduplicated

    @property
    def protocol(self) -> str:
        return self.name.protocol

    @property
    def externally_accessible(self) -> bool:
        return self.node_port != 0 or bool(self.load_balancer_ips) or bool(self.external_ips)

    @property
    def uses_cluster_endpoints(self) -> bool:
        # eTP=Local still needs the cluster endpoints for the short-circuit of node/pod traffic.
        return not self.internal_policy_local or self.externally_accessible

    @property
    def uses_local_endpoints(self) -> bool:
        return self.internal_policy_local or (self.external_policy_local and self.externally_accessible)


@dataclass(frozen=True)
class DesiredState:
    """The whole desired state of one node's proxy for one IP family."""

    node_name: str
    ip_family: str = IPV4
    services: Mapping[ServicePortName, ServicePort] = field(default_factory=dict)
    topology_zone: str = ""  # the node's topology.kubernetes.io/zone label
    node_pod_cidrs: tuple[str, ...] = ()  # spec.podCIDRs of this node (detectLocalMode NodeCIDR)

    def by_service(self) -> dict[str, tuple[ServicePort, ...]]:
        """Service ports grouped by "namespace/name" (the unit of kube-proxy's partial syncs)."""
        out: dict[str, list[ServicePort]] = {}
        for sp in self.services.values():
            out.setdefault(sp.name.namespaced_name, []).append(sp)
        return {k: tuple(v) for k, v in out.items()}

    @property
    def total_endpoints(self) -> int:
        return sum(len(sp.endpoints) for sp in self.services.values())


def changed_services(previous: DesiredState | None, current: DesiredState) -> frozenset[str]:
    """Namespaced names ("ns/name") whose service ports or endpoints differ between two states.

    This is kube-proxy's `UpdatedServices` (service and endpoint trackers together): the partial
    sync rewrites the SVC/SVL/EXT/FW/SEP chains of exactly these services.
    """
    cur = current.by_service()
    if previous is None:
        return frozenset(cur)
    prev = previous.by_service()
    return frozenset(k for k in cur.keys() | prev.keys() if cur.get(k) != prev.get(k))


def changed_service_ports(previous: DesiredState | None, current: DesiredState) -> frozenset[ServicePortName]:
    """Service ports added, removed or changed (ports, IPs, policies or endpoints) between two states."""
    if previous is None:
        return frozenset(current.services)
    prev, cur = previous.services, current.services
    return frozenset(k for k in prev.keys() | cur.keys() if prev.get(k) != cur.get(k))


def needs_full_sync(previous: DesiredState | None, current: DesiredState) -> bool:
    """True when node-level facts changed (kube-proxy forces a full sync on node label changes)."""
    if previous is None:
        return True
    return (
        previous.node_name != current.node_name
        or previous.ip_family != current.ip_family
        or previous.topology_zone != current.topology_zone
        or previous.node_pod_cidrs != current.node_pod_cidrs
    )



def service_port_order(name: ServicePortName) -> tuple[str, str]:
    """Sort key of service ports in a DesiredState (deterministic output order)."""
    return str(name), name.protocol
