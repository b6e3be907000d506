"""What the cluster wants from this node's proxy, per service port.

This is podnet's counterpart of kube-proxy's change trackers (`serviceport.go`, `endpointslicecache.go`,
`topology.go`): Services and EndpointSlices go in, an immutable `DesiredState` keyed by
`ServicePortName` comes out. Renderers (`iptables.py`, later `nftables.py`) only read it, so a new
backend never touches this module, and the same facts feed `describe`, conntrack cleanup and tests.

Everything here is pure. Objects may be pydantic models (anything with `model_dump`) or plain
Kubernetes-shaped dicts (what `yaml.safe_load` gives), so kube-proxy's golden inputs load as they are.
A malformed object raises `ValidationError` naming the object and field; callers that sync a whole
cluster parse object by object (`parse_service`, `parse_endpoint_slice`) and skip the bad ones.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any, NamedTuple

from podnet.api.defaults import (
    DEFAULT_SESSION_AFFINITY_TIMEOUT as DEFAULT_STICKY_SECONDS,
)
from podnet.api.defaults import (
    IPV4,
    IPV6,
    PROTOCOLS,
    SERVICE_NAME_LABEL,
    ZONE_LABEL,
)
from podnet.errors import Problem, ValidationError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


# ---------------------------------------------------------------------------------------------
# Addresses, parsed the way Kubernetes does ("sloppy": IPv4 octets may carry leading zeros and are
# read as decimal, e.g. 10.180.00.001 == 10.180.0.1; kube-proxy's TestBadIPs relies on it).
# ---------------------------------------------------------------------------------------------


def parse_ip(text: str) -> IPAddress | None:
    """Parse an IP like Go's netutils.ParseIPSloppy; None when it is not an IP."""
    if not isinstance(text, str) or not text:
        return None
    if ":" not in text:
        parts = text.split(".")
        if len(parts) != 4 or not all(p.isascii() and p.isdigit() and 0 < len(p) <= 3 for p in parts):
            return None
        octets = [int(p) for p in parts]
        if any(o > 255 for o in octets):
            return None
        return ipaddress.IPv4Address(bytes(octets))
    try:
        ip6 = ipaddress.IPv6Address(text)
    except ValueError:
        return None
    # Go treats IPv4-mapped IPv6 addresses as IPv4 (To4() != nil).
    return ip6.ipv4_mapped or ip6


@lru_cache(maxsize=1 << 18)
def canonical_ip(text: str) -> tuple[str, str] | None:
    """(canonical text, family) of an IP parsed sloppily; cached, since endpoint IPs recur every sync."""
    if type(text) is not str:
        return None
    if ":" not in text:
        parts = text.split(".")
        if len(parts) != 4:
            return None
        for p in parts:
            if not (0 < len(p) <= 3 and p.isascii() and p.isdigit()) or int(p) > 255:
                return None
        if all(len(p) == 1 or p[0] != "0" for p in parts):
            return text, IPV4
        return ".".join(str(int(p)) for p in parts), IPV4
    ip = parse_ip(text)
    return None if ip is None else (str(ip), ip_family_of(ip))


def parse_cidr(text: str) -> IPNetwork | None:
    """Parse a CIDR like Go's ParseCIDRSloppy: host bits are masked off (1.2.3.4/24 -> 1.2.3.0/24)."""
    if not isinstance(text, str) or "/" not in text:
        return None
    addr, _, plen = text.partition("/")
    ip = parse_ip(addr) if ":" not in addr else _parse_ipv6_only(addr)
    if ip is None or not plen.isascii() or not plen.isdigit() or len(plen) > 3:
        return None
    bits = int(plen)
    if bits > ip.max_prefixlen:
        return None
    return ipaddress.ip_network(f"{ip}/{bits}", strict=False)


def _parse_ipv6_only(text: str) -> ipaddress.IPv6Address | None:
    try:
        return ipaddress.IPv6Address(text)
    except ValueError:
        return None


