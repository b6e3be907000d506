"""Kubernetes' validation rules for the kinds podnet knows, reporting every problem at once.

The rules and messages follow the API server's (k8s.io/apimachinery validation and
pkg/apis/core/validation): DNS-1123/1035 names, qualified label keys, port and protocol ranges,
IANA service names for named ports, IP and CIDR syntax. Checks that depend on cluster configuration
(service CIDR, node port range) and on what is already allocated belong to controllers/allocators.py.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterable
from typing import Any

from podnet.api import defaults
from podnet.api.cluster import ConfigMap, Event, Namespace
from podnet.api.deployment import Deployment
from podnet.api.endpointslice import EndpointSlice
from podnet.api.meta import Resource
from podnet.api.node import Node
from podnet.api.pod import Container, Pod, PodSpec
from podnet.api.service import Service
from podnet.api.statefulset import ON_DELETE, ORDERED_READY, PARALLEL, ROLLING_UPDATE, StatefulSet
from podnet.errors import Problem

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_QUALIFIED_NAME = re.compile(r"^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$")
_IANA_SVC_NAME = re.compile(r"^[-a-z0-9]+$")

PROTOCOLS = tuple(sorted(defaults.PROTOCOLS))  # listed sorted in messages, as Kubernetes does
SERVICE_TYPES = defaults.SERVICE_TYPES
TRAFFIC_POLICIES = defaults.TRAFFIC_POLICIES
MAX_SESSION_TIMEOUT = defaults.MAX_SESSION_AFFINITY_TIMEOUT


def dns1123_label(value: str) -> str | None:
    """None if valid, else the reason (Kubernetes' wording)."""
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _DNS1123_LABEL.match(value):
        return ("a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', "
                "and must start and end with an alphanumeric character")
    return None


def dns1123_subdomain(value: str) -> str | None:
    if len(value) > 253:
        return "must be no more than 253 characters"
    if not _DNS1123_SUBDOMAIN.match(value):
        return ("a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' "
                "or '.', and must start and end with an alphanumeric character")
    return None


def dns1035_label(value: str) -> str | None:
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _DNS1035_LABEL.match(value):
        return ("a DNS-1035 label must consist of lower case alphanumeric characters or '-', start with an "
                "alphabetic character, and end with an alphanumeric character")
    return None


def qualified_name(value: str) -> str | None:
    """A label/annotation key: optional DNS subdomain prefix and '/', then a name of <= 63 characters."""
    prefix, sep, name = value.rpartition("/")
    if sep:
        if not prefix:
            return "prefix part must be non-empty"
        if reason := dns1123_subdomain(prefix):
            return f"prefix part {reason}"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(name):
        return ("name part must consist of alphanumeric characters, '-', '_' or '.', and must start and "
                "end with an alphanumeric character")
    return None


def label_value(value: str) -> str | None:
    if value == "":
        return None
    if len(value) > 63:
        return "must be no more than 63 characters"
    if not _QUALIFIED_NAME.match(value):
        return ("a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or "
                "'.', and must start and end with an alphanumeric character")
    return None


def iana_svc_name(value: str) -> str | None:
    """Named ports: at most 15 characters, lowercase letters/digits/'-', at least one letter."""
    if len(value) > 15:
        return "must be no more than 15 characters"
    if not _IANA_SVC_NAME.match(value):
        return "must contain only alpha-numeric characters (a-z, 0-9), and hyphens (-)"
    if "--" in value:
        return "must not contain consecutive hyphens"
    if not re.search(r"[a-z]", value):
        return "must contain at least one letter (a-z)"
    if value.startswith("-") or value.endswith("-"):
        return "must not begin or end with a hyphen"
    return None


def ip_reason(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return "must be a valid IP address, (e.g. 10.9.8.7 or 2001:db8::ffff)"
    return None


def cidr_reason(value: str) -> str | None:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        return "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
    if "/" not in value:
        return "must be a valid CIDR value, (e.g. 10.9.8.0/24 or 2001:db8::/64)"
    return None


class _Checker:
    """Collects problems for one object; field paths are kubectl's (spec.ports[0].port)."""

    def __init__(self, obj: str) -> None:
        self.obj = obj
        self.problems: list[Problem] = []

    def add(self, field: str, value: object, reason: str) -> None:
        self.problems.append(Problem(field=field, value=value, reason=reason, obj=self.obj))

    def required(self, field: str) -> None:
        self.add(field, None, "Required value")

    def check(self, field: str, value: object, reason: str | None) -> None:
        if reason:
            self.add(field, value, reason)

    def one_of(self, field: str, value: str | None, allowed: Iterable[str]) -> None:
        allowed = list(allowed)
        if value not in allowed:
            self.add(field, value, "Unsupported value: supported values: " + ", ".join(f'"{a}"' for a in allowed))

    def port(self, field: str, value: int | None, *, allow_zero: bool = False) -> None:
        if value is None:
            return
        low = 0 if allow_zero else 1
        if not low <= value <= 65535:
            self.add(field, value, f"must be between {low} and 65535, inclusive")

    def labels(self, field: str, labels: dict[str, str]) -> None:
        for k, v in labels.items():
            self.check(f"{field}", k, qualified_name(k))
            self.check(f"{field}", v, label_value(v))

    def annotations(self, field: str, annotations: dict[str, str]) -> None:
        for k in annotations:
            self.check(field, k, qualified_name(k))
        if sum(len(k) + len(v) for k, v in annotations.items()) > 256 * 1024:
            self.add(field, None, "Too long: must have at most 262144 bytes")


def _metadata(c: _Checker, obj: Resource, name_rule: Callable[[str], str | None]) -> None:
    m = obj.metadata
    if not m.name:
        c.required("metadata.name")
    else:
        c.check("metadata.name", m.name, name_rule(m.name))
    if obj.NAMESPACED and m.namespace:
        c.check("metadata.namespace", m.namespace, dns1123_label(m.namespace))
    c.labels("metadata.labels", m.labels)
    c.annotations("metadata.annotations", m.annotations)


def validate_service(svc: Service) -> list[Problem]:
    c = _Checker(svc.ref)
    _metadata(c, svc, dns1035_label)
    s = svc.spec
    c.one_of("spec.type", s.type, SERVICE_TYPES)
    headless = s.cluster_ip == "None"
    external_name = s.type == "ExternalName"
    if not s.ports and not headless and not external_name:
        c.required("spec.ports")
    if external_name:
        _external_name(c, svc)

    names: set[str] = set()
    seen_ports: set[tuple[int, str]] = set()
    seen_node_ports: set[tuple[int, str]] = set()
    for i, p in enumerate(s.ports):
        f = f"spec.ports[{i}]"
        if not p.name:
            if len(s.ports) > 1:
                c.required(f"{f}.name")
        else:
            c.check(f"{f}.name", p.name, dns1123_label(p.name))
            if p.name in names:
                c.add(f"{f}.name", p.name, "Duplicate value")
            names.add(p.name)
        c.one_of(f"{f}.protocol", p.protocol, PROTOCOLS)
        c.port(f"{f}.port", p.port)
        if (p.port, p.protocol) in seen_ports:
            c.add(f, f"{p.port}/{p.protocol}", "Duplicate value")
        seen_ports.add((p.port, p.protocol))
        tp = p.target_port
        if isinstance(tp, int):
            c.port(f"{f}.targetPort", tp, allow_zero=True)  # 0 is defaulted to the port
        elif isinstance(tp, str) and tp != "":
            c.check(f"{f}.targetPort", tp, iana_svc_name(tp))
        if p.node_port:
            if s.type == "ClusterIP":
                c.add(f"{f}.nodePort", p.node_port, "may not be used when `type` is 'ClusterIP'")
            else:
                c.port(f"{f}.nodePort", p.node_port)
                if (p.node_port, p.protocol) in seen_node_ports:
                    c.add(f"{f}.nodePort", p.node_port, "Duplicate value")
                seen_node_ports.add((p.node_port, p.protocol))
        elif p.node_port is not None and p.node_port < 0:
            c.port(f"{f}.nodePort", p.node_port)

    if s.cluster_ip not in (None, "", "None"):
        c.check("spec.clusterIP", s.cluster_ip, ip_reason(s.cluster_ip))
    if headless and s.type in ("NodePort", "LoadBalancer"):
        c.add("spec.clusterIP", s.cluster_ip, f"may not be set to 'None' for {s.type} services")
    for i, ip in enumerate(s.cluster_ips):
        if ip != "None":
            c.check(f"spec.clusterIPs[{i}]", ip, ip_reason(ip))
    # how clusterIP, clusterIPs and ipFamilies agree depends on the stored object (a write may leave them
    # out): controllers/ipfamilies.py checks that, as the API server's registry does
    for i, ip in enumerate(s.external_ips):
        reason = ip_reason(ip)
        if not reason:
            a = ipaddress.ip_address(ip)
            if a.is_unspecified or a.is_loopback or a.is_link_local or a.is_multicast:
                reason = "may not be unspecified, loopback, link-local or multicast"
        c.check(f"spec.externalIPs[{i}]", ip, reason)

    c.one_of("spec.sessionAffinity", s.session_affinity, ("ClientIP", "None"))
    cfg = s.session_affinity_config
    timeout = cfg.client_ip.timeout_seconds if cfg and cfg.client_ip else None
    if s.session_affinity == "ClientIP" and timeout is not None and not 0 < timeout <= MAX_SESSION_TIMEOUT:
        c.add("spec.sessionAffinityConfig.clientIP.timeoutSeconds", timeout,
              f"must be greater than 0 and less than {MAX_SESSION_TIMEOUT}")
    if s.session_affinity == "None" and cfg and cfg.client_ip:
        c.add("spec.sessionAffinityConfig", None, "must not be set when session affinity is None")

    externally = s.type in ("NodePort", "LoadBalancer") or (s.type == "ClusterIP" and bool(s.external_ips))
    if s.external_traffic_policy is not None and s.external_traffic_policy != "":
        if not externally:
            c.add("spec.externalTrafficPolicy", s.external_traffic_policy,
                  "may only be set for externally-accessible services")
        else:
            c.one_of("spec.externalTrafficPolicy", s.external_traffic_policy, TRAFFIC_POLICIES)
    if s.internal_traffic_policy:
        c.one_of("spec.internalTrafficPolicy", s.internal_traffic_policy, TRAFFIC_POLICIES)
    if s.load_balancer_class is not None:
        if s.type != "LoadBalancer":
            c.add("spec.loadBalancerClass", s.load_balancer_class, "may only be used when `type` is 'LoadBalancer'")
        else:
            c.check("spec.loadBalancerClass", s.load_balancer_class, qualified_name(s.load_balancer_class))
    if s.load_balancer_source_ranges and s.type != "LoadBalancer":
        c.add("spec.loadBalancerSourceRanges", None, "may only be used when `type` is 'LoadBalancer'")
    for i, r in enumerate(s.load_balancer_source_ranges):
        c.check(f"spec.loadBalancerSourceRanges[{i}]", r, cidr_reason(r.strip()))
    if s.health_check_node_port:
        if not (s.type == "LoadBalancer" and s.external_traffic_policy == "Local"):
            c.add("spec.healthCheckNodePort", s.health_check_node_port,
                  "may only be set when `type` is 'LoadBalancer' and `externalTrafficPolicy` is 'Local'")
        c.port("spec.healthCheckNodePort", s.health_check_node_port)
    for i, fam in enumerate(s.ip_families):
        c.one_of(f"spec.ipFamilies[{i}]", fam, ("IPv4", "IPv6"))
    if s.ip_family_policy:
        c.one_of("spec.ipFamilyPolicy", s.ip_family_policy, ("PreferDualStack", "RequireDualStack", "SingleStack"))
    if s.selector:
        c.labels("spec.selector", s.selector)
    for i, ing in enumerate(svc.status.load_balancer.ingress):
        if ing.ip:
            c.check(f"status.loadBalancer.ingress[{i}].ip", ing.ip, ip_reason(ing.ip))
    return c.problems


def _external_name(c: _Checker, svc: Service) -> None:
    """An ExternalName Service is a CNAME in the cluster's DNS: no virtual IP, no IP families, and a
    target that is a DNS-1123 subdomain (a trailing dot marks it fully qualified), as the API server has it."""
    s = svc.spec
    if s.cluster_ips or s.cluster_ip not in (None, ""):
        c.add("spec.clusterIPs", s.cluster_ips or [s.cluster_ip], "Forbidden: may not be set for ExternalName services")
    if s.ip_families:
        c.add("spec.ipFamilies", s.ip_families, "Forbidden: may not be set for ExternalName services")
    if s.ip_family_policy:
        c.add("spec.ipFamilyPolicy", s.ip_family_policy, "Forbidden: may not be set for ExternalName services")
    target = (s.external_name or "").removesuffix(".")
    if not target:
        c.required("spec.externalName")
    else:
        c.check("spec.externalName", s.external_name, dns1123_subdomain(target))


def _pod_spec(c: _Checker, spec: PodSpec, path: str) -> None:
    if not spec.containers:
        c.required(f"{path}.containers")
    names: set[str] = set()
    port_names: set[str] = set()
    for i, ctr in enumerate(spec.containers):
        _container(c, ctr, f"{path}.containers[{i}]", names, port_names)
    if spec.node_name:
        c.check(f"{path}.nodeName", spec.node_name, dns1123_subdomain(spec.node_name))
    if spec.hostname:
        c.check(f"{path}.hostname", spec.hostname, dns1123_label(spec.hostname))
    if spec.subdomain:
        c.check(f"{path}.subdomain", spec.subdomain, dns1123_label(spec.subdomain))
    if spec.restart_policy:
        c.one_of(f"{path}.restartPolicy", spec.restart_policy, ("Always", "Never", "OnFailure"))
    _pod_dns(c, spec, path)


DNS_POLICIES = ("ClusterFirst", "ClusterFirstWithHostNet", "Default", "None")
MAX_DNS_NAMESERVERS = 3  # glibc reads no more (Kubernetes' MaxDNSNameservers)
MAX_DNS_SEARCHES = 32


def _pod_dns(c: _Checker, spec: PodSpec, path: str) -> None:
    """validatePodDNSConfig: the policy, and a dnsConfig that a resolver can use."""
    if spec.dns_policy is not None:
        c.one_of(f"{path}.dnsPolicy", spec.dns_policy, DNS_POLICIES)
    cfg = spec.dns_config
    if spec.dns_policy == "None" and (cfg is None or not cfg.nameservers):
        c.add(f"{path}.dnsConfig.nameservers" if cfg is not None else f"{path}.dnsConfig", None,
              "Required value: must provide at least one DNS nameserver when DNS policy is None")
    if cfg is None:
        return
    f = f"{path}.dnsConfig"
    if len(cfg.nameservers) > MAX_DNS_NAMESERVERS:
        c.add(f"{f}.nameservers", cfg.nameservers, f"must not have more than {MAX_DNS_NAMESERVERS} nameservers")
    for i, ns in enumerate(cfg.nameservers):
        c.check(f"{f}.nameservers[{i}]", ns, ip_reason(ns))
    if len(cfg.searches) > MAX_DNS_SEARCHES:
        c.add(f"{f}.searches", cfg.searches, f"must not have more than {MAX_DNS_SEARCHES} search paths")
    for i, domain in enumerate(cfg.searches):
        d = domain.removesuffix(".") if domain != "." else domain
        if d != ".":
            c.check(f"{f}.searches[{i}]", domain, dns1123_subdomain(d))
    for i, opt in enumerate(cfg.options):
        if not opt.name:
            c.required(f"{f}.options[{i}].name")


def _container(c: _Checker, ctr: Container, f: str, names: set[str], port_names: set[str]) -> None:
    if not ctr.name:
        c.required(f"{f}.name")
    else:
        c.check(f"{f}.name", ctr.name, dns1123_label(ctr.name))
        if ctr.name in names:
            c.add(f"{f}.name", ctr.name, "Duplicate value")
        names.add(ctr.name)
    for j, p in enumerate(ctr.ports):
        pf = f"{f}.ports[{j}]"
        if p.name:
            c.check(f"{pf}.name", p.name, iana_svc_name(p.name))
            if p.name in port_names:
                c.add(f"{pf}.name", p.name, "Duplicate value")
            port_names.add(p.name)
        c.port(f"{pf}.containerPort", p.container_port)
        c.one_of(f"{pf}.protocol", p.protocol, PROTOCOLS)
        if p.host_port:
            c.port(f"{pf}.hostPort", p.host_port)


def validate_pod(pod: Pod) -> list[Problem]:
    c = _Checker(pod.ref)
    _metadata(c, pod, dns1123_subdomain)
    _pod_spec(c, pod.spec, "spec")
    st = pod.status
    if st.phase is not None:
        c.one_of("status.phase", st.phase, ("Failed", "Pending", "Running", "Succeeded", "Unknown"))
    if st.pod_ip:
        c.check("status.podIP", st.pod_ip, ip_reason(st.pod_ip))
    for i, pip in enumerate(st.pod_ips):
        c.check(f"status.podIPs[{i}].ip", pip.ip, ip_reason(pip.ip))
    if st.host_ip:
        c.check("status.hostIP", st.host_ip, ip_reason(st.host_ip))
    for i, cond in enumerate(st.conditions):
        if not cond.type:
            c.required(f"status.conditions[{i}].type")
        c.one_of(f"status.conditions[{i}].status", cond.status, ("False", "True", "Unknown"))
    return c.problems


def validate_node(node: Node) -> list[Problem]:
    c = _Checker(node.ref)
    _metadata(c, node, dns1123_subdomain)
    if node.spec.pod_cidr:
        c.check("spec.podCIDR", node.spec.pod_cidr, cidr_reason(node.spec.pod_cidr))
    for i, cidr in enumerate(node.spec.pod_cidrs):
        c.check(f"spec.podCIDRs[{i}]", cidr, cidr_reason(cidr))
    for i, a in enumerate(node.status.addresses):
        f = f"status.addresses[{i}]"
        c.one_of(f"{f}.type", a.type, ("ExternalDNS", "ExternalIP", "Hostname", "InternalDNS", "InternalIP"))
        if not a.address:
            c.required(f"{f}.address")
        elif a.type in ("InternalIP", "ExternalIP"):
            c.check(f"{f}.address", a.address, ip_reason(a.address))
    return c.problems


def validate_endpoint_slice(es: EndpointSlice) -> list[Problem]:
    c = _Checker(es.ref)
    _metadata(c, es, dns1123_subdomain)
    c.one_of("addressType", es.address_type, ("FQDN", "IPv4", "IPv6"))
    if len(es.endpoints) > 1000:
        c.add("endpoints", len(es.endpoints), "Too many: must have at most 1000 items")
    for i, ep in enumerate(es.endpoints):
        f = f"endpoints[{i}]"
        if not ep.addresses:
            c.required(f"{f}.addresses")
        if len(ep.addresses) > 100:
            c.add(f"{f}.addresses", len(ep.addresses), "Too many: must have at most 100 items")
        for j, addr in enumerate(ep.addresses):
            reason = None
            if es.address_type in ("IPv4", "IPv6"):
                try:
                    a = ipaddress.ip_address(addr)
                    if a.version != (4 if es.address_type == "IPv4" else 6):
                        reason = f"must be an {es.address_type} address"
                except ValueError:
                    reason = f"must be a valid {es.address_type} address"
            elif es.address_type == "FQDN":
                reason = dns1123_subdomain(addr)
            c.check(f"{f}.addresses[{j}]", addr, reason)
        if ep.hostname:
            c.check(f"{f}.hostname", ep.hostname, dns1123_label(ep.hostname))
        if ep.node_name:
            c.check(f"{f}.nodeName", ep.node_name, dns1123_subdomain(ep.node_name))
    if len(es.ports) > 100:
        c.add("ports", len(es.ports), "Too many: must have at most 100 items")
    names: set[str] = set()
    for i, p in enumerate(es.ports):
        f = f"ports[{i}]"
        name = p.name or ""
        if name:
            c.check(f"{f}.name", name, dns1123_label(name))
        if name in names:
            c.add(f"{f}.name", name, "Duplicate value")
        names.add(name)
        if p.protocol is not None:
            c.one_of(f"{f}.protocol", p.protocol, PROTOCOLS)
        c.port(f"{f}.port", p.port)
    return c.problems


def validate_deployment(d: Deployment) -> list[Problem]:
    c = _Checker(d.ref)
    _metadata(c, d, dns1123_subdomain)
    if d.spec.replicas is not None and d.spec.replicas < 0:
        c.add("spec.replicas", d.spec.replicas, "must be greater than or equal to 0")
    sel = d.spec.selector.match_labels
    if not sel:
        c.required("spec.selector")
    c.labels("spec.selector.matchLabels", sel)
    tl = d.spec.template.metadata.labels
    c.labels("spec.template.metadata.labels", tl)
    if sel and any(tl.get(k) != v for k, v in sel.items()):
        c.add("spec.template.metadata.labels", tl, "`selector` does not match template `labels`")
    _pod_spec(c, d.spec.template.spec, "spec.template.spec")
    return c.problems


def validate_statefulset(sts: StatefulSet) -> list[Problem]:
    """apps/validation's ValidateStatefulSet, on the object before defaulting (unset means the default)."""
    c = _Checker(sts.ref)
    # A DNS label, not a subdomain: <name>-<ordinal> becomes each pod's hostname.
    _metadata(c, sts, dns1123_label)
    s = sts.spec
    if s.replicas is not None and s.replicas < 0:
        c.add("spec.replicas", s.replicas, "must be greater than or equal to 0")
    if s.min_ready_seconds is not None and s.min_ready_seconds < 0:
        c.add("spec.minReadySeconds", s.min_ready_seconds, "must be greater than or equal to 0")
    if s.ordinals is not None and s.ordinals.start is not None and s.ordinals.start < 0:
        c.add("spec.ordinals.start", s.ordinals.start, "must be greater than or equal to 0")
    if s.pod_management_policy is not None:
        if s.pod_management_policy not in (ORDERED_READY, PARALLEL):
            c.add("spec.podManagementPolicy", s.pod_management_policy,
                  f"must be '{ORDERED_READY}' or '{PARALLEL}'")
    us = s.update_strategy
    if us.type is not None and us.type not in (ROLLING_UPDATE, ON_DELETE):
        c.add("spec.updateStrategy", us.type, f"must be '{ROLLING_UPDATE}' or '{ON_DELETE}'")
    elif us.type == ON_DELETE and us.rolling_update is not None:
        c.add("spec.updateStrategy.rollingUpdate", None, f"only allowed for updateStrategy '{ROLLING_UPDATE}'")
    if us.rolling_update is not None and us.rolling_update.partition is not None and us.rolling_update.partition < 0:
        c.add("spec.updateStrategy.rollingUpdate.partition", us.rolling_update.partition,
              "must be greater than or equal to 0")
    if s.service_name:
        c.check("spec.serviceName", s.service_name, dns1123_label(s.service_name))
    sel = s.selector.match_labels
    if not sel and not (s.selector.model_extra or {}).get("matchExpressions"):
        c.add("spec.selector", None, "empty selector is invalid for statefulset")
    c.labels("spec.selector.matchLabels", sel)
    tl = s.template.metadata.labels
    c.labels("spec.template.metadata.labels", tl)
    if sel and any(tl.get(k) != v for k, v in sel.items()):
        c.add("spec.template.metadata.labels", tl, "`selector` does not match template `labels`")
    _pod_spec(c, s.template.spec, "spec.template.spec")
    if s.template.spec.restart_policy not in (None, "Always"):
        c.add("spec.template.spec.restartPolicy", s.template.spec.restart_policy,
              'Unsupported value: supported values: "Always"')
    return c.problems


def validate_namespace(ns: Namespace) -> list[Problem]:
    c = _Checker(ns.ref)
    _metadata(c, ns, dns1123_label)
    return c.problems


def validate_config_map(cm: ConfigMap) -> list[Problem]:
    c = _Checker(cm.ref)
    _metadata(c, cm, dns1123_subdomain)
    for key in [*cm.data, *cm.binary_data]:
        if not key or len(key) > 253 or not _CONFIG_KEY.fullmatch(key):
            c.add("data", key, "a valid config key must consist of alphanumeric characters, '-', '_' or '.'")
    both = set(cm.data) & set(cm.binary_data)
    for key in sorted(both):
        c.add("data", key, "duplicate of key present in binaryData")
    return c.problems


def validate_event(ev: Event) -> list[Problem]:
    c = _Checker(ev.ref)
    _metadata(c, ev, dns1123_subdomain)
    if not ev.involved_object.kind and not ev.involved_object.name:
        c.required("involvedObject")
    return c.problems


_CONFIG_KEY = re.compile(r"[-._a-zA-Z0-9]+")

# Each validator takes the kind it is registered for: a pairing that a dict's value type cannot say.
_VALIDATORS: dict[type[Resource], Callable[[Any], list[Problem]]] = {
    Namespace: validate_namespace,
    ConfigMap: validate_config_map,
    Event: validate_event,
    Service: validate_service,
    Pod: validate_pod,
    Node: validate_node,
    EndpointSlice: validate_endpoint_slice,
    Deployment: validate_deployment,
    StatefulSet: validate_statefulset,
}


def validate(obj: Resource) -> list[Problem]:
    """Every problem of one object (empty list: valid)."""
    fn = _VALIDATORS.get(type(obj))
    return fn(obj) if fn else []
