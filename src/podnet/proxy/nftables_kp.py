"""Pure renderer of kube-proxy's own nftables layout (`ip kube-proxy`), for `--layout kube-proxy`.

It exists for two reasons: people migrating from kube-proxy can diff what podnet would program against
what they run today, and it is the baseline `benchmarks/proxy_sync.py` measures podnet's layout against.
The output is what kube-proxy's fake nftables (knftables.Fake) dumps after a sync, line for line, so it
compares equal to shared/reference/kube-proxy-golden/nftables-* after sort_nftables_transaction().

This module also holds the vocabulary both nftables layouts share (family words, the table object model,
kube-proxy's hashed chain names, the local-traffic detector in nft syntax) and the per-service-port
chain builder: podnet's own layout (nftables.py) reuses it, in its own table, for the few services that
need per-service chains (ClientIP affinity, loadBalancerSourceRanges).
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import NamedTuple

from podnet.proxy.config import ProxierSettings
from podnet.proxy.state import (
    IPV6,
    DesiredState,
    ServicePort,
    categorize_endpoints,
    join_host_port,
    parse_cidr,
    parse_ip,
)

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


@dataclass
class ServiceObjects:
    """What one service port contributes to a table: elements, its own chains and affinity sets."""

    elements: list[Element] = field(default_factory=list)
    chains: dict[str, list[str]] = field(default_factory=dict)  # name -> rules, in order
    sets: dict[str, str] = field(default_factory=dict)  # affinity set name -> declaration body
    shared_chains: set[str] = field(default_factory=set)  # podnet layout: shared chains it points at
    pools: dict[str, tuple[str, ...]] = field(default_factory=dict)  # podnet layout: slot assignments


def kp_service_objects(sp: ServicePort, settings: ProxierSettings, fam: Family, zone: str = "") -> ServiceObjects:
    """kube-proxy's objects for one service port (nftables proxier's per-service loop).

    Chain and element names do not mention the table, so podnet's layout places the same objects in
    its own table for the services whose features need per-service chains.
    """
    out = ServiceObjects()
    proto = sp.protocol.lower()
    cat = categorize_endpoints(sp, settings.node_name, zone, prefer_same_node=settings.prefer_same_node)
    has = cat.has_any
    base = service_base(sp)
    cluster_chain, local_chain = f"service-{base}", f"local-{base}"
    external_chain, fw_chain = f"external-{base}", f"firewall-{base}"
    ep_chain = {str(e): f"endpoint-{endpoint_base(sp, e.ip, e.port)}" for e in cat.reachable}
    aff_set = {str(e): f"affinity-{endpoint_base(sp, e.ip, e.port)}" for e in cat.reachable}

    uses_cluster = bool(cat.cluster) and sp.uses_cluster_endpoints
    uses_local = bool(cat.local) and sp.uses_local_endpoints
    internal_chain, has_internal = cluster_chain, has
    if sp.internal_policy_local:
        internal_chain, has_internal = local_chain, has and bool(cat.local)
    external_policy, has_external = cluster_chain, has
    if sp.external_policy_local:
        external_policy, has_external = local_chain, has and bool(cat.local)
    uses_ext = has and sp.externally_accessible
    int_verdict = ext_verdict = ""
    if not has:
        int_verdict = ext_verdict = f"goto {REJECT_CHAIN}"
    else:
        int_verdict = "" if has_internal else "drop"
        ext_verdict = "" if has_external else "drop"
    comment = str(sp.name)

    chains: dict[str, list[str]] = {}
    for e in cat.reachable:
        chains[ep_chain[str(e)]] = []
    if uses_cluster:
        chains[cluster_chain] = []
    if uses_local:
        chains[local_chain] = []
    if uses_ext:
        chains[external_chain] = []

    el = out.elements
    el.append(Element(CLUSTER_IPS, sp.cluster_ip))
    vip = f"{sp.cluster_ip} . {proto} . {sp.port}"
    if has_internal:
        el.append(Element(SERVICE_IPS, vip, f"goto {internal_chain}"))
    else:
        el.append(Element(NO_EP_SERVICES, vip, int_verdict, comment))
    for ip in sp.external_ips:
        key = f"{ip} . {proto} . {sp.port}"
        if has:
            el.append(Element(SERVICE_IPS, key, f"goto {external_chain}"))
        if not has_external:
            el.append(Element(NO_EP_SERVICES, key, ext_verdict, comment))
    uses_fw = bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
    if uses_fw:
        chains[fw_chain] = []
    for ip in sp.load_balancer_ips:
        key = f"{ip} . {proto} . {sp.port}"
        if has:
            el.append(Element(SERVICE_IPS, key, f"goto {external_chain}"))
        if uses_fw:
            el.append(Element(FIREWALL_IPS, key, f"goto {fw_chain}"))
    if not has_external:
        for ip in sp.load_balancer_ips:
            el.append(Element(NO_EP_SERVICES, f"{ip} . {proto} . {sp.port}", ext_verdict, comment))
    if sp.node_port:
        key = f"{proto} . {sp.node_port}"
        if has:
            el.append(Element(SERVICE_NODEPORTS, key, f"goto {external_chain}"))
        if not has_external:
            el.append(Element(NO_EP_NODEPORTS, key, ext_verdict, comment))

    ipx = fam.nfproto
    if has_internal:
        if settings.masquerade_all:
            chains[internal_chain].append(f"{ipx} daddr {sp.cluster_ip} jump {MARK_MASQ}")
        elif settings.local_detector.implemented:
            chains[internal_chain].append(
                f"{ipx} daddr {sp.cluster_ip} {detector_nft(settings, fam, local=False)} jump {MARK_MASQ}")
    if uses_ext:
        rules = chains[external_chain]
        if not sp.external_policy_local:
            rules.append(f"jump {MARK_MASQ}")
        else:
            if settings.local_detector.implemented:
                rules.append(f'{detector_nft(settings, fam, local=True)} goto {cluster_chain} '
                             'comment "short-circuit pod traffic"')
            rules.append(f'fib saddr type local jump {MARK_MASQ} comment "masquerade local traffic"')
            rules.append(f'fib saddr type local goto {cluster_chain} comment "short-circuit local traffic"')
        if has_external:
            rules.append(f"goto {external_policy}")
    if uses_fw:
        chains[fw_chain].append(firewall_rule(sp, settings, fam))
    if sp.client_ip_affinity:
        for e in cat.reachable:
            out.sets[aff_set[str(e)]] = (f"type {fam.addr_type} ; flags dynamic,timeout ; "
                                         f"timeout {sp.sticky_max_age_seconds}s ;")
    if uses_cluster:
        chains[cluster_chain] += _to_endpoints(sp, cat.cluster, ep_chain, aff_set, ipx)
    if uses_local:
        chains[local_chain] += _to_endpoints(sp, cat.local, ep_chain, aff_set, ipx)
    for e in cat.reachable:
        rules = chains[ep_chain[str(e)]]
        rules.append(f"{ipx} saddr {e.ip} jump {MARK_MASQ}")
        if sp.client_ip_affinity:
            rules.append(f"update @{aff_set[str(e)]} {{ {ipx} saddr }}")
        rules.append(f"meta l4proto {proto} dnat to {join_host_port(e.ip, e.port)}")
    out.chains = chains
    return out


def firewall_rule(sp: ServicePort, settings: ProxierSettings, fam: Family) -> str:
    """The rule of a firewall-B chain: drop sources outside loadBalancerSourceRanges.

    When a range holds the node's own IP, the LB IPs are allowed too: a VIP bound locally makes the
    node's requests arrive with the VIP as source.
    """
    sources = list(sp.load_balancer_source_ranges)
    node_ip = parse_ip(settings.node_ip) if settings.node_ip else None
    if node_ip is not None and any(
        n is not None and n.version == node_ip.version and node_ip in n for n in (parse_cidr(c) for c in sources)
    ):
        sources += list(sp.load_balancer_ips)
    return f"{fam.nfproto} saddr != {{ {' , '.join(sources)} }} drop"


def _to_endpoints(sp: ServicePort, eps: Iterable, ep_chain: dict[str, str], aff_set: dict[str, str],
                  ipx: str) -> list[str]:
    eps = list(eps)
    rules = []
    if sp.client_ip_affinity:
        for e in eps:
            rules.append(f"{ipx} saddr @{aff_set[str(e)]} goto {ep_chain[str(e)]}")
    vmap = " , ".join(f"{i} : goto {ep_chain[str(e)]}" for i, e in enumerate(eps))
    rules.append(f"numgen random mod {len(eps)} vmap {{ {vmap} }}")
    return rules


# ---------------------------------------------------------------------------------------------------
# The whole table


def kp_base(settings: ProxierSettings, fam: Family, *, table: str = KP_TABLE, service_cidrs: Iterable[str] = (),
            comment: str = "rules for kube-proxy") -> tuple[list[str], list[str], list[str]]:
    """Declarations, base rules and base elements of kube-proxy's table (setupNFTables).

    Returns (declaration lines, rule lines, element lines), all as `add ...` commands.
    """
    t = f"{fam.nfproto} {table}"
    ipx = fam.nfproto
    match_all = settings.node_ports_match_all
    decl = [f'add table {t} {{ comment "{comment}" ; }}']
    for name, typ, cmt in KP_SETS:
        if name == NODEPORT_IPS and match_all:
            continue
        decl.append(f'add set {t} {name} {{ type {typ.format(A=fam.addr_type)} ; comment "{cmt}" ; }}')
    for name, typ, cmt in KP_MAPS:
        decl.append(f'add map {t} {name} {{ type {typ.format(A=fam.addr_type)} ; comment "{cmt}" ; }}')
    for name, spec in KP_CHAINS:
        decl.append(f"add chain {t} {name}" + (f" {{ {spec} ; }}" if spec else ""))

    mark = mark_value(settings)
    cidrs = [c for c in service_cidrs if (n := parse_cidr(c)) is not None and (n.version == 6) == (ipx == "ip6")]
    r = [f'cluster-ips-check {ipx} daddr @{CLUSTER_IPS} reject comment "Reject traffic to invalid ports of ClusterIPs"']
    if cidrs:
        r.append(f'cluster-ips-check {ipx} daddr {{ {" , ".join(cidrs)} }} drop comment "Drop traffic to unallocated ClusterIPs"')
    r += [
        "filter-prerouting-pre-dnat ct state new jump firewall-check",
        "filter-forward ct state new jump service-endpoints-check",
        "filter-forward ct state new jump cluster-ips-check",
        "filter-input ct state new jump nodeport-endpoints-check",
        "filter-input ct state new jump service-endpoints-check",
        "filter-output ct state new jump service-endpoints-check",
        "filter-output-pre-dnat ct state new jump firewall-check",
        "filter-output ct state new jump cluster-ips-check",
        f"firewall-check {ipx} daddr . meta l4proto . th dport vmap @{FIREWALL_IPS}",
        f"{MARK_MASQ} mark set mark or {mark}",
        f"masquerading mark and {mark} == 0 return",
        f"masquerading mark set mark xor {mark}",
        "masquerading masquerade fully-random",
        "nat-output jump services",
        "nat-postrouting jump masquerading",
        "nat-prerouting jump services",
    ]
    if match_all:
        r.append(f"nodeport-endpoints-check {ipx} daddr != {fam.loopback_net} meta l4proto . th dport vmap @{NO_EP_NODEPORTS}")
    else:
        r.append(f"nodeport-endpoints-check {ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{NO_EP_NODEPORTS}")
    r.append(f"{REJECT_CHAIN} reject")
    r.append(f"services {ipx} daddr . meta l4proto . th dport vmap @{SERVICE_IPS}")
    if match_all:
        r.append(f"services fib daddr type local {ipx} daddr != {fam.loopback_net} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    else:
        r.append(f"services {ipx} daddr @{NODEPORT_IPS} meta l4proto . th dport vmap @{SERVICE_NODEPORTS}")
    r.append(f"service-endpoints-check {ipx} daddr . meta l4proto . th dport vmap @{NO_EP_SERVICES}")
    rules = [f"add rule {t} {line}" for line in r]
    elements = [] if match_all else [f"add element {t} {NODEPORT_IPS} {{ {ip} }}" for ip in nodeport_ips(settings)]
    return decl, rules, elements


def kp_objects(desired: DesiredState, settings: ProxierSettings) -> dict[str, ServiceObjects]:
    """kube-proxy's per-service objects of a whole desired state, keyed by "ns/name:port/proto"."""
    fam = Family.of(desired.ip_family)
    zone = desired.topology_zone
    return {_key(sp): kp_service_objects(sp, settings, fam, zone) for sp in desired.services.values()}


