"""The nft vocabulary both nftables layouts speak: family words, the element containers and chains of
kube-proxy's nftables design (podnet's layout keeps their names), kube-proxy's hashed chain names, the
local-traffic detector in nft syntax, and the object model of one table (Element, ServiceObjects).

Pure data and string helpers; no layout decisions live here.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from podnet.api.defaults import IPV6
from podnet.api.ipaddr import parse_ip
from podnet.proxy.model import ServicePort
from podnet.proxy.settings import ProxierSettings

KP_TABLE = "kube-proxy"
CHAIN_NAME_BASE_MAX = 256 - 16  # knftables.NameLengthMax - 16

# Element containers: (name, kind, IPv4 type, comment). Types use {A} for the address type.
CLUSTER_IPS = "cluster-ips"
NODEPORT_IPS = "nodeport-ips"
FIREWALL_IPS = "firewall-ips"
NO_EP_NODEPORTS = "no-endpoint-nodeports"
NO_EP_SERVICES = "no-endpoint-services"
SERVICE_IPS = "service-ips"
SERVICE_NODEPORTS = "service-nodeports"
REJECT_CHAIN = "reject-chain"
MARK_MASQ = "mark-for-masquerade"

KP_SETS = (
    (CLUSTER_IPS, "{A}", "Active ClusterIPs"),
    (NODEPORT_IPS, "{A}", "IPs that accept NodePort traffic"),
)
KP_MAPS = (
    (FIREWALL_IPS, "{A} . inet_proto . inet_service : verdict", "destinations that are subject to LoadBalancerSourceRanges"),
    (NO_EP_NODEPORTS, "inet_proto . inet_service : verdict", "vmap to drop or reject packets to service nodeports with no endpoints"),
    (NO_EP_SERVICES, "{A} . inet_proto . inet_service : verdict", "vmap to drop or reject packets to services with no endpoints"),
    (SERVICE_IPS, "{A} . inet_proto . inet_service : verdict", "ClusterIP, ExternalIP and LoadBalancer IP traffic"),
    (SERVICE_NODEPORTS, "inet_proto . inet_service : verdict", "NodePort traffic"),
)
# (name, base chain spec or "") in kube-proxy's order.
KP_CHAINS = (
    ("cluster-ips-check", ""),
    ("filter-prerouting-pre-dnat", "type filter hook prerouting priority -110"),
    ("filter-output-pre-dnat", "type filter hook output priority -110"),
    ("filter-forward", "type filter hook forward priority 0"),
    ("filter-input", "type filter hook input priority 0"),
    ("filter-output", "type filter hook output priority 0"),
    ("firewall-check", ""),
    (MARK_MASQ, ""),
    ("masquerading", ""),
    ("nat-output", "type nat hook output priority -100"),
    ("nat-postrouting", "type nat hook postrouting priority 100"),
    ("nat-prerouting", "type nat hook prerouting priority -100"),
    ("nodeport-endpoints-check", ""),
    (REJECT_CHAIN, 'comment "helper for @no-endpoint-services / @no-endpoint-nodeports"'),
    ("services", ""),
    ("service-endpoints-check", ""),
)


# ---------------------------------------------------------------------------------------------------
# Family words and settings in nft syntax


@dataclass(frozen=True)
class Family:
    nfproto: str  # table family: ip | ip6
    addr_type: str  # ipv4_addr | ipv6_addr
    loopback_net: str  # what "not loopback" excludes for match-all NodePorts

    @classmethod
    def of(cls, ip_family: str) -> Family:
        return cls("ip6", "ipv6_addr", "::1") if ip_family == IPV6 else cls("ip", "ipv4_addr", "127.0.0.0/8")


def detector_nft(settings: ProxierSettings, fam: Family, *, local: bool) -> str:
    """The local-traffic detector as an nft match ("" when there is none).

    ProxierSettings carries it as iptables arguments (-s CIDR / -i IFACE, "+" = prefix); nft spells
    the same as `ip saddr CIDR` / `iifname "IFACE"` (prefix: "IFACE*").
    """
    args = settings.local_detector.if_local
    if len(args) < 2:
        return ""
    op = "" if local else "!= "
    if args[0] == "-s":
        return f"{fam.nfproto} saddr {op}{args[1]}"
    if args[0] == "-i":
        name = args[1][:-1] + "*" if args[1].endswith("+") else args[1]
        return f'iifname {op}"{name}"'
    return ""


def mark_value(settings: ProxierSettings) -> str:
    """kube-proxy writes the mark without padding in nft rules (0x00004000 -> 0x4000)."""
    try:
        return hex(int(settings.masquerade_mark, 16))
    except ValueError:
        return settings.masquerade_mark


def nodeport_ips(settings: ProxierSettings) -> tuple[str, ...]:
    """Node addresses that accept NodePorts (nftables mode never serves them on loopback)."""
    out = []
    for text in settings.node_port_ips():
        ip = parse_ip(text)
        if ip is not None and not ip.is_loopback:
            out.append(text)
    return tuple(out)


# ---------------------------------------------------------------------------------------------------
# Names


@lru_cache(maxsize=65536)
def hash_and_truncate(name: str) -> str:
    """kube-proxy's hashAndTruncate: first 8 base32 chars of sha256, "-", the name (capped at 240)."""
    h = base64.b32encode(hashlib.sha256(name.encode()).digest()).decode()[:8]
    out = f"{h}-{name}"
    if len(out) > CHAIN_NAME_BASE_MAX:
        out = out[: CHAIN_NAME_BASE_MAX - 3] + "..."
    return out


def service_base(sp: ServicePort) -> str:
    n = sp.name
    return hash_and_truncate(f"{n.namespace}/{n.name}/{sp.protocol.lower()}/{n.port}")


def endpoint_base(sp: ServicePort, ip: str, port: int) -> str:
    n = sp.name
    return hash_and_truncate(f"{n.namespace}/{n.name}/{sp.protocol.lower()}/{n.port}__{ip.replace(':', '.')}/{port}")


def is_service_chain_name(name: str) -> bool:
    return "/" in name


def is_affinity_set_name(name: str) -> bool:
    return name.startswith("affinity-")


# ---------------------------------------------------------------------------------------------------
# Object model of one table


class Element(NamedTuple):
    """One element of a set or map. `key` is without the comment; `value` None for set elements.

    A NamedTuple, not a dataclass: a full render creates ~20 per service port.
    """

    container: str
    key: str
    value: str | None = None
    comment: str | None = None

    def body(self) -> str:
        text = self.key if self.comment is None else f'{self.key} comment "{self.comment}"'
        return text if self.value is None else f"{text} : {self.value}"


def unique_elements(elements: Iterable[Element]) -> list[Element]:
    """Elements in order, the first of each (container, key) winning: a duplicate key aborts an nft load."""
    seen: set[tuple[str, str]] = set()
    out = []
    for e in elements:
        k = (e.container, e.key)
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


@dataclass
class ServiceObjects:
    """What one service port contributes to a table: elements, its own chains and affinity sets."""

    elements: list[Element] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)  # name -> rules, in order
    sets: dict[str, str] = field(default_factory=dict)  # affinity set name -> declaration body
    shared_chains: set[str] = field(default_factory=set)  # podnet layout: shared chains it points at
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)  # podnet layout: slot assignments