def ip_family_of(ip: IPAddress | IPNetwork) -> str:
    return IPV4 if ip.version == 4 else IPV6


def join_host_port(ip: str, port: int) -> str:
    """net.JoinHostPort: IPv6 addresses get brackets."""
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


# ---------------------------------------------------------------------------------------------
# The desired state
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True, order=True)
class ServicePortName:
    """kube-proxy's ServicePortName: namespace/name + port name + protocol."""

    namespace: str
    name: str
    port: str  # the Service port's name; "" when unnamed
    protocol: str = "TCP"

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


# ---------------------------------------------------------------------------------------------
# Endpoint categorisation (kube-proxy's CategorizeEndpoints)
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Categorized:
    cluster: tuple[Endpoint, ...]  # endpoints for "Cluster" policy (empty if never used)
    local: tuple[Endpoint, ...]  # endpoints for "Local" policy (empty if never used)
    reachable: tuple[Endpoint, ...]  # union of both, sorted: these get KUBE-SEP chains
    has_any: bool  # usable endpoints exist somewhere in the cluster


def categorize_endpoints(
    sp: ServicePort, node_name: str, zone: str = "", *, prefer_same_node: bool = False
) -> Categorized:
    """Split a service port's endpoints into the Cluster and Local sets kube-proxy would use.

    Usable means Ready; if none are, Serving+Terminating ones are used instead (independently for
    the Cluster and the Local set) so rolling updates drain instead of blackholing. Topology hints
    narrow the Cluster set when every ready endpoint carries one and one matches this node/zone.
    `prefer_same_node` is the PreferSameTrafficDistribution feature gate (off in v1.33).
    """
    eps = sp.endpoints
    if not eps:
        return Categorized((), (), (), False)
    cluster: tuple[Endpoint, ...] = ()
    local: tuple[Endpoint, ...] = ()
    has_any = False
    mode = ""
    serving_terminating_local = False
    if sp.uses_cluster_endpoints:
        mode = _topology_mode(eps, node_name, zone, prefer_same_node)
        cluster = tuple(e for e in eps if e.ready and _available(e, mode, node_name, zone))
        if not cluster:
            cluster = tuple(e for e in eps if e.serving and e.terminating)
        has_any = bool(cluster)
    if not sp.uses_local_endpoints:
        return Categorized(cluster, (), cluster, has_any)

    local_ready = local_st = False
    for e in eps:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.local
        elif e.serving and e.terminating:
            has_any = True
            local_st = local_st or e.local
    if local_ready:
        local = tuple(e for e in eps if e.local and e.ready)
    elif local_st:
        serving_terminating_local = True
        local = tuple(e for e in eps if e.local and e.serving and e.terminating)

    if not sp.uses_cluster_endpoints:
        return Categorized((), local, local, has_any)
    if mode == "" and not serving_terminating_local:
        return Categorized(cluster, local, cluster, has_any)
    merged = {str(e): e for e in cluster}
    merged.update({str(e): e for e in local})
    reachable = tuple(merged[k] for k in sorted(merged))
    return Categorized(cluster, local, reachable, has_any)


def _topology_mode(eps: tuple[Endpoint, ...], node: str, zone: str, prefer_same_node: bool) -> str:
    ready = [e for e in eps if e.ready]
    if not ready:
        return ""
    if prefer_same_node and all(e.node_hints for e in ready):
        if any(node in e.node_hints for e in ready):
            return "PreferSameNode"
    if all(e.zone_hints for e in ready) and any(zone in e.zone_hints for e in ready):
        return "PreferSameZone"
    return ""


def _available(e: Endpoint, mode: str, node: str, zone: str) -> bool:
    if mode == "":
        return True
    if mode == "PreferSameNode":
        return node in e.node_hints
    return zone in e.zone_hints


# ---------------------------------------------------------------------------------------------
# Parsing Kubernetes objects
# ---------------------------------------------------------------------------------------------


