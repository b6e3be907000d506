"""The settings the renderers read: kube-proxy's configuration and the host's facts resolved for one IP
family (its NewProxier), or taken as they stand from a kube-proxy golden case's `proxier:` block."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from podnet.api.defaults import IPV4, IPV6
from podnet.api.ipaddr import ip_family_of, parse_cidr, parse_ip
from podnet.errors import Problem, ValidationError
from podnet.proxy.config import HostFacts, KubeProxyConfiguration
from podnet.proxy.model import DesiredState


@dataclass(frozen=True, slots=True)
class LocalDetector:
    """kube-proxy's LocalTrafficDetector: how "traffic from a local pod" is matched.

    if_local / if_not_local are iptables match arguments; both empty means no detector (the
    off-cluster masquerade rule and the eTP=Local pod short-circuit are then omitted).
    """

    if_local: tuple[str, ...] = ()
    if_not_local: tuple[str, ...] = ()

    @property
    def implemented(self) -> bool:
        return bool(self.if_local)

    @classmethod
    def by_cidr(cls, cidr: str) -> LocalDetector:
        return cls(("-s", cidr), ("!", "-s", cidr))

    @classmethod
    def by_interface(cls, name: str) -> LocalDetector:
        return cls(("-i", name), ("!", "-i", name))


@dataclass(frozen=True, slots=True)
class ProxierSettings:
    """Everything the iptables renderer needs besides the desired state, fully resolved."""

    ip_family: str = IPV4
    node_name: str = ""
    node_ip: str = ""  # primary node IP of the family (LB source ranges "allow from node")
    node_ips: tuple[str, ...] = ()  # all host addresses of the family (nodePortAddresses matching)
    masquerade_mark: str = "0x00004000"
    masquerade_all: bool = False
    local_detector: LocalDetector = field(default_factory=LocalDetector)
    localhost_node_ports: bool = True  # effective value (IPv4 and loopback in nodePortAddresses)
    node_port_cidrs: tuple[str, ...] = ()  # empty: match all addresses (addrtype LOCAL)
    conntrack_tcp_liberal: bool = False  # nf_conntrack_tcp_be_liberal=1: no INVALID drop rule
    nfacct_invalid: bool = False  # ct_state_invalid_dropped_pkts counter exists
    nfacct_localhost: bool = False  # localhost_nps_accepted_pkts counter exists
    random_fully: bool = False
    prefer_same_node: bool = False  # PreferSameTrafficDistribution feature gate
    sync_period: float = 30.0

    @property
    def node_ports_match_all(self) -> bool:
        return not self.node_port_cidrs

    def node_port_ips(self) -> tuple[str, ...]:
        """Node addresses inside nodePortAddresses (GetNodeIPs), loopback included; sorted."""
        nets = [parse_cidr(c) for c in self.node_port_cidrs]
        loop = "127.0.0.1" if self.ip_family == IPV4 else "::1"
        found = {}
        for text in (loop, *self.node_ips):
            ip = parse_ip(text)
            if ip is None or ip_family_of(ip) != self.ip_family:
                continue
            if any(n is not None and ip in n for n in nets):
                found[str(ip)] = ip
        return tuple(str(ip) for ip in sorted(found.values()))


def masquerade_mark(bit: int) -> str:
    """Go's fmt.Sprintf("%#08x", 1<<bit): zero-padded to 8 hex digits, then 0x (0x00004000)."""
    return "0x%08x" % (1 << bit)


def _family_of_text(text: str) -> str | None:
    """The family of an IP given as text; None when it is not an IP."""
    ip = parse_ip(text)
    return None if ip is None else ip_family_of(ip)


def _is_non_loopback_ip(text: str) -> bool:
    ip = parse_ip(text)
    return ip is not None and not ip.is_loopback


def effective_node_name(config: KubeProxyConfiguration | None, detected: str) -> str:
    """hostnameOverride (trimmed, lower-cased as kube-proxy's GetHostname does), else the detected name."""
    override = (config.hostname_override if config else "").strip().lower()
    return override or detected


