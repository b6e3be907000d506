"""The proxy's decoding path: a Service, EndpointSlice or Node, reduced to the facts a proxy uses.

Objects may be the api/ models (anything with `model_dump`) or plain Kubernetes-shaped dicts (what the
informers and `yaml.safe_load` give), so kube-proxy's golden inputs load as they are. The models check
shapes at `podnet apply`; this path reads the same fields with the same defaults (api/defaults.py) straight
from the dicts, because a proxy decodes every Service and EndpointSlice of the cluster at each start and
going through pydantic costs several times as much at 10k services (benchmarks/proxy_decode.py).

A malformed object raises `ValidationError` naming the object and field; callers that sync a whole cluster
decode object by object and skip the bad ones. Everything here is pure.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NamedTuple

from podnet.api.defaults import (
    ADDRESS_TYPES,
    DEFAULT_ADDRESS_TYPE,
    DEFAULT_NAMESPACE,
    DEFAULT_PROTOCOL,
    DEFAULT_SERVICE_TYPE,
    DEFAULT_SESSION_AFFINITY,
    DEFAULT_SESSION_AFFINITY_TIMEOUT,
    DEFAULT_TRAFFIC_POLICY,
    IPV4,
    MAX_SESSION_AFFINITY_TIMEOUT,
    PROTOCOLS,
    SERVICE_NAME_LABEL,
    SERVICE_TYPES,
    SESSION_AFFINITIES,
    TRAFFIC_POLICIES,
    ZONE_LABEL,
)
from podnet.api.ipaddr import canonical_ip, ip_family_of, parse_cidr, parse_ip
from podnet.errors import Problem, ValidationError


def as_dict(obj: Any) -> dict[str, Any]:
    """A Kubernetes-shaped dict from a dict or a pydantic model (camelCase aliases)."""
    if isinstance(obj, Mapping):
        return dict(obj)
    dump = getattr(obj, "model_dump", None)
    if dump is not None:
        return dump(by_alias=True, exclude_none=True, mode="json")
    raise ValidationError([Problem("object", type(obj).__name__, "not a Kubernetes object")])


def obj_ref(kind: str, d: Mapping[str, Any]) -> str:
    meta = d.get("metadata") or {}
    if not isinstance(meta, Mapping):
        return kind
    return f"{kind}/{meta.get('namespace') or DEFAULT_NAMESPACE}/{meta.get('name') or '?'}"




class PortSpec(NamedTuple):
    """One entry of spec.ports, defaulted."""

    name: str  # "" when unnamed
    protocol: str
    port: int
    node_port: int  # 0 when none


@dataclass(frozen=True, slots=True)
class DecodedService:
    """A Service reduced to what a proxy uses, for one IP family."""

    namespace: str
    name: str
    cluster_ip: str  # of that family; "" for headless, ExternalName and services without one of that family
    ports: tuple[PortSpec, ...]  # empty when the proxy ignores the service (no cluster IP of the family)
    external_ips: tuple[str, ...] = ()  # this family only, order kept
    load_balancer_ips: tuple[str, ...] = ()  # VIP-mode ingress IPs of this family (ipMode: Proxy is skipped)
    load_balancer_source_ranges: tuple[str, ...] = ()  # trimmed, masked, this family only
    client_ip_affinity: bool = False
    sticky_max_age_seconds: int = 0
    external_policy_local: bool = False  # externally accessible and externalTrafficPolicy Local
    internal_policy_local: bool = False
    health_check_node_port: int = 0  # LoadBalancer with eTP Local only

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
class DecodedSlice:
    """An EndpointSlice reduced to what the proxy uses."""

    namespace: str
    name: str
    service: str  # the kubernetes.io/service-name label
    address_type: str
    ports: tuple[tuple[str, int, str], ...]  # (name, port, protocol)
    endpoints: tuple[SliceEndpoint, ...]


def _shared(v: Any) -> Any:
    """One copy of a recurring string (json.loads makes one per occurrence: 100k copies of a node name)."""
    return sys.intern(v) if type(v) is str else v or ""


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
        return DEFAULT_PROTOCOL
    if v not in PROTOCOLS:
        problems.append(Problem(path, v, "must be one of " + ", ".join(PROTOCOLS), ref))
        return DEFAULT_PROTOCOL
    return v


def _metadata(d: Mapping[str, Any], problems: list[Problem], ref: str) -> Mapping[str, Any]:
    """The object's metadata ({} when it is not a mapping); a missing name is a problem of its own."""
    meta = d.get("metadata")
    if not isinstance(meta, Mapping) or not meta.get("name"):
        problems.append(Problem("metadata.name", None, "is required", ref))
    return meta if isinstance(meta, Mapping) else {}


