"""Pure renderer of podnet's own nftables layout: table `ip podnet` (`ip6 podnet` for IPv6).

Why not kube-proxy's layout: it gives every service a chain holding an anonymous `numgen ... vmap` and
every endpoint a chain. The kernel binds each anonymous set by walking lists that grow with the table,
so loading 5k services takes 23-56 s, and nft 1.0.6 dumps all chains on every update (0.1-0.3 s each).
See shared/reference/nftables-layouts.md ("seldnat").

podnet's layout keeps the number of chains independent of the number of services and puts the
per-service data in elements of a few hash maps:

* `service-ips` (VIP . proto . port) and `service-nodeports` (proto . port) point at a SHARED chain per
  (kind, protocol, endpoint count), e.g. `cluster-tcp-3`;
* that chain DNATs with one lookup: `dnat ip to ip daddr . meta l4proto . th dport . numgen random mod 3
  map @service-endpoints-tcp`, whose elements are `VIP . tcp . 80 . <slot> : <endpoint IP> . <port>`
  (NodePorts use `nodeport-endpoints-tcp`, keyed `tcp . 30080 . <slot>`; one map per protocol);
* hairpin traffic (an endpoint reaching itself through its service) is masqueraded by one rule over the
  `hairpin` set (`ep . ep`), which holds this node's endpoints (and those of unknown node).

Kinds of shared chains: `cluster-P-N` (ClusterIP; masquerades off-cluster sources), `external-P-N`
(externalIPs/LB IPs with externalTrafficPolicy Cluster: always masquerade), `nodeport-P-N` (the same for
NodePorts), `external-local-P-N-L` / `nodeport-local-P-N-L` (externalTrafficPolicy Local: pod and
node traffic short-circuit to the N cluster endpoints, which sit at slot offset 65536; everything else
goes to the L local endpoints without masquerade). internalTrafficPolicy Local only changes which
endpoints fill the ClusterIP's slots. So a change of endpoints, or adding or removing an ordinary
service, is a transaction of element operations only.

Services whose features need per-service state keep kube-proxy's per-service chains, in this table:
ClientIP affinity (per-endpoint `affinity-*` sets updated from the packet path) and
loadBalancerSourceRanges (`firewall-*` chain). They are rare, so the common case stays element-only.
Everything else (filter-side reject/drop of services without endpoints, cluster-ips-check, the
masquerade mark, NodePort addresses) is kube-proxy's nftables design, names included.

Slots are assigned stably (`assign_slots`): an endpoint keeps its slot while it exists, so replacing one
endpoint rewrites one element.

Incremental transactions from the last sync's objects are ledger.py's.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName
from podnet.proxy.nftables.kpchains import firewall_rule, kp_base, kp_service_objects
from podnet.proxy.nftables.vocab import (
    CLUSTER_IPS,
    FIREWALL_IPS,
    MARK_MASQ,
    NO_EP_NODEPORTS,
    NO_EP_SERVICES,
    SERVICE_IPS,
    SERVICE_NODEPORTS,
    Element,
    Family,
    ServiceObjects,
    detector_nft,
    service_base,
    unique_elements,
)
from podnet.proxy.settings import ProxierSettings
from podnet.proxy.topology import Categorized, categorize_endpoints

TABLE = "podnet"
TABLE_COMMENT = "rules for podnet (kube-proxy compatible services)"
SERVICE_ENDPOINTS = "service-endpoints"  # + "-tcp" / "-udp" / "-sctp"
NODEPORT_ENDPOINTS = "nodeport-endpoints"  # + "-tcp" / "-udp" / "-sctp"
# One slot map per protocol: the map's data is typed `ip daddr . tcp dport` (udp, sctp); nft 1.0.6 refuses a
# `meta l4proto udp` rule against tcp-typed data for some maps, and `th dport` data breaks re-reading the table.
PROTOCOLS = ("tcp", "udp", "sctp")
HAIRPIN = "hairpin"
SHORTCUT_OFFSET = 65536  # slots of the cluster endpoints an externalTrafficPolicy=Local VIP short-circuits to
PRECREATED = 16  # cluster-{tcp,udp}-1..16 always exist: binding a new rule to a big map walks the map
CHUNK = 1000  # elements per `add element` command (fewer, larger commands load faster)

ELEMENT_CONTAINERS = (
    CLUSTER_IPS, "nodeport-ips", FIREWALL_IPS, NO_EP_NODEPORTS, NO_EP_SERVICES, SERVICE_IPS, SERVICE_NODEPORTS,
    *(f"{m}-{p}" for m in (SERVICE_ENDPOINTS, NODEPORT_ENDPOINTS) for p in PROTOCOLS), HAIRPIN,
)
_SHARED = re.compile(r"^(cluster|external|nodeport|external-local|nodeport-local)-(tcp|udp|sctp)-(\d+)(?:-(\d+))?$")


@dataclass(frozen=True)
class Layout:
    """Everything besides the desired state that the rules depend on."""

    settings: ProxierSettings
    fam: Family
    service_cidrs: tuple[str, ...] = ()
    zone: str = ""

    @property
    def table(self) -> str:
        return f"{self.fam.nfproto} {TABLE}"

    @classmethod
    def of(cls, desired: DesiredState, settings: ProxierSettings, service_cidrs: Iterable[str] = ()) -> Layout:
        return cls(settings, Family.of(desired.ip_family), tuple(service_cidrs), desired.topology_zone)


# ---------------------------------------------------------------------------------------------------
# Slots


def assign_slots(previous: tuple[str, ...] | None, endpoints: Iterable[str]) -> tuple[str, ...]:
    """Slot -> endpoint for a pool, keeping every surviving endpoint where it was.

    Survivors beyond the new size move into the holes first, then newcomers fill the rest in order.
    Without a previous assignment the order of `endpoints` is kept (deterministic full renders).
    """
    eps = list(endpoints)
    if not previous:
        return tuple(eps)
    want = set(eps)
    n = len(eps)
    slots: list[str | None] = [None] * n
    movers: list[str] = []
    for i, e in enumerate(previous):
        if e in want:
            if i < n:
                slots[i] = e
            else:
                movers.append(e)
    kept = {e for e in slots if e is not None}
    fill = iter(movers + [e for e in eps if e not in kept and e not in movers])
    return tuple(e if e is not None else next(fill) for e in slots)


# ---------------------------------------------------------------------------------------------------
# Shared chains


def shared_chain_rules(name: str, lay: Layout) -> list[str]:
    """Rules of a shared chain, derived from its name (kind-protocol-N[-L])."""
    m = _SHARED.match(name)
    if m is None:
        raise ValueError(f"not a shared chain name: {name!r}")
    kind, proto, n, l_count = m.group(1), m.group(2), int(m.group(3)), int(m.group(4) or 0)
    ipx = lay.fam.nfproto
    nodeport = kind.startswith("nodeport")
    if nodeport:
        key, target = "meta l4proto . th dport", f"{NODEPORT_ENDPOINTS}-{proto}"
    else:
        key, target = f"{ipx} daddr . meta l4proto . th dport", f"{SERVICE_ENDPOINTS}-{proto}"

    def dnat(count: int, offset: int = 0) -> str:
        off = f" offset {offset}" if offset else ""
        return f"meta l4proto {proto} dnat {ipx} to {key} . numgen random mod {count}{off} map @{target}"

    s = lay.settings
    if kind == "cluster":
        rules = []
        if s.masquerade_all:
            rules.append(f"jump {MARK_MASQ}")
        elif s.local_detector.implemented:
            rules.append(f"{detector_nft(s, lay.fam, local=False)} jump {MARK_MASQ}")
        return [*rules, dnat(n)]
    if kind in ("external", "nodeport"):
        return [f"jump {MARK_MASQ}", dnat(n)]
    rules = []
    if n:
        if s.local_detector.implemented:
            rules.append(f'{detector_nft(s, lay.fam, local=True)} {dnat(n, SHORTCUT_OFFSET)} '
                         'comment "short-circuit pod traffic"')
        rules.append(f'fib saddr type local jump {MARK_MASQ} comment "masquerade local traffic"')
        rules.append(f'fib saddr type local {dnat(n, SHORTCUT_OFFSET)} comment "short-circuit local traffic"')
    if l_count:
        rules.append(dnat(l_count))
    return rules


def precreated_chains() -> list[str]:
    return [f"cluster-{p}-{n}" for p in ("tcp", "udp") for n in range(1, PRECREATED + 1)]


# ---------------------------------------------------------------------------------------------------
# Per service port


def _categorize(sp: ServicePort, lay: Layout) -> Categorized:
    """categorize_endpoints, with a shortcut for the common case it would decide the same way.

    Cluster policy only, every endpoint ready and without topology hints: all endpoints are used.
    (Saves most of a full render's time at 10k services.)
    """
    eps = sp.endpoints
    if eps and not sp.uses_local_endpoints and all(e.ready and not e.zone_hints and not e.node_hints for e in eps):
        return Categorized(eps, (), eps, True)
    s = lay.settings
    return categorize_endpoints(sp, s.node_name, lay.zone, prefer_same_node=s.prefer_same_node)


def service_objects(sp: ServicePort, lay: Layout, previous: ServiceObjects | None = None) -> ServiceObjects:
    """Elements (and, for affinity/source ranges, chains) of one service port in podnet's table."""
    s = lay.settings
    if sp.client_ip_affinity:
        return kp_service_objects(sp, s, lay.fam, lay.zone)
    out = ServiceObjects()
    proto = sp.protocol.lower()
    cat = _categorize(sp, lay)
    has = cat.has_any
    has_internal = has and (not sp.internal_policy_local or bool(cat.local))
    has_external = has and (not sp.external_policy_local or bool(cat.local))
    uses_ext = has and sp.externally_accessible
    int_verdict = ext_verdict = "goto reject-chain" if not has else "drop"
    comment = str(sp.name)
    prev_pools = previous.pools if previous is not None else {}
    by_key: dict[str, Endpoint] = {}
    pools: dict[str, tuple[str, ...]] = {}
    for pool_name, eps in (("cluster", cat.cluster), ("local", cat.local)):
        if eps:
            keys = []
            for e in eps:
                k = f"{e.ip}:{e.port}"
                by_key[k] = e
                keys.append(k)
            pools[pool_name] = assign_slots(prev_pools.get(pool_name), keys)
    out.pools = pools
    el = out.elements

    def slots(prefix: str, container: str, pool: tuple[str, ...], offset: int = 0) -> None:
        for i, k in enumerate(pool):
            ep = by_key[k]
            el.append(Element(container, f"{prefix} . {i + offset}", f"{ep.ip} . {ep.port}"))

    el.append(Element(CLUSTER_IPS, sp.cluster_ip))
    vip = f"{sp.cluster_ip} . {proto} . {sp.port}"
    if has_internal:
        pool = pools["local"] if sp.internal_policy_local else pools["cluster"]
        chain = f"cluster-{proto}-{len(pool)}"
        out.shared_chains.add(chain)
        el.append(Element(SERVICE_IPS, vip, f"goto {chain}"))
        slots(vip, f"{SERVICE_ENDPOINTS}-{proto}", pool)
    else:
        el.append(Element(NO_EP_SERVICES, vip, int_verdict, comment))

    cluster_pool = pools.get("cluster", ())
    local_pool = pools.get("local", ())
    if sp.external_policy_local:
        ext_chain = f"external-local-{proto}-{len(cluster_pool)}-{len(local_pool)}"
        np_chain = f"nodeport-local-{proto}-{len(cluster_pool)}-{len(local_pool)}"
    else:
        ext_chain = f"external-{proto}-{len(cluster_pool)}"
        np_chain = f"nodeport-{proto}-{len(cluster_pool)}"

    def external_slots(prefix: str, container: str) -> None:
        if sp.external_policy_local:
            slots(prefix, container, local_pool)
            slots(prefix, container, cluster_pool, SHORTCUT_OFFSET)
        else:
            slots(prefix, container, cluster_pool)

    def capture(key: str, dispatch: str, chain: str, endpoints: str, no_endpoints: str) -> None:
        """An external destination (an IP . port, or a NodePort): to its chain, or to the no-endpoints verdict."""
        if uses_ext:
            out.shared_chains.add(chain)
            el.append(Element(dispatch, key, f"goto {chain}"))
            external_slots(key, endpoints)
        if not has_external:
            el.append(Element(no_endpoints, key, ext_verdict, comment))

    for ip in (*sp.external_ips, *sp.load_balancer_ips):
        capture(f"{ip} . {proto} . {sp.port}", SERVICE_IPS, ext_chain, f"{SERVICE_ENDPOINTS}-{proto}", NO_EP_SERVICES)
    if sp.load_balancer_ips and sp.load_balancer_source_ranges:
        fw_chain = f"firewall-{service_base(sp)}"
        out.chains[fw_chain] = [firewall_rule(sp, s, lay.fam)]
        for ip in sp.load_balancer_ips:
            el.append(Element(FIREWALL_IPS, f"{ip} . {proto} . {sp.port}", f"goto {fw_chain}"))
    if sp.node_port:
        capture(f"{proto} . {sp.node_port}", SERVICE_NODEPORTS, np_chain, f"{NODEPORT_ENDPOINTS}-{proto}",
                NO_EP_NODEPORTS)
    for e in cat.reachable:
        # Only a pod on this node can reach itself through this node's rules; endpoints of unknown node
        # (no nodeName) are kept to be safe. On a big cluster this leaves most endpoints out of the set.
        if e.local or not e.node_name:
            el.append(Element(HAIRPIN, f"{e.ip} . {e.ip}"))
    return out


# ---------------------------------------------------------------------------------------------------
# Full ruleset


def base_lines(lay: Layout) -> tuple[list[str], list[str], list[str]]:
    """Declarations, fixed rules and fixed elements of the table (kube-proxy's base + podnet's maps)."""
    fam, t = lay.fam, lay.table
    decl, rules, elements = kp_base(lay.settings, fam, table=TABLE, service_cidrs=lay.service_cidrs,
                                    comment=TABLE_COMMENT)
    ipx = fam.nfproto
    for p in PROTOCOLS:
        decl += [
            f"add map {t} {SERVICE_ENDPOINTS}-{p} {{ typeof {ipx} daddr . meta l4proto . th dport . numgen random mod 1"
            f' : {ipx} daddr . {p} dport ; comment "endpoint of slot N of a service IP ({p})" ; }}',
            f"add map {t} {NODEPORT_ENDPOINTS}-{p} {{ typeof meta l4proto . th dport . numgen random mod 1"
            f' : {ipx} daddr . {p} dport ; comment "endpoint of slot N of a NodePort ({p})" ; }}',
        ]
    decl += [
        f"add set {t} {HAIRPIN} {{ type {fam.addr_type} . {fam.addr_type} ; "
        'comment "endpoints that may reach themselves through a service" ; }',
    ]
    hairpin_rule = f"add rule {t} nat-postrouting {ipx} saddr . {ipx} daddr @{HAIRPIN} jump {MARK_MASQ}"
    rules.insert(rules.index(f"add rule {t} nat-postrouting jump masquerading"), hairpin_rule)
    return decl, rules, elements


@dataclass
class Rendered:
    """A full ruleset and what it consists of (the backend's model of the kernel after loading it)."""

    text: str
    objects: dict[ServicePortName, ServiceObjects]
    chains: set[str]  # every chain of the table
    sets: set[str]  # affinity sets
    shared: set[str] = field(default_factory=set)


def render(desired: DesiredState, settings: ProxierSettings, *, service_cidrs: Iterable[str] = (),
           flush: bool = True) -> Rendered:
    """The full `nft -f` script of podnet's table for a desired state.

    With `flush` (the default, what syncs load) every chain and element container is flushed before it
    is refilled, so loading it over an existing table converges it in one atomic transaction. Objects of
    the table that are no longer wanted are removed by `stale_removal` (the backend lists the kernel).
    """
    lay = Layout.of(desired, settings, service_cidrs)
    t = lay.table
    decl, rules, base_elements = base_lines(lay)
    objects = {spn: service_objects(sp, lay) for spn, sp in desired.services.items()}
    shared = set(precreated_chains())
    per_service: dict[str, list[str]] = {}
    aff_sets: dict[str, str] = {}
    for o in objects.values():
        shared |= o.shared_chains
        per_service.update(o.chains)
        aff_sets.update(o.sets)
    out = list(decl)
    shared_sorted = sorted(shared, key=_shared_sort_key)
    out += [f"add chain {t} {name}" for name in shared_sorted]
    out += [f"add chain {t} {name}" for name in per_service]
    out += [f"add set {t} {name} {{ {body} }}" for name, body in aff_sets.items()]
    fixed_chains = [line.split(" ")[4] for line in decl if line.startswith("add chain ")]
    containers = [line.split(" ")[4] for line in decl if line.startswith(("add set ", "add map "))]
    if flush:
        out += [f"flush chain {t} {name}" for name in (*fixed_chains, *shared_sorted, *per_service)]
        # Containers are flushed before rules are added: binding a rule to a map walks its elements.
        out += [f"flush {'set' if name in (CLUSTER_IPS, 'nodeport-ips', HAIRPIN) else 'map'} {t} {name}"
                for name in containers]
    out += rules
    for name in shared_sorted:
        out += [f"add rule {t} {name} {r}" for r in shared_chain_rules(name, lay)]
    for name, chain_rules in per_service.items():
        out += [f"add rule {t} {name} {r}" for r in chain_rules]
    out += base_elements
    out += element_lines(t, unique_elements(e for o in objects.values() for e in o.elements))
    chains = {*fixed_chains, *shared, *per_service}
    return Rendered("\n".join(out) + "\n", objects, chains, set(aff_sets), shared)


def _shared_sort_key(name: str) -> tuple:
    m = _SHARED.match(name)
    assert m is not None
    return (m.group(1), m.group(2), int(m.group(3)), int(m.group(4) or 0))


def element_lines(table: str, elements: Iterable[Element], op: str = "add") -> list[str]:
    """`add element` (or delete) commands, CHUNK elements per command, grouped by container."""
    by_container: dict[str, list[str]] = {}
    for e in elements:
        by_container.setdefault(e.container, []).append(e.body() if op == "add" else e.key)
    out = []
    for name, bodies in by_container.items():
        for i in range(0, len(bodies), CHUNK):
            out.append(f"{op} element {table} {name} {{ {', '.join(bodies[i:i + CHUNK])} }}")
    return out


def stale_removal(table: str, existing_chains: Iterable[str], existing_sets: Iterable[str],
                  wanted_chains: set[str], wanted_sets: set[str]) -> list[str]:
    """Commands that remove chains and affinity sets of our table that the desired state no longer has.

    Appended after the refill: once maps are flushed and wanted chains rewritten nothing refers to a
    stale chain any more; stale chains are flushed before any is deleted (they may refer to each other).
    """
    stale_chains = sorted(set(existing_chains) - wanted_chains)
    stale_sets = sorted(s for s in set(existing_sets) - wanted_sets if s.startswith("affinity-"))
    out = [f"flush chain {table} {c}" for c in stale_chains]
    out += [f"delete chain {table} {c}" for c in stale_chains]
    out += [f"delete set {table} {s}" for s in stale_sets]
    return out
