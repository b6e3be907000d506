"""One view of a lab's network: its nodes with their devices and pods, its Services with kube-proxy's chains.

Pure: the lab's facts (topology, net-conf, leases: facts.py) and the API's objects (feed.py) go in, frozen
values come out. Chain names and endpoint sets come from podnet's proxy code itself (`proxy.tracker` joins
Services with EndpointSlices as kube-proxy does, `proxy.iptables` names the chains), so the page names the
chains a node's `iptables-save` shows.
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from podnet.api.decode import DecodedSlice as ParsedSlice
from podnet.api.decode import decode_endpoint_slice as parse_endpoint_slice
from podnet.errors import ValidationError
from podnet.proxy.iptables import names as iptables
from podnet.proxy.topology import categorize_endpoints
from podnet.proxy.tracker import ParsedService, build_desired_state, parse_service

log = logging.getLogger(__name__)

BRIDGE = "cni0"  # the bridge the lab's CNI chain (podnet-flannel -> podnet-bridge) makes on every node
UDP_DEVICE = "flannel0"


@dataclass(frozen=True)
class LeaseFact:
    """A node's subnet lease as flannel stores it (the part the picture shows)."""

    subnet: str
    public_ip: str
    backend: str
    data: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class LabFacts:
    """What the lab knows and the API does not: its topology and flannel's view of the nodes."""

    name: str
    backend: str  # vxlan | udp | host-gw
    proxy_mode: str  # iptables | nftables
    underlay_cidr: str
    underlay_netns: str
    underlay_bridge: str
    underlay_gateway: str
    pod_network: str
    node_netns: Mapping[str, str] = field(default_factory=dict)  # node name -> its namespace
    node_ips: Mapping[str, str] = field(default_factory=dict)  # node name -> underlay address (topology)
    subnet_env: Mapping[str, str] = field(default_factory=dict)  # node name -> FLANNEL_SUBNET of subnet.env
    vni: int = 1
    udp_port: int = 8285
    vxlan_port: int = 8472
    leases: tuple[LeaseFact, ...] = ()


@dataclass(frozen=True)
class Overlay:
    """How a node reaches the other nodes' pod subnets."""

    kind: str  # vxlan | udp | host-gw
    device: str  # flannel.<VNI> | flannel0 | eth0 (host-gw routes straight over the underlay)
    address: str  # the device's address ("" for host-gw)
    detail: str  # one line: VNI, port, VtepMAC


@dataclass(frozen=True)
class PodView:
    namespace: str
    name: str
    node: str  # "" while unscheduled
    ip: str
    phase: str
    ready: bool
    terminating: bool

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class NodeView:
    name: str
    internal_ip: str
    netns: str
    subnet: str  # the pod subnet, e.g. 10.244.92.0/24 ("" until the node holds a lease)
    bridge: str  # cni0
    bridge_address: str  # the bridge's address: the subnet's first host (the pods' gateway)
    overlay: Overlay
    pods: tuple[PodView, ...]


@dataclass(frozen=True)
class EndpointView:
    address: str  # ip:port
    pod: str  # "ns/name" of the pod holding the address, "" if none does
    node: str
    ready: bool
    terminating: bool
    share: float  # the part of new connections kube-proxy sends here (0 when it gets none)
    chain: str  # KUBE-SEP-... ("" when the endpoint gets no chain)


@dataclass(frozen=True)
class PortView:
    name: str  # the Service port's name ("" when unnamed)
    protocol: str
    port: int
    node_port: int
    chain: str  # KUBE-SVC-... (KUBE-SVL-... for internalTrafficPolicy: Local); "" without endpoints
    endpoints: tuple[EndpointView, ...]


@dataclass(frozen=True)
class ServiceView:
    namespace: str
    name: str
    type: str
    cluster_ip: str
    external_ips: tuple[str, ...]
    load_balancer_ips: tuple[str, ...]
    ports: tuple[PortView, ...]

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass(frozen=True)
class LabView:
    name: str
    backend: str
    proxy_mode: str
    pod_network: str
    underlay_cidr: str
    underlay_netns: str
    underlay_bridge: str
    underlay_gateway: str
    nodes: tuple[NodeView, ...]
    services: tuple[ServiceView, ...]
    unscheduled: tuple[PodView, ...]  # pods with no node yet
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    def pods(self) -> list[PodView]:
        return [p for n in self.nodes for p in n.pods] + list(self.unscheduled)


