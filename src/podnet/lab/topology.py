"""A lab's topology as data: names of namespaces, links and addresses, computed from a few parameters.

Nothing here touches the kernel; underlay.py builds what this describes and teardown.py removes it.

Namespace names follow one grammar, so the lab a namespace belongs to is read from its name alone, without
ambiguity (`lab down` after a crash has nothing else to go by):

    pn-<lab>.ul               the underlay (bridge) namespace
    pn-<lab>.<node>           a node (node1, node2, ...)
    pn-<lab>.<ns>.<pod>       a pod, when that fits in 60 characters
    pn-<lab>.h_<sha256[:16]>  a pod with a longer name (of "<ns>/<pod>")

The lab name is everything between "pn-" and the first ".": lab names are [a-z0-9-] and never contain a
dot, so lab "a" and lab "a-b" can never claim each other's namespaces (a plain "pn-a-" prefix did). Within
a lab, Kubernetes namespace names have no dot and no name has "_", so two pods never share a namespace
name either ("a-b"/"c" and "a"/"b-c" did, as p-a-b-c).
"""

from __future__ import annotations

import hashlib
import ipaddress
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from podnet.errors import Problem, ValidationError

BACKENDS = ("vxlan", "host-gw", "udp")
PROXY_MODES = ("iptables", "nftables")
STORES = ("sqlite", "etcd")
SOURCES = ("store", "kube")  # where the node agents' proxy and overlay read their objects
LAB_NAME_RE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,14}[a-z0-9])?$")
DEFAULT_UNDERLAY = "192.168.77.0/24"
DEFAULT_POD_NETWORK = "10.244.0.0/16"
DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
# --ip-family: which families the cluster's nodes, pods and services have. The underlay itself is always
# dual-stack (as kind's docker network): its IPv4 side carries the lab's own plumbing (etcd, the in-lab API
# server address), its IPv6 side the cluster's IPv6 traffic.
IP_FAMILIES = ("ipv4", "ipv6", "dual")
DEFAULT_UNDERLAY6 = "fd00:77::/64"
DEFAULT_POD_NETWORK6 = "fd00:10:244::/56"  # flannel's IPv6SubnetLen default (/64) gives 256 node subnets
DEFAULT_SERVICE_CIDR6 = "fd00:10:96::/112"
CLUSTER_DOMAIN = "cluster.local"
DNS_REPLICAS = 2  # nodes that run a DNS server (CoreDNS's Deployment has 2 replicas)


UNDERLAY = "ul"


def netns_prefix(lab: str) -> str:
    """What every namespace of lab `lab` starts with, and no namespace of any other lab does."""
    return f"pn-{lab}."


def lab_of_netns(name: str) -> str | None:
    """The lab a namespace name belongs to (by the grammar above), or None if it is no lab's."""
    if not name.startswith("pn-") or "." not in name:
        return None
    lab = name[3:].split(".", 1)[0]
    return lab if LAB_NAME_RE.match(lab) else None


def teardown_rank(name: str) -> int:
    """Order of removal inside one lab: pods (0), then nodes (1), the underlay last (2), so every veth
    end vanishes with the namespace that holds it before its peer's namespace goes."""
    rest = name.split(".", 1)[1] if "." in name else ""
    if rest == UNDERLAY:
        return 2
    return 0 if "." in rest or rest.startswith("h_") else 1


@dataclass(frozen=True)
class NodeSpec:
    name: str  # Kubernetes node name, e.g. "node1"
    netns: str  # pn-<lab>.node1
    underlay_ip: str  # address on the lab underlay (the node's InternalIP)
    bridge_port: str  # the underlay bridge's end of the node's veth (inside the underlay namespace)
    iface: str = "eth0"  # the node's end of the veth, inside the node namespace
    underlay_ip6: str = ""  # its IPv6 underlay address (labs of --ip-family ipv6 or dual)

    def internal_ips(self, ip_family: str) -> list[str]:
        """The node's InternalIPs, the cluster's default family first (the kubelet's --node-ip)."""
        return {"ipv4": [self.underlay_ip], "ipv6": [self.underlay_ip6],
                "dual": [self.underlay_ip, self.underlay_ip6]}[ip_family]