def _key(sp: ServicePort) -> str:
    return f"{sp.name}/{sp.protocol}"


def render_kp(desired: DesiredState, settings: ProxierSettings, *, service_cidrs: Iterable[str] = (),
              stale_chains: Iterable[str] = ()) -> str:
    """The full `ip kube-proxy` table as knftables.Fake dumps it after a sync.

    `stale_chains` are service chains kube-proxy has flushed but not yet deleted (they stay, empty,
    for a second after they stop being used).
    """
    fam = Family.of(desired.ip_family)
    t = f"{fam.nfproto} {KP_TABLE}"
    decl, rules, elements = kp_base(settings, fam, service_cidrs=service_cidrs)
    out = [*decl, *rules, *elements]
    objs = kp_objects(desired, settings)
    emitted: set[str] = set()
    for o in objs.values():
        for name, body in o.sets.items():
            out.append(f"add set {t} {name} {{ {body} }}")
        for name, chain_rules in o.chains.items():
            out.append(f"add chain {t} {name}")
            emitted.add(name)
            out += [f"add rule {t} {name} {r}" for r in chain_rules]
        out += [f"add element {t} {e.container} {{ {e.body()} }}" for e in _dedup(o.elements)]
    out += [f"add chain {t} {name}" for name in sorted(set(stale_chains) - emitted)]
    return "\n".join(out) + "\n"


