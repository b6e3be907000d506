"""Pure renderer: desired state -> the `iptables-restore` input kube-proxy v1.33 writes (filter + nat).

The layout is kube-proxy's own, rule for rule: chain names (sha256/base32 hashes of the service
port), comments, quoting, `statistic` probabilities, the masquerade mark, REJECT/DROP for services
without (local) endpoints, ClientIP affinity, traffic policies, LoadBalancer source ranges,
externalIPs, localhost NodePorts and nodePortAddresses. Operators' greps and scripts keep working.

Full syncs write every chain; partial syncs (KEP-3453) still write the whole filter table and the
KUBE-SERVICES/KUBE-NODEPORTS/KUBE-POSTROUTING/KUBE-MARK-MASQ chains, but the per-service
SVC/SVL/EXT/FW/SEP chains only of services that changed. Chains nobody references any more are
flushed and deleted (`:CHAIN` + `-X CHAIN`). Raw order is kube-proxy's (services in sorted order, so
the output is deterministic); `restore.py` is the only place that runs it.

Jump rules from the built-in chains (INPUT, FORWARD, OUTPUT, PREROUTING, POSTROUTING) cannot be
written by a `--noflush` restore without owning those chains; they are exported as data
(`JUMP_RULES`) for `restore.py` to ensure with `iptables -C`/`-I` on full syncs.

Use: `render(desired, settings_or_config, facts, previous=..., full=..., existing_nat_chains=...)`
returns a RenderResult (text, chains written/deleted, the nat chains the state needs, rule counts
for metrics). Each service's rules are cached by ServicePort identity, so a loop that keeps
unchanged ServicePort objects between syncs only formats what changed. Rules with
`-m nfacct` assume the counters exist (host facts `nfacct: true` means they were created).
"""

from __future__ import annotations

import base64
import hashlib
import ipaddress
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from podnet.proxy.config import HostFacts, KubeProxyConfiguration, ProxierSettings, settings_for_state
from podnet.proxy.state import IPV4, IPV6, DesiredState, ServicePort, categorize_endpoints, changed_services

# Chains kube-proxy owns.
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's anti-martian chain, duplicated by kube-proxy
KUBE_PROXY_CANARY = "KUBE-PROXY-CANARY"  # empty chains whose disappearance reveals an external flush
CANARY_TABLES = ("mangle", "nat", "filter")

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
FW_PREFIX = "KUBE-FW-"
EXT_PREFIX = "KUBE-EXT-"
SEP_PREFIX = "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX)

LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000  # above this, per-endpoint comments are dropped

NFACCT_INVALID = "ct_state_invalid_dropped_pkts"
NFACCT_LOCALHOST = "localhost_nps_accepted_pkts"

FILTER_TOP_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL)
NAT_TOP_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)