@dataclass(frozen=True)
class LabSpec:
    name: str = "lab"
    nodes: int = 2
    backend: str = "vxlan"
    proxy_mode: str = "iptables"
    store: str = "sqlite"
    underlay_cidr: str = DEFAULT_UNDERLAY
    pod_network: str = DEFAULT_POD_NETWORK
    node_specs: list[NodeSpec] = field(default_factory=list)
    lb_pool: str = ""  # LoadBalancer addresses on the underlay ("" in a lab made before pools: the default)
    # the kubelet's --cluster-dns and --cluster-domain: kubeadm's choice, the service CIDR's tenth address
    cluster_dns: str = "10.96.0.10"
    cluster_domain: str = CLUSTER_DOMAIN
    source: str = "store"  # kube: proxy and overlay watch the lab's API server (kube-proxy / flanneld style)
    ip_family: str = "ipv4"  # ipv4 | ipv6 | dual: the families of nodes, pods and services
    underlay_cidr6: str = DEFAULT_UNDERLAY6
    pod_network6: str = DEFAULT_POD_NETWORK6
    service_cidr: str = DEFAULT_SERVICE_CIDR  # every Service writer of the lab allocates from it

    @property
    def families(self) -> tuple[int, ...]:
        """IP versions of the cluster, its default first."""
        return {"ipv4": (4,), "ipv6": (6,), "dual": (4, 6)}[self.ip_family]

    @property
    def pod_networks(self) -> list[str]:
        """The cluster CIDRs (kube-proxy's clusterCIDR, the node IPAM's), its default family first."""
        return [self.pod_network if v == 4 else self.pod_network6 for v in self.families]

    @property
    def underlay_gateway6(self) -> str:
        return str(ipaddress.ip_network(self.underlay_cidr6).network_address + 1)

    @property
    def prefix(self) -> str:
        return netns_prefix(self.name)

    @property
    def underlay_netns(self) -> str:
        return f"{self.prefix}{UNDERLAY}"

    @property
    def underlay_bridge(self) -> str:
        return "pn-br0"

    @property
    def underlay_gateway(self) -> str:
        """The underlay bridge's own address (hosts etcd when the lab uses etcd)."""
        net = ipaddress.ip_network(self.underlay_cidr)
        return str(net.network_address + 1)

    @property
    def dns_nodes(self) -> list[NodeSpec]:
        """The nodes whose DNS server is behind the kube-dns Service."""
        return self.node_specs[:DNS_REPLICAS]

    @property
    def underlay_prefixlen(self) -> int:
        return ipaddress.ip_network(self.underlay_cidr).prefixlen

    @property
    def load_balancer_pool(self) -> str:
        """The pool as a CIDR ("" when the underlay has no room for one)."""
        return self.lb_pool or default_lb_pool(self.underlay_cidr, len(self.node_specs)) or ""

    def lb_addresses(self) -> list[str]:
        """The pool's usable addresses, lowest first: never the underlay's network, broadcast, gateway or a node."""
        if not self.load_balancer_pool:
            return []
        net = ipaddress.ip_network(self.underlay_cidr)
        taken = {net.network_address, net.broadcast_address, ipaddress.ip_address(self.underlay_gateway)}
        taken |= {ipaddress.ip_address(n.underlay_ip) for n in self.node_specs}
        return [str(a) for a in ipaddress.ip_network(self.load_balancer_pool) if a not in taken]

    def pod_netns(self, namespace: str, pod: str) -> str:
        """Pod namespaces: readable when short, hashed when the name would be unwieldy."""
        base = f"{self.prefix}{namespace}.{pod}"
        if len(base) <= 60:
            return base
        digest = hashlib.sha256(f"{namespace}/{pod}".encode()).hexdigest()[:16]
        return f"{self.prefix}h_{digest}"

    def to_dict(self) -> dict[str, object]:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict[str, Any]) -> LabSpec:
        """From to_dict()'s output as read back from JSON (state.json): field values of any type."""
        d = dict(d)
        nodes = [NodeSpec(**n) for n in d.pop("node_specs", [])]
        return LabSpec(**d, node_specs=nodes)