def _list(d: Mapping[str, Any], key: str, problems: list[Problem], ref: str, path: str) -> list[Any]:
    v = d.get(key)
    if v is None:
        return []
    if not isinstance(v, list):
        problems.append(Problem(f"{path}{key}", v, "must be a list", ref))
        return []
    return v



def decode_service(obj: Any, ip_family: str = IPV4) -> DecodedService:
    """Reduce a Service to its service ports for one IP family (kube-proxy's newBaseServiceInfo).

    Headless (clusterIP None/empty) and ExternalName services yield no ports; so does a service
    without a cluster IP of this family. Raises ValidationError naming every malformed field.
    """
    d = as_dict(obj)
    ref = obj_ref("Service", d)
    problems: list[Problem] = []
    meta = _metadata(d, problems, ref)
    namespace = meta.get("namespace") or DEFAULT_NAMESPACE
    name = meta.get("name") or ""
    spec = d.get("spec") or {}
    status = d.get("status") or {}
    if not isinstance(spec, Mapping):
        raise ValidationError([Problem("spec", spec, "must be a mapping", ref)])
    if not isinstance(status, Mapping):
        status = {}

    svc_type = _str(spec, "type", problems, ref, "spec.") or DEFAULT_SERVICE_TYPE
    if svc_type not in SERVICE_TYPES:
        problems.append(Problem("spec.type", svc_type, "must be ClusterIP, NodePort, LoadBalancer or ExternalName", ref))
    cluster_ip = _cluster_ip_for_family(spec, ip_family, problems, ref)

    ports_raw = _list(spec, "ports", problems, ref, "spec.")
    etp = _str(spec, "externalTrafficPolicy", problems, ref, "spec.") or DEFAULT_TRAFFIC_POLICY
    itp = _str(spec, "internalTrafficPolicy", problems, ref, "spec.") or DEFAULT_TRAFFIC_POLICY
    for fname, val in (("externalTrafficPolicy", etp), ("internalTrafficPolicy", itp)):
        if val not in TRAFFIC_POLICIES:
            problems.append(Problem(f"spec.{fname}", val, "must be Cluster or Local", ref))
    # apiservice.ExternallyAccessible: NodePort, LoadBalancer, or ClusterIP with externalIPs.
    accessible = svc_type in ("NodePort", "LoadBalancer") or (svc_type == "ClusterIP" and bool(spec.get("externalIPs")))
    external_local = accessible and etp == "Local"
    internal_local = itp == "Local"

    affinity = _str(spec, "sessionAffinity", problems, ref, "spec.") or DEFAULT_SESSION_AFFINITY
    if affinity not in SESSION_AFFINITIES:
        problems.append(Problem("spec.sessionAffinity", affinity, "must be None or ClientIP", ref))
    sticky = 0
    if affinity == "ClientIP":
        cfg = spec.get("sessionAffinityConfig") or {}
        client = cfg.get("clientIP") if isinstance(cfg, Mapping) else None
        timeout = client.get("timeoutSeconds") if isinstance(client, Mapping) else None
        sticky = DEFAULT_SESSION_AFFINITY_TIMEOUT if timeout is None else _int(
            timeout, problems, ref, "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 1,
            MAX_SESSION_AFFINITY_TIMEOUT,
        )

    external_ips = _ips_of_family(_list(spec, "externalIPs", problems, ref, "spec."), ip_family)
    ranges = _cidrs_of_family(_list(spec, "loadBalancerSourceRanges", problems, ref, "spec."), ip_family)
    lb_ips = _lb_vips(status, ip_family, problems, ref)
    hcnp = 0
    if svc_type == "LoadBalancer" and external_local:
        hcnp = _int(spec.get("healthCheckNodePort"), problems, ref, "spec.healthCheckNodePort")

    ports: list[PortSpec] = []
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
        ports.append(PortSpec(pname, proto, port, node_port))
    if problems:
        raise ValidationError(problems)
    if svc_type == "ExternalName" or cluster_ip is None:
        return DecodedService(namespace, name, "", ())
    return DecodedService(
        namespace, name, cluster_ip, tuple(ports),
        external_ips=external_ips,
        load_balancer_ips=lb_ips,
        load_balancer_source_ranges=ranges,
        client_ip_affinity=affinity == "ClientIP",
        sticky_max_age_seconds=sticky,
        external_policy_local=external_local,
        internal_policy_local=internal_local,
        health_check_node_port=hcnp,
    )


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
        canon = canonical_ip(text) if isinstance(text, str) else None  # parse_ip's answer, a tenth of the cost
        if canon is None:
            problems.append(Problem(path, text, "not an IP address", ref))
            return None
        if canon[1] == family:
            return canon[0]
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


