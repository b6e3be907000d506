"""Pure renderer: desired state -> the `iptables-restore` input kube-proxy v1.33 writes (filter + nat).

The layout is kube-proxy's own, rule for rule: chain names (names.py), comments, quoting, `statistic`
probabilities, the masquerade mark, REJECT/DROP for services without (local) endpoints, ClientIP affinity,
traffic policies, LoadBalancer source ranges, externalIPs, localhost NodePorts and nodePortAddresses.
Operators' greps and scripts keep working. Each service port's rules come from services.py.

Full syncs write every chain; partial syncs (KEP-3453) still write the whole filter table and the
KUBE-SERVICES/KUBE-NODEPORTS/KUBE-POSTROUTING/KUBE-MARK-MASQ chains, but the per-service
SVC/SVL/EXT/FW/SEP chains only of services that changed. Chains nobody references any more are
flushed and deleted (`:CHAIN` + `-X CHAIN`). Raw order is kube-proxy's (services in sorted order, so
the output is deterministic); restore.py is the only place that runs it.

Use: `render(desired, settings_or_config, facts, previous=..., full=..., existing_nat_chains=..., cache=...)`
returns a RenderResult (text, chains written/deleted, the nat chains the state needs, rule counts for
metrics). No module state: a RenderCache the caller owns keeps each service's rules by ServicePort
identity, so a loop that keeps unchanged ServicePort objects between syncs only formats what changed.
Rules with `-m nfacct` assume the counters exist (host facts `nfacct: true` means they were created).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from podnet.api.defaults import IPV6
from podnet.proxy.config import HostFacts, KubeProxyConfiguration
from podnet.proxy.iptables.names import (
    FILTER_TOP_CHAINS,
    KUBE_FIREWALL,
    KUBE_FORWARD,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_POSTROUTING,
    KUBE_SERVICES,
    LARGE_CLUSTER_ENDPOINTS_THRESHOLD,
    NAT_TOP_CHAINS,
    NFACCT_INVALID,
    is_service_chain,
)
from podnet.proxy.iptables.ruleset import CACHE_TRICK_MIN_CHAINS, Block, Ruleset
from podnet.proxy.iptables.services import RenderContext, ServiceOutput, ServicePlan
from podnet.proxy.model import DesiredState, ServicePort, changed_services
from podnet.proxy.settings import ProxierSettings, settings_for_state

# ---------------------------------------------------------------------------------------------
# The result
# ---------------------------------------------------------------------------------------------


def restore_text(tables: dict[str, Block]) -> str:
    """The iptables-restore input of a render's tables: what the golden files hold, byte for byte."""
    out: list[str] = []
    for table, block in tables.items():
        out.append(f"*{table}")
        out.extend(block.restore_lines())
        out.append("COMMIT")
    out.append("")
    return "\n".join(out)


@dataclass(frozen=True)
class RenderResult:
    """A render's structured output (`tables`), its restore input (`text`, made from `tables` when asked for:
    the sync path streams `tables` instead), and what the sync loop needs for metrics and the next partial sync."""

    tables: dict[str, Block]  # "filter", "nat", in restore order
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

    @property
    def text(self) -> str:
        """The iptables-restore input: restore_text(tables)."""
        return restore_text(self.tables)

    def rules_by_chain(self, table: str) -> dict[str, list[str]]:
        """The "-A CHAIN ..." lines of one table grouped by chain, in input order."""
        out: dict[str, list[str]] = {}
        for line in self.tables[table].lines:
            if line.startswith("-A "):
                out.setdefault(line.split(" ", 2)[1], []).append(line)
        return out

    def ruleset(self) -> Ruleset:
        """The render as a Ruleset (each declared chain with its complete rules, deleted chains): the
        applied model after loading it, and the input of a partial plan. Built from `tables`, no parse, and
        holding the render's own line strings (no copy of a rule)."""
        rs = Ruleset()
        for table, block in self.tables.items():
            chains: dict[str, list[str]] = {c: [] for c in block.chains}
            for line in block.lines:
                if line[1] == "A":
                    chains[line[3:line.index(" ", 3)]].append(line)
            rs.chains[table] = chains
            if block.deleted:
                rs.deleted[table] = list(block.deleted)
        return rs


def active_nat_chains(
    desired: DesiredState,
    config: KubeProxyConfiguration | ProxierSettings | None = None,
    facts: HostFacts | None = None,
) -> frozenset[str]:
    """Per-service nat chains a desired state needs (the chains a sync must not delete)."""
    s = settings_for_state(config, facts, desired)
    out: set[str] = set()
    for sp in desired.services.values():
        out.update(ServicePlan(sp, desired, s).active_chains())
    return frozenset(out)