def default_lb_pool(underlay_cidr: str, nodes: int) -> str | None:
    """The top quarter of the underlay (192.168.77.192/26 by default), or a smaller top block above the
    nodes' addresses (network + 11 ...) when a quarter would reach down to them; None if nothing fits.

    Like a MetalLB pool on a home network: a range of the LAN's own subnet that no host takes, so clients
    on the underlay reach it on-link and the node that announces an address answers ARP for it.
    """
    net = ipaddress.ip_network(underlay_cidr)
    last_node = net.network_address + 10 + nodes
    for extra in range(2, 31 - net.prefixlen):
        # a comprehension, not list(): mypy joins list()'s IPv4Network | IPv6Network element type to object
        pool = [s for s in net.subnets(prefixlen_diff=extra)][-1]
        if int(pool.network_address) > int(last_node):  # one version (both from net): int order is theirs
            return str(pool)
    return None


def _check_pool(pool: str, net: ipaddress.IPv4Network | ipaddress.IPv6Network, nodes: int) -> str | None:
    """The reason --lb-pool cannot be used, or None."""
    try:
        p = ipaddress.ip_network(pool, strict=False)
    except ValueError:
        return "not a CIDR"
    if p.version != 4 or net.version != 4 or not p.subnet_of(net):  # (build() lets only IPv4 underlays here)
        return f"must be an IPv4 CIDR inside the underlay {net}, so clients there reach it on-link"
    reserved = [net.network_address + 1, *(net.network_address + 10 + i for i in range(1, nodes + 1))]
    inside = [str(a) for a in reserved if a in p]
    if inside:
        return f"overlaps the underlay's gateway or node addresses ({', '.join(inside)})"
    if all(a in (net.network_address, net.broadcast_address) for a in p):
        return "has no usable address"
    return None