def resolve_settings(
    config: KubeProxyConfiguration | None,
    facts: HostFacts | None,
    *,
    ip_family: str = IPV4,
    node_pod_cidrs: tuple[str, ...] = (),
    conntrack_tcp_liberal: bool | None = None,
) -> ProxierSettings:
    """Resolve config + host facts as kube-proxy's server.go and NewProxier do.

    - the node name is hostnameOverride, else facts.nodeName;
    - the local-traffic detector follows detectLocalMode (ClusterCIDR default; NodeCIDR needs the
      Node's podCIDRs; no CIDR of this family means no detector);
    - nodePortAddresses are filtered by family ("primary" = the node IPs); without an IPv4 loopback
      among them, localhost NodePorts are switched off (NewProxier), and never exist on IPv6;
    - nf_conntrack_tcp_be_liberal: conntrack.tcpBeLiberal sets it, so the INVALID drop goes away.
    """
    config = config or KubeProxyConfiguration()
    node_name = effective_node_name(config, facts.node_name if facts else "")
    node_ips = tuple(ip for ip in (facts.node_ips if facts else []) if _family_of_text(ip) == ip_family)

    mode = config.detect_local_mode or "ClusterCIDR"
    detector = LocalDetector()
    if mode == "ClusterCIDR":
        detector = _cidr_detector([p.strip() for p in config.cluster_cidr.split(",") if p.strip()], ip_family)
    elif mode == "NodeCIDR":
        detector = _cidr_detector(list(node_pod_cidrs), ip_family)
    elif mode == "BridgeInterface" and config.detect_local.bridge_interface:
        detector = LocalDetector.by_interface(config.detect_local.bridge_interface)
    elif mode == "InterfaceNamePrefix" and config.detect_local.interface_name_prefix:
        detector = LocalDetector.by_interface(config.detect_local.interface_name_prefix + "+")

    cidrs: list[str] = []
    for entry in config.node_port_addresses:
        if entry == "primary":
            cidrs.extend(f"{ip}/{32 if ip_family == IPV4 else 128}" for ip in node_ips[:1])
            continue
        net = parse_cidr(entry)
        if net is not None and ip_family_of(net) == ip_family:
            cidrs.append(str(net))
    # Every entry of cidrs is a parsed CIDR's text or "<node IP>/<full length>", so none is dropped here.
    nets = [n for n in (parse_cidr(c) for c in cidrs) if n is not None]
    match_all = not cidrs or any(n.prefixlen == 0 for n in nets)
    contains_v4_loopback = ip_family == IPV4 and (
        match_all or any(ipaddress.IPv4Address("127.0.0.1") in n for n in nets)
    )
    localhost = config.iptables.localhost_node_ports and contains_v4_loopback

    liberal = config.conntrack.tcp_be_liberal if conntrack_tcp_liberal is None else conntrack_tcp_liberal
    nfacct = bool(facts and facts.nfacct)
    return ProxierSettings(
        ip_family=ip_family,
        node_name=node_name,
        node_ip=node_ips[0] if node_ips else "",
        node_ips=node_ips,
        masquerade_mark=masquerade_mark(config.iptables.masquerade_bit),
        masquerade_all=config.iptables.masquerade_all,
        local_detector=detector,
        localhost_node_ports=localhost,
        node_port_cidrs=() if match_all else tuple(cidrs),
        conntrack_tcp_liberal=liberal,
        nfacct_invalid=nfacct,
        nfacct_localhost=nfacct,
        random_fully=bool(facts and facts.random_fully),
        prefer_same_node=config.feature_gates.get("PreferSameTrafficDistribution", False),
        sync_period=config.effective_sync_period,
    )


def settings_for_state(
    config: KubeProxyConfiguration | ProxierSettings | None, facts: HostFacts | None, desired: DesiredState
) -> ProxierSettings:
    """ProxierSettings as they apply to one desired state (its family and node's podCIDRs)."""
    if isinstance(config, ProxierSettings):
        return config
    return resolve_settings(config, facts, ip_family=desired.ip_family, node_pod_cidrs=desired.node_pod_cidrs)