class RenderCache:
    """Each service port's rendered output from earlier renders, kept by ServicePort identity.

    The backend owns one and passes it to every render; render(cache=None) formats everything. Entries hold
    their ServicePort, so ids stay unique while cached; a change of settings, node, zone or largeClusterMode
    empties it; it is bounded by twice the largest state rendered. Not thread-safe: one owner renders at a time.
    """

    __slots__ = ("_ctx", "_entries", "_limit")

    def __init__(self) -> None:
        self._ctx: RenderContext | None = None
        self._entries: dict[int, ServiceOutput] = {}
        self._limit = 4096

    def lookup(self, ctx: RenderContext) -> dict[int, ServiceOutput]:
        """The entries valid for a render in `ctx` (none if the context changed)."""
        return self._entries if ctx == self._ctx else {}

    def remember(self, ctx: RenderContext, used: dict[int, ServiceOutput]) -> None:
        """Keep one render's outputs for the next one."""
        self._limit = max(self._limit, 2 * len(used) + 1024)
        if ctx != self._ctx:
            self._ctx, self._entries = ctx, dict(used)
        elif len(self._entries) + len(used) > self._limit:
            self._entries = dict(used)
        else:
            self._entries.update(used)


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
    cache: RenderCache | None = None,
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

    cache: per-service output kept by ServicePort identity between renders (a sync loop that keeps unchanged
        ServicePort objects between states re-renders only what changed); None renders everything. The
        result is the same either way.
    """
    s = settings_for_state(config, facts, desired)
    if full:
        changed = None
    elif changed_names is not None:
        changed = frozenset(changed_names)
    else:
        changed = None if previous is None else changed_services(previous, desired)
    r = _Render(desired, s, large_cluster, changed, cache)
    for sp in desired.services.values():
        r.add(sp)
    return r.finish(full=full, previous=previous, existing_nat_chains=existing_nat_chains,
                    cleanup_stale=cleanup_stale)


class _Render:
    """One render as it accumulates: render() adds every service and finishes; FullStream hands out the nat
    lines added so far while it adds them."""

    def __init__(self, desired: DesiredState, s: ProxierSettings, large_cluster: bool | None,
                 changed: frozenset[str] | None, cache: RenderCache | None) -> None:
        self.desired, self.s, self.changed, self.cache = desired, s, changed, cache
        self.ipv6 = s.ip_family == IPV6
        mark = self.mark = s.masquerade_mark
        # large_cluster: the sync loop renders a few services at a time and passes the whole state's mode.
        self.large = (
            desired.total_endpoints > LARGE_CLUSTER_ENDPOINTS_THRESHOLD if large_cluster is None else large_cluster
        )
        self.filter_chains = list(FILTER_TOP_CHAINS)
        self.filter_rules: list[str] = []
        self.nat_chains = list(NAT_TOP_CHAINS)
        self.nat_rules: list[str] = [
            f"-A {KUBE_POSTROUTING} -m mark ! --mark {mark}/{mark} -j RETURN",
            f"-A {KUBE_POSTROUTING} -j MARK --xor-mark {mark}",
            f'-A {KUBE_POSTROUTING} -m comment --comment "kubernetes service traffic requiring SNAT" -j MASQUERADE'
            + (" --random-fully" if s.random_fully else ""),
            f"-A {KUBE_MARK_MASQ} -j MARK --or-mark {mark}",
        ]
        if not self.ipv6 and s.localhost_node_ports:
            self.filter_chains.append(KUBE_FIREWALL)
            self.filter_rules.append(
                f'-A {KUBE_FIREWALL} -m comment --comment "block incoming localnet connections" -d 127.0.0.0/8 '
                "! -s 127.0.0.0/8 -m conntrack ! --ctstate RELATED,ESTABLISHED,DNAT -j DROP"
            )
        self.active: set[str] = set()
        self.written: set[str] = set()
        self.skipped_nat_rules = 0
        self.no_local_internal = self.no_local_external = 0
        self.ctx = RenderContext(s, desired.node_name, desired.topology_zone, self.large)
        self.seen = cache.lookup(self.ctx) if cache is not None else {}
        self.used: dict[int, ServiceOutput] = {}

    def add(self, sp: ServicePort) -> None:
        out = self.seen.get(id(sp))
        if out is None or out.sp is not sp:
            out = ServiceOutput(sp, self.desired, self.ctx)
        self.used[id(sp)] = out
        self.filter_rules.extend(out.filter_lines)
        self.nat_rules.extend(out.nat_head)
        self.no_local_internal += out.no_local_internal
        self.no_local_external += out.no_local_external
        self.active.update(out.chains)
        if self.changed is not None and sp.name.namespaced_name not in self.changed:
            self.skipped_nat_rules += out.chain_rule_count()
            return
        self.written.add(sp.name.namespaced_name)
        self.nat_chains.extend(out.chains)
        self.nat_rules.extend(out.chain_lines())

    def finish(self, *, full: bool, previous: DesiredState | None, existing_nat_chains: Iterable[str] | None,
               cleanup_stale: bool) -> RenderResult:
        s, mark, ipv6 = self.s, self.mark, self.ipv6
        nat_chains, nat_rules, filter_rules = self.nat_chains, self.nat_rules, self.filter_rules
        if self.cache is not None:
            self.cache.remember(self.ctx, self.used)
        # Stale chains: flush with a chain line, then delete.
        deleted: list[str] = []
        if cleanup_stale:
            if existing_nat_chains is None and previous is not None:
                existing_nat_chains = active_nat_chains(previous, s)
            if existing_nat_chains is not None:
                deleted = sorted(c for c in set(existing_nat_chains) - self.active if is_service_chain(c))
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

        tables = {"filter": Block(tuple(self.filter_chains), tuple(filter_rules)),
                  "nat": Block(tuple(nat_chains), tuple(nat_rules), tuple(deleted))}
        nat_written = len(nat_rules) - len(deleted)
        return RenderResult(
            tables=tables,
            full=full,
            filter_chains=tuple(self.filter_chains),
            nat_chains=tuple(nat_chains),
            deleted_chains=tuple(deleted),
            active_nat_chains=frozenset(self.active),
            written_services=frozenset(self.written),
            large_cluster_mode=self.large,
            filter_rules=len(filter_rules),
            nat_rules_written=nat_written,
            nat_rules_total=nat_written + self.skipped_nat_rules,
            no_local_endpoints={"internal": self.no_local_internal, "external": self.no_local_external},
        )



class FullStream:
    """A full render (stale chains are the restorer's: it finds them in the kernel) handed out while it is
    made, so a full sync's iptables-restore reads the nat table as it is formatted instead of waiting for the
    whole render (2.8 s at 10k services x 10 endpoints, which came serially before the load).

    `lines()` yields the nat block service by service, each batch's chain declarations before its rules, so
    every chain is declared before a rule names it; the rules of each chain come in render()'s order. Once
    it is exhausted `blocks()` and `ruleset()` are render()'s for the same state. One use: `again()` makes
    a fresh one (the error message of a failed load quotes the input it read)."""

    first = "nat"

    def __init__(self, desired: DesiredState, config: KubeProxyConfiguration | ProxierSettings | None = None, *,
                 cache: RenderCache | None = None, large_cluster: bool | None = None) -> None:
        self._args = (desired, config, large_cluster)
        self._r = _Render(desired, settings_for_state(config, None, desired), large_cluster, None, cache)
        self._result: RenderResult | None = None
        self._lines: Iterator[str] | None = None
        self.large = len(desired.services) >= CACHE_TRICK_MIN_CHAINS  # at least a chain per service port

    def declared_before(self, table: str) -> tuple[str, ...]:
        """The chains declared before any service's (the targets of kube-proxy's jumps from built-in chains)."""
        return tuple(self._r.filter_chains if table == "filter" else self._r.nat_chains[:len(NAT_TOP_CHAINS)])

    def lines(self) -> Iterator[str]:
        """The nat block's lines; every call continues the one render (a stream is read once)."""
        if self._lines is None:
            self._lines = self._render_lines()
        return self._lines

    def _render_lines(self) -> Iterator[str]:
        r = self._r
        chains = rules = 0

        def drain() -> Iterator[str]:
            nonlocal chains, rules
            for c in r.nat_chains[chains:]:
                yield f":{c} - [0:0]"
            yield from r.nat_rules[rules:]
            chains, rules = len(r.nat_chains), len(r.nat_rules)

        yield from drain()
        for sp in r.desired.services.values():
            r.add(sp)
            yield from drain()
        self._result = r.finish(full=True, previous=None, existing_nat_chains=None, cleanup_stale=False)
        yield from drain()  # the last rule of KUBE-SERVICES

    def result(self) -> RenderResult:
        if self._result is None:
            for _ in self.lines():
                pass
        assert self._result is not None
        return self._result

    def blocks(self) -> dict[str, Block]:
        return self.result().tables

    def ruleset(self) -> Ruleset:
        return self.result().ruleset()

    def again(self) -> FullStream:
        desired, config, large = self._args
        return FullStream(desired, config, large_cluster=large)