@dataclass(frozen=True, slots=True)
class JumpRule:
    """A rule in a built-in chain jumping to one of ours (kube-proxy's iptablesJumpChains)."""

    table: str
    src_chain: str
    dst_chain: str
    comment: str
    extra_args: tuple[str, ...] = ()

    def args(self) -> list[str]:
        """Rule arguments as passed to `iptables -t TABLE -C/-I SRC <args>` (no shell quoting)."""
        out = list(self.extra_args)
        if self.comment:
            out += ["-m", "comment", "--comment", self.comment]
        return out + ["-j", self.dst_chain]


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
# In kube-proxy's order. Each is ensured with "prepend" (iptables -I SRC 1), so on a fresh node the
# resulting order in a built-in chain is the reverse of this list. Ensure them on full syncs only.
JUMP_RULES: tuple[JumpRule, ...] = (
    JumpRule("filter", "INPUT", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    JumpRule("filter", "FORWARD", KUBE_EXTERNAL_SERVICES, "kubernetes externally-visible service portals", _NEW),
    JumpRule("filter", "INPUT", KUBE_NODEPORTS, "kubernetes health check service ports"),
    JumpRule("filter", "FORWARD", KUBE_SERVICES, "kubernetes service portals", _NEW),
    JumpRule("filter", "OUTPUT", KUBE_SERVICES, "kubernetes service portals", _NEW),
    JumpRule("filter", "FORWARD", KUBE_FORWARD, "kubernetes forwarding rules"),
    JumpRule("filter", "INPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    JumpRule("filter", "OUTPUT", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    JumpRule("filter", "FORWARD", KUBE_PROXY_FIREWALL, "kubernetes load balancer firewall", _NEW),
    JumpRule("nat", "OUTPUT", KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "PREROUTING", KUBE_SERVICES, "kubernetes service portals"),
    JumpRule("nat", "POSTROUTING", KUBE_POSTROUTING, "kubernetes postrouting rules"),
    # iptablesKubeletJumpChains: duplicates of kubelet's, no comment.
    JumpRule("filter", "INPUT", KUBE_FIREWALL, ""),
    JumpRule("filter", "OUTPUT", KUBE_FIREWALL, ""),
)


# ---------------------------------------------------------------------------------------------
# Names and numbers
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1 << 17)
def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """First 16 chars of base32(sha256(name + protocol)); iptables chain names are <= 28 chars."""
    digest = hashlib.sha256((service_port_name + protocol).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


@lru_cache(maxsize=1 << 18)
def endpoint_chain_name(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-<16 chars of base32(sha256(name + protocol + "ip:port"))>."""
    digest = hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest()
    return SEP_PREFIX + base64.b32encode(digest).decode()[:16]


@dataclass(frozen=True, slots=True)
class ServiceChains:
    svc: str  # KUBE-SVC-: endpoints for Cluster policy
    svl: str  # KUBE-SVL-: endpoints for Local policy
    fw: str  # KUBE-FW-: loadBalancerSourceRanges
    ext: str  # KUBE-EXT-: entry for external traffic


def service_chains(sp: ServicePort) -> ServiceChains:
    h = port_proto_hash(str(sp.name), sp.protocol.lower())
    return ServiceChains(SVC_PREFIX + h, SVL_PREFIX + h, FW_PREFIX + h, EXT_PREFIX + h)


def is_service_chain(name: str) -> bool:
    return name.startswith(SERVICE_CHAIN_PREFIXES)


@lru_cache(maxsize=4096)
def probability(n: int) -> str:
    """1/n with 10 decimals, as kube-proxy's computeProbability ("%0.10f")."""
    return f"{1.0 / n:.10f}"


# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RenderResult:
    """The restore input plus what the sync loop needs for metrics and the next partial sync."""

    text: str
    full: bool
    filter_chains: tuple[str, ...]  # chains declared (and so flushed) in *filter
    nat_chains: tuple[str, ...]  # chains declared (and so flushed) in *nat, stale ones included
    deleted_chains: tuple[str, ...]  # stale service chains removed with -X
    active_nat_chains: frozenset[str]  # every per-service nat chain the desired state needs
    written_services: frozenset[str]  # "ns/name" whose SVC/SVL/EXT/FW/SEP chains are in `text`
    large_cluster_mode: bool
    filter_rules: int  # -A lines in *filter
    nat_rules_written: int  # -A lines in *nat of this input
    nat_rules_total: int  # nat rules the kernel holds after it (skipped unchanged chains included)
    no_local_endpoints: dict[str, int] = field(default_factory=dict)  # {"internal": n, "external": n}

    def rules_by_chain(self, table: str) -> dict[str, list[str]]:
        """The "-A CHAIN ..." lines of one table grouped by chain, in input order."""
        out: dict[str, list[str]] = {}
        current = None
        for line in self.text.split("\n"):
            if line.startswith("*"):
                current = line[1:]
            elif current == table and line.startswith("-A "):
                out.setdefault(line.split(" ", 2)[1], []).append(line)
        return out


def active_nat_chains(
    desired: DesiredState,
    config: KubeProxyConfiguration | ProxierSettings | None = None,
    facts: HostFacts | None = None,
) -> frozenset[str]:
    """Per-service nat chains a desired state needs (the chains a sync must not delete)."""
    s = settings_for_state(config, facts, desired)
    out: set[str] = set()
    for sp in desired.services.values():
        out.update(_ServicePlan(sp, desired, s).active_chains())
    return frozenset(out)


# ---------------------------------------------------------------------------------------------
# Per service port decisions (the top of kube-proxy's loop body)
# ---------------------------------------------------------------------------------------------


class _ServicePlan:
    __slots__ = (
        "sp", "spn", "proto", "names", "cat", "uses_cluster_chain", "uses_local_chain", "internal_chain",
        "has_internal", "external_policy_chain", "has_external", "uses_ext", "uses_fw", "lb_chain",
    )

    def __init__(self, sp: ServicePort, desired: DesiredState, s: ProxierSettings) -> None:
        self.sp = sp
        self.spn = str(sp.name)
        self.proto = sp.protocol.lower()
        self.names = names = service_chains(sp)
        self.cat = cat = categorize_endpoints(
            sp, desired.node_name, desired.topology_zone, prefer_same_node=s.prefer_same_node
        )
        self.uses_cluster_chain = bool(cat.cluster) and sp.uses_cluster_endpoints
        self.uses_local_chain = bool(cat.local) and sp.uses_local_endpoints
        self.internal_chain = names.svc
        self.has_internal = cat.has_any
        if sp.internal_policy_local:
            self.internal_chain = names.svl
            if not cat.local:
                self.has_internal = False
        self.external_policy_chain = names.svc
        self.has_external = cat.has_any
        if sp.external_policy_local:
            self.external_policy_chain = names.svl
            if not cat.local:
                self.has_external = False
        # The EXT chain exists whenever there are endpoints anywhere: even with eTP=Local and no
        # local endpoint it short-circuits pod- and node-originated traffic to the cluster chain.
        self.uses_ext = cat.has_any and sp.externally_accessible
        self.uses_fw = cat.has_any and bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
        self.lb_chain = names.fw if self.uses_fw else names.ext

    def active_chains(self) -> list[str]:
        out = []
        if self.uses_ext:
            out.append(self.names.ext)
        if self.uses_fw:
            out.append(self.names.fw)
        if self.uses_cluster_chain:
            out.append(self.names.svc)
        if self.uses_local_chain:
            out.append(self.names.svl)
        proto = self.proto
        out.extend(endpoint_chain_name(self.spn, proto, str(ep)) for ep in self.cat.reachable)
        return out


@dataclass(frozen=True, slots=True)
class _Context:
    """Everything besides the ServicePort that a service's rules depend on."""

    s: ProxierSettings
    node_name: str
    zone: str
    large: bool


class _ServiceOutput:
    """The rules one service port contributes: capture rules, filter rules, and its own chains."""

    __slots__ = ("sp", "ctx", "plan", "filter_lines", "nat_head", "chains", "no_local_internal",
                 "no_local_external", "_lines")

    def __init__(self, sp: ServicePort, desired: DesiredState, ctx: _Context) -> None:
        s = ctx.s
        self.sp, self.ctx = sp, ctx
        self.plan = plan = _ServicePlan(sp, desired, s)
        self._lines: list[str] | None = None
        spn, proto, names, cat = plan.spn, plan.proto, plan.names, plan.cat
        match = f"-m {proto} -p {proto}"
        port = sp.port
        filt: list[str] = []
        nat: list[str] = []
        self.no_local_internal = self.no_local_external = 0

        if not cat.has_any:
            int_target = ext_target = "REJECT"
            int_comment = ext_comment = f'"{spn} has no endpoints"'
        else:
            int_target = ext_target = ""
            int_comment = ext_comment = ""
            if not plan.has_internal:
                int_target, int_comment = "DROP", f'"{spn} has no local endpoints"'
                self.no_local_internal = 1
            if not plan.has_external:
                ext_target, ext_comment = "DROP", f'"{spn} has no local endpoints"'
                self.no_local_external = 1

        # Capture the cluster IP.
        if plan.has_internal:
            nat.append(
                f'-A {KUBE_SERVICES} -m comment --comment "{spn} cluster IP" {match} -d {sp.cluster_ip} '
                f"--dport {port} -j {plan.internal_chain}"
            )
        else:
            filt.append(
                f"-A {KUBE_SERVICES} -m comment --comment {int_comment} {match} -d {sp.cluster_ip} "
                f"--dport {port} -j {int_target}"
            )

        # Capture external IPs.
        for eip in sp.external_ips:
            if cat.has_any:
                nat.append(
                    f'-A {KUBE_SERVICES} -m comment --comment "{spn} external IP" {match} -d {eip} '
                    f"--dport {port} -j {names.ext}"
                )
            if not plan.has_external:
                filt.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {ext_comment} {match} -d {eip} "
                    f"--dport {port} -j {ext_target}"
                )

        # Capture load-balancer ingress IPs.
        for lbip in sp.load_balancer_ips:
            if cat.has_any:
                nat.append(
                    f'-A {KUBE_SERVICES} -m comment --comment "{spn} loadbalancer IP" {match} -d {lbip} '
                    f"--dport {port} -j {plan.lb_chain}"
                )
            if plan.uses_fw:
                filt.append(
                    f'-A {KUBE_PROXY_FIREWALL} -m comment --comment "{spn} traffic not accepted by {names.fw}" '
                    f"{match} -d {lbip} --dport {port} -j DROP"
                )
        if not plan.has_external:
            for lbip in sp.load_balancer_ips:
                filt.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {ext_comment} {match} -d {lbip} "
                    f"--dport {port} -j {ext_target}"
                )

        # Capture node ports. By design they bypass loadBalancerSourceRanges.
        if sp.node_port:
            if cat.has_any:
                if s.localhost_node_ports and s.ip_family != IPV6 and s.nfacct_localhost:
                    nat.append(
                        f"-A {KUBE_NODEPORTS} -m comment --comment {spn} {match} -d 127.0.0.0/8 "
                        f"--dport {sp.node_port} -m nfacct --nfacct-name {NFACCT_LOCALHOST} -j {names.ext}"
                    )
                nat.append(
                    f"-A {KUBE_NODEPORTS} -m comment --comment {spn} {match} --dport {sp.node_port} -j {names.ext}"
                )
            if not plan.has_external:
                filt.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {ext_comment} -m addrtype --dst-type LOCAL "
                    f"{match} --dport {sp.node_port} -j {ext_target}"
                )

        # Health check node port: accepted whether or not this node has local endpoints.
        if sp.health_check_node_port:
            filt.append(
                f'-A {KUBE_NODEPORTS} -m comment --comment "{spn} health check node port" -m tcp -p tcp '
                f"--dport {sp.health_check_node_port} -j ACCEPT"
            )
        self.filter_lines = filt
        self.nat_head = nat
        self.chains = plan.active_chains()

    def chain_lines(self) -> list[str]:
        """Rules of the service's own SVC/SVL/EXT/FW/SEP chains (built once, then kept)."""
        if self._lines is None:
            s = self.ctx.s
            out: list[str] = []
            _write_service_chains(self.plan, s, self.ctx.large, out, " ".join(s.local_detector.if_local),
                                  " ".join(s.local_detector.if_not_local))
            self._lines = out
        return self._lines

    def chain_rule_count(self) -> int:
        if self._lines is not None:
            return len(self._lines)
        return _count_service_chain_rules(self.plan, self.ctx.s, self.ctx.large)


