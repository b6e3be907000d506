"""kube-proxy's nftables objects that both layouts build: the per-service-port chains (service-, external-,
endpoint-, firewall- chains, affinity sets) and the base table (setupNFTables: declarations, base rules).

kube-proxy's layout (kubeproxy.py) uses them for every service; podnet's layout (layout.py) places the
same objects in its own table for the few services whose features need per-service chains (ClientIP
affinity, loadBalancerSourceRanges), and takes its base chains from kp_base.
"""

from __future__ import annotations

from collections.abc import Iterable

from podnet.api.ipaddr import join_host_port, parse_cidr, parse_ip
from podnet.proxy.model import ServicePort
from podnet.proxy.nftables.vocab import (
    CLUSTER_IPS,
    FIREWALL_IPS,
    KP_CHAINS,
    KP_MAPS,
    KP_SETS,
    KP_TABLE,
    MARK_MASQ,
    NO_EP_NODEPORTS,
    NO_EP_SERVICES,
    NODEPORT_IPS,
    REJECT_CHAIN,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Element,
    Family,
    ServiceObjects,
    detector_nft,
    endpoint_base,
    mark_value,
    nodeport_ips,
    service_base,
)
from podnet.proxy.settings import ProxierSettings
from podnet.proxy.topology import categorize_endpoints


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