_UNSET_OR_BOOL = frozenset({type(None), bool})


def _condition_problems(i: int, ready: Any, serving: Any, terminating: Any, problems: list[Problem], ref: str) -> None:
    for c, v in (("ready", ready), ("serving", serving), ("terminating", terminating)):
        if v is not None and type(v) is not bool:
            problems.append(Problem(f"endpoints[{i}].conditions.{c}", v, "must be true or false", ref))


def decode_endpoint_slice(obj: Any) -> DecodedSlice:
    """Reduce an EndpointSlice to ports and endpoint conditions (kube-proxy's newEndpointSliceInfo)."""
    d = as_dict(obj)
    ref = obj_ref("EndpointSlice", d)
    problems: list[Problem] = []
    meta = _metadata(d, problems, ref)
    labels = meta.get("labels") or {}
    service = labels.get(SERVICE_NAME_LABEL) if isinstance(labels, Mapping) else None
    if not service:
        problems.append(Problem(f"metadata.labels[{SERVICE_NAME_LABEL}]", None, "is required", ref))
    addr_type = d.get("addressType") or DEFAULT_ADDRESS_TYPE
    if addr_type not in ADDRESS_TYPES:
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
        if type(cond) is not dict and not isinstance(cond, Mapping):
            problems.append(Problem(f"endpoints[{i}].conditions", cond, "must be a mapping", ref))
            cond = _EMPTY
        ready, serving, terminating = cond.get("ready"), cond.get("serving"), cond.get("terminating")
        if not (type(ready) in _UNSET_OR_BOOL and type(serving) in _UNSET_OR_BOOL
                and type(terminating) in _UNSET_OR_BOOL):
            _condition_problems(i, ready, serving, terminating, problems, ref)
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
                _shared(e.get("nodeName")),  # a few node and zone names recur in every slice
                _shared(e.get("zone")),
                zone_hints,
                node_hints,
            )
        )
    if problems:
        raise ValidationError(problems)
    return DecodedSlice(
        namespace=meta.get("namespace") or DEFAULT_NAMESPACE,
        name=meta.get("name") or "",
        service=service or "",
        address_type=addr_type,
        ports=tuple(ports),
        endpoints=tuple(endpoints),
    )


def decode_node(obj: Any) -> tuple[str, str, tuple[str, ...]]:
    """(name, zone label, podCIDRs) of a Node object."""
    d = as_dict(obj)
    meta = d.get("metadata") or {}
    spec = d.get("spec") or {}
    labels = meta.get("labels") or {}
    cidrs = spec.get("podCIDRs") or ([spec["podCIDR"]] if spec.get("podCIDR") else [])
    return meta.get("name") or "", labels.get(ZONE_LABEL, ""), tuple(cidrs)