_cache_lock = threading.Lock()
_cache_ctx: _Context | None = None
_cache: dict[int, _ServiceOutput] = {}
_cache_limit = 4096


def _cache_for(ctx: _Context) -> dict[int, _ServiceOutput]:
    with _cache_lock:
        return _cache if ctx == _cache_ctx else {}


def _remember(ctx: _Context, seen: dict[int, _ServiceOutput], used: dict[int, _ServiceOutput]) -> None:
    """Keep this render's outputs for the next one. Entries hold their ServicePort, so ids stay
    unique while cached; the cache is bounded by twice the largest state rendered."""
    global _cache_ctx, _cache, _cache_limit
    with _cache_lock:
        _cache_limit = max(_cache_limit, 2 * len(used) + 1024)
        if ctx != _cache_ctx:
            _cache_ctx, _cache = ctx, dict(used)
            return
        if len(_cache) + len(used) > _cache_limit:
            _cache = dict(used)
        else:
            _cache.update(used)


# ---------------------------------------------------------------------------------------------
# render
# ---------------------------------------------------------------------------------------------


def render(
    desired: DesiredState,
    config: KubeProxyConfiguration | ProxierSettings | None = None,
    facts: HostFacts | None = None,
    *,
    previous: DesiredState | None = None,
    full: bool = True,
    existing_nat_chains: Iterable[str] | None = None,
    cleanup_stale: bool = True,
    large_cluster: bool | None = None,
    changed_names: Iterable[str] | None = None,
) -> RenderResult:
    """The iptables-restore input (`--noflush`) of one sync.

    config: a KubeProxyConfiguration (resolved with `facts`) or ready ProxierSettings.
    previous: the desired state of the last *successful* sync; a partial sync (full=False) writes
        per-service chains only for services that differ from it (all of them if it is None).
    existing_nat_chains: nat chain names currently in the kernel (from `iptables-save -t nat`);
        stale KUBE-SVC/SVL/EXT/FW/SEP chains among them are flushed and deleted. When None, the
        chains `previous` needed are assumed to exist. cleanup_stale=False skips deletion (kube-proxy
        does it at most once per syncPeriod in large clusters).
    large_cluster: force kube-proxy's largeClusterMode on/off (default: > 1000 endpoints in `desired`).
    changed_names: "ns/name" of the services to write on a partial sync, when the caller already
        knows them (saves comparing `previous` with `desired`).

    Per-service output is cached by ServicePort identity (a sync loop that keeps unchanged
    ServicePort objects between states re-renders only what changed); the result is the same.
    """
    s = settings_for_state(config, facts, desired)
    ipv6 = s.ip_family == IPV6
    mark = s.masquerade_mark
    # large_cluster: the sync loop renders a few services at a time and passes the whole state's mode.
    large = (
        desired.total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD if large_cluster is None else large_cluster
    )
    if full:
        changed = None
    elif changed_names is not None:
        changed = frozenset(changed_names)
    else:
        changed = None if previous is None else changed_services(previous, desired)

    filter_chains = list(FILTER_TOP_CHAINS)
    filter_rules: list[str] = []
    nat_chains = list(NAT_TOP_CHAINS)
    nat_rules: list[str] = [
        f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
        f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}",
        f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
        + (" --random-fully" if s.random_fully else ""),
        f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}",
    ]
    if not ipv6 and s.localhost_node_ports:
        filter_chains.append(KUBE_FIREWALL)
        filter_rules.append(
            f'-A {KUBE_FIREWALL} -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
            "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
        )

    active: set[str] = set()
    written: set[str] = set()
    skipped_nat_rules = 0
    no_local_internal = no_local_external = 0
    ctx = _Context(s, desired.node_name, desired.topology_zone, large)
    cache = _cache_for(ctx)
    used: dict[int, _ServiceOutput] = {}

    for sp in desired.services.values():
        out = cache.get(id(sp))
        if out is None or out.sp is not sp:
            out = _ServiceOutput(sp, desired, ctx)
        used[id(sp)] = out
        filter_rules.extend(out.filter_lines)
        nat_rules.extend(out.nat_head)
        no_local_internal += out.no_local_internal
        no_local_external += out.no_local_external
        active.update(out.chains)
        if changed is not None and sp.name.namespaced_name not in changed:
            skipped_nat_rules += out.chain_rule_count()
            continue
        written.add(sp.name.namespaced_name)
        nat_chains.extend(out.chains)
        nat_rules.extend(out.chain_lines())
    _remember(ctx, cache, used)

    # Stale chains: flush with a chain line, then delete.
    deleted: list[str] = []
    if cleanup_stale:
        if existing_nat_chains is None and previous is not None:
            existing_nat_chains = active_nat_chains(previous, s)
        if existing_nat_chains is not None:
            deleted = sorted(c for c in set(existing_nat_chains) - active if is_service_chain(c))
            nat_chains.extend(deleted)
            nat_rules.extend(f"-X {c}" for c in deleted)

    # Finally the tail call to KUBE-NODEPORTS: must stay the last rule of KUBE-SERVICES.
    last = '"kubernetes service nodeports; NOTE: this must be the last rule in this chain"'
    if s.node_ports_match_all:
        dest = "-m addrtype --dst-type LOCAL"
        if ipv6:
            dest += " ! -d ::1/128"
        elif not s.localhost_node_ports:
            dest += " ! -d 127.0.0.0/8"
        nat_rules.append(f"-A {KUBE_SERVICES} -m comment --comment {last} {dest} -j {KUBE_NODEPORTS}")
    else:
        for ip in s.node_port_ips():
            if ip.startswith("127.") and not s.localhost_node_ports or ip == "::1":
                continue  # loopback NodePorts need route_localnet (IPv4 only)
            nat_rules.append(f"-A {KUBE_SERVICES} -m comment --comment {last} -d {ip} -j {KUBE_NODEPORTS}")

    if not s.conntrack_tcp_liberal:
        nfacct = f" -m nfacct --nfacct-name {NFACCT_INVALID}" if s.nfacct_invalid else ""
        filter_rules.append(f"-A {KUBE_FORWARD} -m conntrack --ctstate INVALID{nfacct} -j DROP")
    filter_rules.append(
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding rules" -m mark --mark {mark}/{mark} -j ACCEPT'
    )
    filter_rules.append(
        f'-A {KUBE_FORWARD} -m comment --comment "kubernetes forwarding conntrack rule" '
        "-m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT"
    )

    text = "\n".join(
        [
            "*filter",
            *(f":{c} - [0:0]" for c in filter_chains),
            *filter_rules,
            "COMMIT",
            "*nat",
            *(f":{c} - [0:0]" for c in nat_chains),
            *nat_rules,
            "COMMIT",
            "",
        ]
    )
    nat_written = len(nat_rules) - len(deleted)
    return RenderResult(
        text=text,
        full=full,
        filter_chains=tuple(filter_chains),
        nat_chains=tuple(nat_chains),
        deleted_chains=tuple(deleted),
        active_nat_chains=frozenset(active),
        written_services=frozenset(written),
        large_cluster_mode=large,
        filter_rules=len(filter_rules),
        nat_rules_written=nat_written,
        nat_rules_total=nat_written + skipped_nat_rules,
        no_local_endpoints={"internal": no_local_internal, "external": no_local_external},
    )