def _dedup(elements: Iterable[Element]) -> list[Element]:
    seen: set[tuple[str, str]] = set()
    out = []
    for e in elements:
        k = (e.container, e.key)
        if k not in seen:
            seen.add(k)
            out.append(e)
    return out


def kp_chain_names(desired: DesiredState, settings: ProxierSettings) -> set[str]:
    return {name for o in kp_objects(desired, settings).values() for name in o.chains}


@dataclass(frozen=True)
class KpDelta:
    text: str
    operations: int
    stale_chains: frozenset[str]  # flushed now, to be deleted by a later transaction


def render_kp_delta(old: DesiredState, new: DesiredState, settings: ProxierSettings) -> KpDelta:
    """kube-proxy's partial-sync transaction for the services in `old`/`new` (only changed ones given).

    As kube-proxy (PR #126013): map/set elements are diffed (a changed value is deleted and re-added),
    every chain of a changed service is added, flushed and refilled, chains no longer used are flushed
    (and deleted in a later transaction), affinity sets no longer used are deleted at once.
    """
    fam = Family.of(new.ip_family)
    t = f"{fam.nfproto} {KP_TABLE}"
    o_objs = kp_objects(old, settings)
    n_objs = kp_objects(new, settings)
    o_el = {(e.container, e.key): e for o in o_objs.values() for e in o.elements}
    n_el = {(e.container, e.key): e for o in n_objs.values() for e in o.elements}
    lines: list[str] = []
    ops = 0
    # chains first: an element may point at a chain this transaction creates
    new_chains: set[str] = set()
    new_sets: set[str] = set()
    for o in n_objs.values():
        for name, body in o.sets.items():
            new_sets.add(name)
            lines.append(f"add set {t} {name} {{ {body} }}")
            ops += 1
        for name, rules in o.chains.items():
            new_chains.add(name)
            lines += [f"add chain {t} {name}", f"flush chain {t} {name}"]
            lines += [f"add rule {t} {name} {r}" for r in rules]
            ops += 2 + len(rules)
    for k, e in n_el.items():
        prev = o_el.get(k)
        if prev == e:
            continue
        if prev is not None:
            lines.append(f"delete element {t} {e.container} {{ {e.key} }}")
            ops += 1
        lines.append(f"add element {t} {e.container} {{ {e.body()} }}")
        ops += 1
    for k, e in o_el.items():
        if k not in n_el:
            lines.append(f"delete element {t} {e.container} {{ {e.key} }}")
            ops += 1
    stale = {name for o in o_objs.values() for name in o.chains} - new_chains
    for name in sorted(stale):
        lines.append(f"flush chain {t} {name}")
        ops += 1
    for name in sorted({s for o in o_objs.values() for s in o.sets} - new_sets):
        lines.append(f"delete set {t} {name}")
        ops += 1
    return KpDelta("\n".join(lines) + ("\n" if lines else ""), ops, frozenset(stale))