# The addresses of kube-proxy's fake network in NewFakeProxier (lo's are implied).
_FAKE_PROXIER_NODE_IPS = ("192.168.0.2", "192.168.1.2", "192.168.99.11", "2001:db8::1", "2001:db8:1::2")


def settings_from_proxier_block(block: Mapping[str, Any]) -> ProxierSettings:
    """ProxierSettings from the `proxier:` block of kube-proxy golden cases (shared/reference/).

    Those cases state kube-proxy's resolved test settings directly (e.g. the mark "0x4000" the unit
    tests hard-code), so nothing here is defaulted the way a live kube-proxy would.
    """
    problems: list[Problem] = []
    family = block.get("ipFamily", IPV4)
    if family not in (IPV4, IPV6):
        problems.append(Problem("proxier.ipFamily", family, "must be IPv4 or IPv6"))
    det = block.get("localDetector") or {}
    mode = det.get("mode", "")
    cidr = det.get("cidr") or det.get("clusterCIDR") or det.get("podCIDR")
    iface = det.get("interface") or det.get("bridgeInterface") or det.get("interfaceNamePrefix") or det.get("prefix")
    detector = LocalDetector()
    if mode in ("ClusterCIDR", "NodeCIDR") and cidr:
        detector = LocalDetector.by_cidr(cidr)
    elif mode == "BridgeInterface" and iface:
        detector = LocalDetector.by_interface(iface)
    elif mode == "InterfaceNamePrefix" and iface:
        detector = LocalDetector.by_interface(iface + "+")
    node_ip = block.get("nodeIP") or ""
    # Node addresses: `interfaces` (name -> CIDRs) or `nodeIPs`; else NewFakeProxier's interfaces.
    if isinstance(block.get("interfaces"), Mapping):
        node_ips = [str(a).split("/")[0] for addrs in block["interfaces"].values() for a in (addrs or [])]
    elif block.get("nodeIPs"):
        node_ips = [str(a) for a in block["nodeIPs"]]
    else:
        node_ips = list(_FAKE_PROXIER_NODE_IPS)
    if node_ip and node_ip not in node_ips:
        node_ips.insert(0, node_ip)
    node_ips = [ip for ip in node_ips if _is_non_loopback_ip(ip)]
    # NewFakeProxier has both nfacct counters; a case that says nothing about them means that.
    nfacct = block.get("nfAcctCounters")
    if nfacct is None:
        nfacct = {"ct_state_invalid_dropped_pkts": True, "localhost_nps_accepted_pkts": True}
    npa = block.get("nodePortAddresses") or []
    nets = [n for n in (parse_cidr(c) for c in npa) if n is not None and ip_family_of(n) == family]
    cidrs = [str(n) for n in nets]
    match_all = not cidrs or any(n.prefixlen == 0 for n in nets)
    if problems:
        raise ValidationError(problems)
    return ProxierSettings(
        ip_family=family,
        node_name=block.get("nodeName", ""),
        node_ip=node_ip,
        node_ips=tuple(node_ips),
        masquerade_mark=str(block.get("masqueradeMark", "0x4000")),
        masquerade_all=bool(block.get("masqueradeAll", False)),
        local_detector=detector,
        localhost_node_ports=bool(block.get("localhostNodePorts", True)) and family == IPV4,
        node_port_cidrs=() if match_all else tuple(cidrs),
        conntrack_tcp_liberal=bool(block.get("conntrackTCPLiberal", False)),
        nfacct_invalid=bool(nfacct.get("ct_state_invalid_dropped_pkts", False)),
        nfacct_localhost=bool(nfacct.get("localhost_nps_accepted_pkts", False)),
        random_fully=bool(block.get("hasRandomFully", False)),
    )


def _cidr_detector(cidrs: list[str], family: str) -> LocalDetector:
    for c in cidrs:
        net = parse_cidr(c)
        if net is not None and ip_family_of(net) == family:
            return LocalDetector.by_cidr(str(net))
    return LocalDetector()