def _write_service_chains(
    plan: _ServicePlan, s: ProxierSettings, large: bool, out: list[str], if_local: str, if_not_local: str
) -> None:
    """The SVC/SVL/EXT/FW/SEP rules of one service port, in kube-proxy's order."""
    sp, spn, proto, names, cat = plan.sp, plan.spn, plan.proto, plan.names, plan.cat
    match = f"-m {proto} -p {proto}"

    # Internal traffic: masquerade off-cluster sources reaching the cluster IP (a static route to
    # the service range via any node works, and the reply must come back through that node).
    if plan.has_internal:
        head = f'-A {plan.internal_chain} -m comment --comment "{spn} cluster IP" {match} -d {sp.cluster_ip} --dport {sp.port}'
        if s.masquerade_all:
            out.append(f"{head} -j {KUBE_MARK_MASQ}")
        elif s.local_detector.implemented:
            out.append(f"{head} {if_not_local} -j {KUBE_MARK_MASQ}")

    if plan.uses_ext:
        ext = names.ext
        if not sp.external_policy_local:
            out.append(
                f'-A {ext} -m comment --comment "masquerade traffic for {spn} external destinations" -j {KUBE_MARK_MASQ}'
            )
        else:
            if s.local_detector.implemented:
                out.append(
                    f'-A {ext} -m comment --comment "pod traffic for {spn} external destinations" '
                    f"{if_local} -j {names.svc}"
                )
            out.append(
                f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {spn} external destinations" '
                f"-m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
            )
            out.append(
                f'-A {ext} -m comment --comment "route LOCAL traffic for {spn} external destinations" '
                f"-m addrtype --src-type LOCAL -j {names.svc}"
            )
        if plan.has_external:
            out.append(f"-A {ext} -j {plan.external_policy_chain}")

    if plan.uses_fw:
        head = f'-A {names.fw} -m comment --comment "{spn} loadbalancer IP"'
        allow_from_node = False
        node_ip = _ip_or_none(s.node_ip)
        for cidr in sp.load_balancer_source_ranges:
            out.append(f"{head} -s {cidr} -j {names.ext}")
            if node_ip is not None and _cidr_contains(cidr, node_ip):
                allow_from_node = True
        if allow_from_node:
            # A node reaching a VIP that is also a local address loops back with the VIP as source.
            out.extend(f"{head} -s {lbip} -j {names.ext}" for lbip in sp.load_balancer_ips)
        out.append(
            f'-A {names.fw} -m comment --comment "other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL"'
        )

    if plan.uses_cluster_chain:
        _write_dispatch(out, names.svc, sp, spn, proto, cat.cluster, large)
    if plan.uses_local_chain:
        _write_dispatch(out, names.svl, sp, spn, proto, cat.local, large)

    comment = "" if large else f" -m comment --comment {spn}"
    recent = ""
    for ep in cat.reachable:
        epstr = str(ep)
        chain = endpoint_chain_name(spn, proto, epstr)
        if sp.client_ip_affinity:
            recent = f" -m recent --name {chain} --set"
        # Hairpin: a pod reaching itself through the service must be masqueraded, or the reply
        # would go straight back to it with the wrong source.
        out.append(f"-A {chain}{comment} -s {ep.ip} -j {KUBE_MARK_MASQ}")
        out.append(f"-A {chain}{comment}{recent} {match} -j DNAT --to-destination {epstr}")