# ---------------------------------------------------------------------------------------------------------
# Objects


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    m = obj.get("metadata")
    return m if isinstance(m, Mapping) else {}


def pod_view(obj: Mapping[str, Any]) -> PodView:
    meta = _meta(obj)
    spec = obj.get("spec") or {}
    status = obj.get("status") or {}
    conditions = status.get("conditions") or []
    ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions if isinstance(c, Mapping))
    return PodView(namespace=str(meta.get("namespace") or "default"), name=str(meta.get("name") or "?"),
                   node=str(spec.get("nodeName") or ""), ip=str(status.get("podIP") or ""),
                   phase=str(status.get("phase") or "Pending"), ready=ready,
                   terminating=bool(meta.get("deletionTimestamp")))


def _internal_ip(node: Mapping[str, Any]) -> str:
    for a in (node.get("status") or {}).get("addresses") or []:
        if isinstance(a, Mapping) and a.get("type") == "InternalIP":
            return str(a.get("address") or "")
    return ""


def _subnet_of(facts: LabFacts, name: str, ip: str) -> str:
    """The node's lease (by its public IP), else what its subnet.env says, else (spec.podCIDR) nothing."""
    for le in facts.leases:
        if le.public_ip == ip:
            return le.subnet
    env = facts.subnet_env.get(name, "")
    if env:
        try:
            return str(ipaddress.ip_interface(env).network)
        except ValueError:
            return ""
    return ""


def _lease_of(facts: LabFacts, ip: str) -> LeaseFact | None:
    return next((le for le in facts.leases if le.public_ip == ip), None)


def overlay_of(facts: LabFacts, subnet: str, lease: LeaseFact | None) -> Overlay:
    """The device flannel's backend gives the node (addresses as flannel assigns them)."""
    net = ipaddress.ip_network(subnet) if subnet else None
    if facts.backend == "vxlan":
        vni = int((lease.data.get("VNI") if lease else None) or facts.vni)
        mac = str(lease.data.get("VtepMAC") or "") if lease else ""
        detail = f"vxlan VNI {vni}, UDP {facts.vxlan_port}" + (f", VtepMAC {mac}" if mac else "")
        return Overlay("vxlan", f"flannel.{vni}", f"{net.network_address}/32" if net else "", detail)
    if facts.backend == "udp":
        pn = ipaddress.ip_network(facts.pod_network)
        return Overlay("udp", UDP_DEVICE, f"{net.network_address}/{pn.prefixlen}" if net else "",
                       f"udp: IP packets in UDP {facts.udp_port} (TUN {UDP_DEVICE})")
    return Overlay("host-gw", "eth0", "", "host-gw: other nodes' subnets routed via their eth0")


def node_views(facts: LabFacts, nodes: Iterable[Mapping[str, Any]], pods: Iterable[PodView]) -> tuple[NodeView, ...]:
    by_node: dict[str, list[PodView]] = {}
    for p in pods:
        by_node.setdefault(p.node, []).append(p)
    out = []
    for n in sorted(nodes, key=lambda n: _node_sort_key(str(_meta(n).get("name") or ""))):
        name = str(_meta(n).get("name") or "")
        ip = _internal_ip(n) or facts.node_ips.get(name, "")
        subnet = _subnet_of(facts, name, ip)
        bridge_addr = ""
        if subnet:
            net = ipaddress.ip_network(subnet)
            bridge_addr = f"{net.network_address + 1}/{net.prefixlen}"
        out.append(NodeView(name, ip, facts.node_netns.get(name, ""), subnet, BRIDGE, bridge_addr,
                            overlay_of(facts, subnet, _lease_of(facts, ip)),
                            tuple(sorted(by_node.get(name, ()), key=lambda p: (p.namespace, p.name)))))
    return tuple(out)


def _node_sort_key(name: str) -> tuple[str, int, str]:
    """node2 before node10."""
    stem = name.rstrip("0123456789")
    digits = name[len(stem):]
    return stem, int(digits) if digits else -1, name