def build(
    name: str = "lab",
    nodes: int = 2,
    backend: str = "vxlan",
    proxy_mode: str = "iptables",
    store: str = "sqlite",
    underlay_cidr: str = DEFAULT_UNDERLAY,
    service_cidr: str = DEFAULT_SERVICE_CIDR,
    lb_pool: str | None = None,
    source: str = "store",
    ip_family: str = "ipv4",
) -> LabSpec:
    """Validate the parameters (every problem at once) and compute every name and address.

    service_cidr is the IPv4 range of an ipv4 lab (PODNET_SERVICE_CIDR may change it); ipv6 and dual labs
    use DEFAULT_SERVICE_CIDR6 for IPv6, unless service_cidr already is a range or a pair of those families."""
    problems: list[Problem] = []
    if ip_family not in IP_FAMILIES:
        problems.append(Problem("--ip-family", ip_family, f"unknown IP family; one of {', '.join(IP_FAMILIES)}"))
    else:
        service_cidr, reason = _service_cidr_for(ip_family, service_cidr)
        if reason:
            problems.append(Problem("--ip-family", ip_family, reason))
    if ip_family != "ipv4" and backend == "udp":
        problems.append(Problem("--backend", backend, "flannel's udp backend is IPv4 only: use vxlan or host-gw "
                                f"with --ip-family {ip_family}"))
    if not LAB_NAME_RE.match(name):
        problems.append(Problem("--name", name, "must be 1-16 lower-case letters, digits or '-', "
                                "starting and ending with a letter or digit"))
    if not 1 <= nodes <= 50:
        problems.append(Problem("--nodes", nodes, "must be between 1 and 50"))
    if backend not in BACKENDS:
        problems.append(Problem("--backend", backend, f"unknown backend; one of {', '.join(BACKENDS)}"))
    if proxy_mode not in PROXY_MODES:
        problems.append(Problem("--proxy-mode", proxy_mode, f"unknown mode; one of {', '.join(PROXY_MODES)}"))
    if store not in STORES:
        problems.append(Problem("--store", store, f"unknown store; one of {', '.join(STORES)}"))
    if source not in SOURCES:
        problems.append(Problem("--source", source, f"unknown source; one of {', '.join(SOURCES)}"))
    try:
        net = ipaddress.ip_network(underlay_cidr)
        if net.version != 4 or net.num_addresses < nodes + 12:
            problems.append(Problem("--underlay", underlay_cidr, "must be an IPv4 CIDR with room for the nodes"))
    except ValueError:
        problems.append(Problem("--underlay", underlay_cidr, "not a CIDR"))
    pool = ""
    if not any(p.field == "--underlay" for p in problems) and 1 <= nodes <= 50:
        net = ipaddress.ip_network(underlay_cidr)
        if lb_pool:
            reason = _check_pool(lb_pool, net, nodes)
            if reason:
                problems.append(Problem("--lb-pool", lb_pool, reason))
            else:
                pool = str(ipaddress.ip_network(lb_pool, strict=False))
        else:  # no room (a tiny underlay): no pool, LoadBalancer Services stay pending as without a provider
            pool = default_lb_pool(underlay_cidr, nodes) or ""
    if problems:
        raise ValidationError(problems)
    net = ipaddress.ip_network(underlay_cidr)
    net6 = ipaddress.ip_network(DEFAULT_UNDERLAY6)
    specs = [
        NodeSpec(
            name=f"node{i}",
            netns=f"{netns_prefix(name)}node{i}",
            underlay_ip=str(net.network_address + 10 + i),
            bridge_port=f"pn-ul-n{i}",
            # fd00:77::11 beside 192.168.77.11: the same digits, read as hex
            underlay_ip6=str(net6.network_address + int(str(10 + i), 16)) if ip_family != "ipv4" else "",
        )
        for i in range(1, nodes + 1)
    ]
    # the cluster DNS address comes from the default family's range (the first of a dual-stack pair)
    dns = ipaddress.ip_network(service_cidr.split(",")[0].strip(), strict=False).network_address + 10
    return LabSpec(name, nodes, backend, proxy_mode, store, underlay_cidr, DEFAULT_POD_NETWORK, specs, pool,
                   cluster_dns=str(dns), source=source, ip_family=ip_family, service_cidr=service_cidr)


def _service_cidr_for(ip_family: str, given: str) -> tuple[str, str | None]:
    """The lab's service CIDR(s) for its family, from the IPv4 one given (the default or PODNET_SERVICE_CIDR),
    or a given range that already has the lab's families; else (given, why not)."""
    from podnet.controllers.allocators import AllocatorConfig

    try:
        have = AllocatorConfig(given).families
    except (ValueError, ValidationError):
        return given, f"the service CIDR {given!r} is not valid"
    want = {"ipv4": ("IPv4",), "ipv6": ("IPv6",), "dual": ("IPv4", "IPv6")}[ip_family]
    if have == want:
        return given, None
    if have == ("IPv4",) and ip_family == "dual":
        return f"{given},{DEFAULT_SERVICE_CIDR6}", None
    if have == ("IPv4",) and ip_family == "ipv6" and given == DEFAULT_SERVICE_CIDR:
        return DEFAULT_SERVICE_CIDR6, None
    return given, (f"the service CIDR {given!r} (PODNET_SERVICE_CIDR?) has the families {', '.join(have)}; "
                   f"a {ip_family} lab needs {', '.join(want)}")