def _write_dispatch(
    out: list[str], chain: str, sp: ServicePort, spn: str, proto: str, endpoints: tuple[Any, ...], large: bool
) -> None:
    """Affinity checks first, then one `statistic` rule per endpoint: endpoint i of n wins with 1/(n-i)."""
    if sp.client_ip_affinity:
        for ep in endpoints:
            epstr = str(ep)
            sep = endpoint_chain_name(spn, proto, epstr)
            comment = "" if large else f' -m comment --comment "{spn} -> {epstr}"'
            out.append(
                f"-A {chain}{comment} -m recent --name {sep} --rcheck --seconds {sp.sticky_max_age_seconds} "
                f"--reap -j {sep}"
            )
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        epstr = str(ep)
        sep = endpoint_chain_name(spn, proto, epstr)
        comment = "" if large else f' -m comment --comment "{spn} -> {epstr}"'
        stat = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        out.append(f"-A {chain}{comment}{stat} -j {sep}")


def _count_service_chain_rules(plan: _ServicePlan, s: ProxierSettings, large: bool) -> int:
    """How many rules `_write_service_chains` would write (for the nat rules metric), cheaply."""
    sp, cat = plan.sp, plan.cat
    n = 0
    if plan.has_internal and (s.masquerade_all or s.local_detector.implemented):
        n += 1
    if plan.uses_ext:
        n += (2 + int(s.local_detector.implemented)) if sp.external_policy_local else 1
        n += int(plan.has_external)
    if plan.uses_fw:
        n += len(sp.load_balancer_source_ranges) + 1
        node_ip = _ip_or_none(s.node_ip)
        if node_ip is not None and any(_cidr_contains(c, node_ip) for c in sp.load_balancer_source_ranges):
            n += len(sp.load_balancer_ips)
    per_ep = 2 if sp.client_ip_affinity else 1
    if plan.uses_cluster_chain:
        n += per_ep * len(cat.cluster)
    if plan.uses_local_chain:
        n += per_ep * len(cat.local)
    return n + 2 * len(cat.reachable)


@lru_cache(maxsize=1024)
def _ip_or_none(text: str) -> Any:
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _cidr_contains(cidr: str, ip: Any) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version == ip.version and ip in net


__all__ = [
    "CANARY_TABLES",
    "IPV4",
    "IPV6",
    "JUMP_RULES",
    "KUBE_PROXY_CANARY",
    "JumpRule",
    "RenderResult",
    "ServiceChains",
    "active_nat_chains",
    "endpoint_chain_name",
    "is_service_chain",
    "port_proto_hash",
    "probability",
    "render",
    "service_chains",
]