def as_dict(obj: Any) -> dict[str, Any]:
    """A Kubernetes-shaped dict from a dict or a pydantic model (camelCase aliases)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(by_alias=True, exclude_none=True, mode="json")
    raise ValidationError([Problem("object", type(obj).__name__, "not a Kubernetes object")])


def _obj_ref(kind: str, d: Mapping[str, Any]) -> str:
    meta = d.get("metadata") or {}
    if not isinstance(meta, Mapping):
        return kind
    return f"{kind}/{meta.get('namespace') or 'default'}/{meta.get('name') or '?'}"


@dataclass(frozen=True, slots=True)
class ParsedService:
    """A Service reduced to what the proxy uses, before endpoints are attached."""

    namespace: str
    name: str
    ports: tuple[ServicePort, ...]  # without endpoints; empty when the service is ignored

    @property
    def namespaced_name(self) -> str:
        return f"{self.namespace}/{self.name}"


class SliceEndpoint(NamedTuple):
    address: str  # canonical IP text, "" when the first address is not an IP
    family: str  # IPv4 / IPv6 of that address
    ready: bool
    serving: bool
    terminating: bool
    node_name: str
    zone: str
    zone_hints: frozenset[str]
    node_hints: frozenset[str]


@dataclass(frozen=True, slots=True)
class ParsedSlice:
    """An EndpointSlice reduced to what the proxy uses."""

    namespace: str
    name: str
    service: str  # the kubernetes.io/service-name label
    address_type: str
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)
    endpoints: tuple[SliceEndpoint, ...]


def _str(d: Mapping[str, Any], key: str, problems: list[Problem], ref: str, path: str) -> str:
    v = d.get(key)
    if v is None:
        return ""
    if not isinstance(v, str):
        problems.append(Problem(f"{path}{key}", v, "must be a string", ref))
        return ""
    return v


def _int(v: Any, problems: list[Problem], ref: str, path: str, lo: int = 0, hi: int = 65535) -> int:
    if v is None:
        return 0
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        problems.append(Problem(path, v, f"must be an integer in {lo}..{hi}", ref))
        return 0
    return v


def _protocol(v: Any, problems: list[Problem], ref: str, path: str) -> str:
    if v is None:
        return "TCP"
    if v not in PROTOCOLS:
        problems.append(Problem(path, v, "must be one of TCP, UDP, SCTP", ref))
        return "TCP"
    return v


def _list(d: Mapping[str, Any], key: str, problems: list[Problem], ref: str, path: str) -> list[Any]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        problems.append(Problem(f"{path}{key}", v, "must be a list", ref))
        return []
    return v


def parse_service(obj: Any, ip_family: str = IPV4) -> ParsedService:
    """Reduce a Service to its service ports for one IP family (kube-proxy's newBaseServiceInfo).

    Headless (clusterIP None/empty) and ExternalName services yield no ports; so does a service
    without a cluster IP of this family. Raises ValidationError naming every malformed field.
    """
    d = as_dict(obj)
    ref = _obj_ref("Service", d)
    problems: list[Problem] = []
    meta = d.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        problems.append(Problem("metadata.name", None, "is required", ref))
        meta = meta if isinstance(meta, Mapping) else {}
    namespace = meta.get("namespace") or "default"
    name = meta.get("name") or ""
    spec = d.get("spec") or {}
    status = d.get("status") or {}
    if not isinstance(spec, Mapping):
        raise ValidationError([Problem("spec", spec, "must be a mapping", ref)])
    if not isinstance(status, Mapping):
        status = {}

    svc_type = _str(spec, "type", problems, ref, "spec.") or "ClusterIP"
    if svc_type not in ("ClusterIP", "NodePort", "LoadBalancer", "ExternalName"):
        problems.append(Problem("spec.type", svc_type, "must be ClusterIP, NodePort, LoadBalancer or ExternalName", ref))
    cluster_ip = _cluster_ip_for_family(spec, ip_family, problems, ref)

    ports_raw = _list(spec, "ports", problems, ref, "spec.")
    etp = _str(spec, "externalTrafficPolicy", problems, ref, "spec.") or "Cluster"
    itp = _str(spec, "internalTrafficPolicy", problems, ref, "spec.") or "Cluster"
    for fname, val in (("externalTrafficPolicy", etp), ("internalTrafficPolicy", itp)):
        if val not in ("Cluster", "Local"):
            problems.append(Problem(f"spec.{fname}", val, "must be Cluster or Local", ref))
    # apiservice.ExternallyAccessible: NodePort, LoadBalancer, or ClusterIP with externalIPs.
    accessible = svc_type in ("NodePort", "LoadBalancer") or (svc_type == "ClusterIP" and bool(spec.get("externalIPs")))
    external_local = accessible and etp == "Local"
    internal_local = itp == "Local"

    affinity = _str(spec, "sessionAffinity", problems, ref, "spec.") or "None"
    if affinity not in ("None", "ClientIP"):
        problems.append(Problem("spec.sessionAffinity", affinity, "must be None or ClientIP", ref))
    sticky = 0
    if affinity == "ClientIP":
        cfg = spec.get("sessionAffinityConfig") or {}
        client = cfg.get("clientIP") if isinstance(cfg, Mapping) else None
        timeout = client.get("timeoutSeconds") if isinstance(client, Mapping) else None
        sticky = DEFAULT_STICKY_SECONDS if timeout is None else _int(
            timeout, problems, ref, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1, 86400
        )

    external_ips = _ips_of_family(_list(spec, "externalIPs", problems, ref, "spec."), ip_family)
    ranges = _cidrs_of_family(_list(spec, "loadBalancerSourceRanges", problems, ref, "spec."), ip_family)
    lb_ips = _lb_vips(status, ip_family, problems, ref)
    hcnp = 0
    if svc_type == "LoadBalancer" and external_local:
        hcnp = _int(spec.get("healthCheckNodePort"), problems, ref, "spec.healthCheckNodePort")

    ports: list[ServicePort] = []
    seen: set[tuple[str, str]] = set()
    for i, p in enumerate(ports_raw):
        path = f"spec.ports[{i}]"
        if not isinstance(p, Mapping):
            problems.append(Problem(path, p, "must be a mapping", ref))
            continue
        pname = _str(p, "name", problems, ref, f"{path}.")
        proto = _protocol(p.get("protocol"), problems, ref, f"{path}.protocol")
        port = _int(p.get("port"), problems, ref, f"{path}.port", 1, 65535)
        if p.get("port") is None:
            problems.append(Problem(f"{path}.port", None, "is required", ref))
        node_port = _int(p.get("nodePort"), problems, ref, f"{path}.nodePort")
        if (pname, proto) in seen:
            problems.append(Problem(f"{path}.name", pname, f"duplicate port name for protocol {proto}", ref))
        seen.add((pname, proto))
        if cluster_ip is None:
            continue
        ports.append(
            ServicePort(
                name=ServicePortName(namespace, name, pname, proto),
                cluster_ip=cluster_ip,
                port=port,
                node_port=node_port,
                external_ips=external_ips,
                load_balancer_ips=lb_ips,
                load_balancer_source_ranges=ranges,
                client_ip_affinity=affinity == "ClientIP",
                sticky_max_age_seconds=sticky,
                external_policy_local=external_local,
                internal_policy_local=internal_local,
                health_check_node_port=hcnp,
            )
        )
    if problems:
        raise ValidationError(problems)
    if svc_type == "ExternalName" or cluster_ip is None:
        return ParsedService(namespace, name, ())
    return ParsedService(namespace, name, tuple(ports))


def _cluster_ip_for_family(spec: Mapping[str, Any], family: str, problems: list[Problem], ref: str) -> str | None:
    """GetClusterIPByFamily: clusterIPs[i] where ipFamilies[i] == family, else clusterIP if it fits."""
    families = spec.get("ipFamilies") or []
    ips = spec.get("clusterIPs") or []
    candidates: list[tuple[str, str]] = []
    if families and ips and isinstance(families, list) and isinstance(ips, list):
        candidates = [(f"spec.clusterIPs[{i}]", ips[i]) for i, f in enumerate(families) if f == family and i < len(ips)]
    else:
        cip = spec.get("clusterIP")
        if cip is None and isinstance(ips, list) and ips:
            cip = ips[0]
        if cip not in (None, "", "None"):
            candidates = [("spec.clusterIP", cip)]
    for path, text in candidates:
        if text in ("", "None"):
            return None
        ip = parse_ip(text) if isinstance(text, str) else None
        if ip is None:
            problems.append(Problem(path, text, "not an IP address", ref))
            return None
        if ip_family_of(ip) == family:
            return str(ip)
    return None


def _ips_of_family(values: list[Any], family: str) -> tuple[str, ...]:
    # MapIPsByIPFamily: unparseable entries are dropped, others filtered by family, order kept.
    out = []
    for v in values:
        ip = parse_ip(v) if isinstance(v, str) else None
        if ip is not None and ip_family_of(ip) == family:
            out.append(str(ip))
    return tuple(out)


def _cidrs_of_family(values: list[Any], family: str) -> tuple[str, ...]:
    # loadBalancerSourceRanges validation historically allowed whitespace padding: trim it.
    out = []
    for v in values:
        net = parse_cidr(v.strip()) if isinstance(v, str) else None
        if net is not None and ip_family_of(net) == family:
            out.append(str(net))
    return tuple(out)


def _lb_vips(status: Mapping[str, Any], family: str, problems: list[Problem], ref: str) -> tuple[str, ...]:
    lb = status.get("loadBalancer") or {}
    ingress = lb.get("ingress") if isinstance(lb, Mapping) else None
    if not isinstance(ingress, list):
        return ()
    out = []
    for i, ing in enumerate(ingress):
        if not isinstance(ing, Mapping) or not ing.get("ip"):
            continue
        if ing.get("ipMode") not in (None, "VIP"):
            continue  # ipMode Proxy: the LB proxies itself, traffic must really go through it
        ip = parse_ip(ing["ip"]) if isinstance(ing["ip"], str) else None
        if ip is None:
            problems.append(Problem(f"status.loadBalancer.ingress[{i}].ip", ing["ip"], "not an IP address", ref))
            continue
        if ip_family_of(ip) == family:
            out.append(str(ip))
    return tuple(out)


_EMPTY: Mapping[str, Any] = {}
_NO_HINTS: frozenset[str] = frozenset()


def _hint_names(entries: Any) -> frozenset[str]:
    if not isinstance(entries, list):
        return _NO_HINTS
    return frozenset(h["name"] for h in entries if isinstance(h, Mapping) and isinstance(h.get("name"), str))


def parse_endpoint_slice(obj: Any) -> ParsedSlice:
    """Reduce an EndpointSlice to ports and endpoint conditions (kube-proxy's newEndpointSliceInfo)."""
    d = as_dict(obj)
    ref = _obj_ref("EndpointSlice", d)
    problems: list[Problem] = []
    meta = d.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        problems.append(Problem("metadata.name", None, "is required", ref))
        meta = meta if isinstance(meta, Mapping) else {}
    labels = meta.get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None
    if not service:
        problems.append(Problem(f"metadata.labels[{SERVICE_NAME_LABEL}]", None, "is required", ref))
    addr_type = d.get("addressType") or IPV4
    if addr_type not in (IPV4, IPV6, "FQDN"):
        problems.append(Problem("addressType", addr_type, "must be IPv4, IPv6 or FQDN", ref))

    ports: list[tuple[str, int, str]] = []
    for i, p in enumerate(_list(d, "ports", problems, ref, "")):
        path = f"ports[{i}]"
        if not isinstance(p, Mapping):
            problems.append(Problem(path, p, "must be a mapping", ref))
            continue
        # The API server defaults a missing port name to "" (SetDefaults_EndpointPort).
        pname = p.get("name") or ""
        if not isinstance(pname, str):
            problems.append(Problem(f"{path}.name", pname, "must be a string", ref))
            continue
        port = _int(p.get("port"), problems, ref, f"{path}.port")
        proto = _protocol(p.get("protocol"), problems, ref, f"{path}.protocol")
        if port:
            ports.append((pname, port, proto))

    endpoints: list[SliceEndpoint] = []
    for i, e in enumerate(_list(d, "endpoints", problems, ref, "")):
        if type(e) is not dict and not isinstance(e, Mapping):
            problems.append(Problem(f"endpoints[{i}]", e, "must be a mapping", ref))
            continue
        addrs = e.get("addresses")
        if not addrs:
            continue
        if type(addrs) is not list or type(addrs[0]) is not str or (
            len(addrs) > 1 and not all(type(a) is str for a in addrs)
        ):
            problems.append(Problem(f"endpoints[{i}].addresses", addrs, "must be a list of strings", ref))
            continue
        cond = e.get("conditions") or _EMPTY
        if not isinstance(cond, Mapping):
            problems.append(Problem(f"endpoints[{i}].conditions", cond, "must be a mapping", ref))
            cond = _EMPTY
        ready, serving, terminating = cond.get("ready"), cond.get("serving"), cond.get("terminating")
        for c, v in (("ready", ready), ("serving", serving), ("terminating", terminating)):
            if v is not None and type(v) is not bool:
                problems.append(Problem(f"endpoints[{i}].conditions.{c}", v, "must be true or false", ref))
        zone_hints = node_hints = _NO_HINTS
        hints = e.get("hints")
        if hints:
            if not isinstance(hints, Mapping):
                problems.append(Problem(f"endpoints[{i}].hints", hints, "must be a mapping", ref))
            else:
                zone_hints, node_hints = _hint_names(hints.get("forZones")), _hint_names(hints.get("forNodes"))
        canon = canonical_ip(addrs[0])
        endpoints.append(
            SliceEndpoint(
                canon[0] if canon else "",
                canon[1] if canon else "",
                ready is not False,
                serving is not False,
                terminating is True,
                e.get("nodeName") or "",
                e.get("zone") or "",
                zone_hints,
                node_hints,
            )
        )
    if problems:
        raise ValidationError(problems)
    return ParsedSlice(
        namespace=meta.get("namespace") or "default",
        name=meta.get("name") or "",
        service=service or "",
        address_type=addr_type,
        ports=tuple(ports),
        endpoints=tuple(endpoints),
    )


def parse_node(obj: Any) -> tuple[str, str, tuple[str, ...]]:
    """(name, zone label, podCIDRs) of a Node object."""
    d = as_dict(obj)
    meta = d.get("metadata") or {}
    spec = d.get("spec") or {}
    labels = meta.get("labels") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return meta.get("name") or "", labels.get(ZONE_LABEL, ""), tuple(cidrs)


# ---------------------------------------------------------------------------------------------
# Building the desired state
# ---------------------------------------------------------------------------------------------


def service_port_order(name: ServicePortName) -> tuple[str, str]:
    """Sort key of service ports in a DesiredState (deterministic output order)."""
    return str(name), name.protocol


def _service_endpoints(
    svc: ParsedService, slices: Iterable[ParsedSlice], node_name: str, ip_family: str
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
    slices: Iterable[ParsedSlice],
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
    by_service: dict[str, list[ParsedSlice]] = {}
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
    slices: list[ParsedSlice] = []
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
                slices.append(parse_endpoint_slice(d))
            elif kind == "Node":
                name, z, cidrs = parse_node(d)
                if name == node_name:
                    zone, pod_cidrs = z, cidrs
        except ValidationError as e:
            problems.extend(e.problems)
    if problems:
        raise ValidationError(problems)
    return build_desired_state(
        services, slices, node_name, ip_family=ip_family, topology_zone=zone, node_pod_cidrs=pod_cidrs
    )