def service_views(services: Iterable[Mapping[str, Any]], slices: Iterable[Mapping[str, Any]],
                  pods: Iterable[PodView]) -> tuple[tuple[ServiceView, ...], list[str]]:
    """Services with their ports, kube-proxy's chains and each endpoint's share, plus warnings for objects
    the proxy would skip (one bad object must not blank the picture)."""
    warnings: list[str] = []
    parsed: dict[str, ParsedService] = {}
    raw: dict[str, Mapping[str, Any]] = {}
    for s in services:
        ref = f"{_meta(s).get('namespace') or 'default'}/{_meta(s).get('name')}"
        raw[ref] = s
        try:
            parsed[ref] = parse_service(s)
        except ValidationError as e:
            warnings.append(f"Service {ref}: {e}")
    ok_slices: list[ParsedSlice] = []
    for sl in slices:
        try:
            ok_slices.append(parse_endpoint_slice(sl))
        except ValidationError as e:
            warnings.append(f"EndpointSlice {_meta(sl).get('namespace')}/{_meta(sl).get('name')}: {e}")
    # node_name "" is the cluster's view: no endpoint is local, so the Cluster set is what every node uses
    desired = build_desired_state(parsed.values(), ok_slices, "")
    by_service = desired.by_service()
    pod_by_ip = {p.ip: p for p in pods if p.ip}
    out = []
    for ref in sorted(raw):
        s = raw[ref]
        spec = s.get("spec") or {}
        ports = []
        for sp in by_service.get(ref, ()):
            cat = categorize_endpoints(sp, "")
            names = iptables.service_chains(sp)
            chain = (names.svl if sp.internal_policy_local else names.svc) if cat.has_any else ""
            cluster = {str(e) for e in cat.cluster}
            reachable = {str(e) for e in cat.reachable}
            eps = []
            for ep in sp.endpoints:
                key = str(ep)
                pod = pod_by_ip.get(ep.ip)
                eps.append(EndpointView(
                    address=key, pod=pod.ref if pod else "", node=ep.node_name or (pod.node if pod else ""),
                    ready=ep.ready, terminating=ep.terminating,
                    share=(1.0 / len(cluster)) if key in cluster else 0.0,
                    chain=iptables.endpoint_chain_name(str(sp.name), sp.protocol.lower(), key) if key in reachable else ""))
            ports.append(PortView(sp.name.port, sp.protocol, sp.port, sp.node_port, chain, tuple(eps)))
        ingress = ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        out.append(ServiceView(
            namespace=ref.split("/", 1)[0], name=ref.split("/", 1)[1], type=str(spec.get("type") or "ClusterIP"),
            cluster_ip=str(spec.get("clusterIP") or ""),
            external_ips=tuple(str(x) for x in spec.get("externalIPs") or []),
            load_balancer_ips=tuple(str(i.get("ip")) for i in ingress if isinstance(i, Mapping) and i.get("ip")),
            ports=tuple(ports) or tuple(_bare_ports(spec))))
    return tuple(out), warnings


def _bare_ports(spec: Mapping[str, Any]) -> list[PortView]:
    """Ports of a Service the proxy ignores (headless, ExternalName): shown, without chains."""
    out = []
    for p in spec.get("ports") or []:
        if isinstance(p, Mapping) and isinstance(p.get("port"), int):
            out.append(PortView(str(p.get("name") or ""), str(p.get("protocol") or "TCP"), p["port"],
                                int(p.get("nodePort") or 0), "", ()))
    return out


def build(facts: LabFacts, objects: Mapping[str, Iterable[Mapping[str, Any]]]) -> LabView:
    """The whole view. objects: {"Node": [...], "Pod": [...], "Service": [...], "EndpointSlice": [...]}."""
    pods = [pod_view(p) for p in objects.get("Pod", ())]
    nodes = node_views(facts, objects.get("Node", ()), pods)
    known = {n.name for n in nodes}
    unscheduled = tuple(sorted((p for p in pods if p.node not in known), key=lambda p: (p.namespace, p.name)))
    services, warnings = service_views(objects.get("Service", ()), objects.get("EndpointSlice", ()), pods)
    return LabView(facts.name, facts.backend, facts.proxy_mode, facts.pod_network, facts.underlay_cidr,
                   facts.underlay_netns, facts.underlay_bridge, facts.underlay_gateway, nodes, services,
                   unscheduled, tuple(warnings))
