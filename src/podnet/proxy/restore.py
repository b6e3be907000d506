"""Apply iptables-restore input to the kernel: the one place that runs iptables for the proxy.

The renderer (proxy/iptables.py) writes kube-proxy's restore text; this module decides *how* to load it,
because on iptables-nft 1.8.x the obvious way (`iptables-restore --noflush` of the whole text, as kube-proxy
does) is quadratic: every chain name of the input is inserted into a sorted linked list by a linear walk
(nft-cache.c) to build a partial kernel cache. 10k services x 3 endpoints take minutes. Two facts make podnet
fast without ever flushing a chain it does not own (see shared/reference/performance.md):

* A `-S` command (list the whole table) as the first command of a table block makes iptables fetch the full
  cache once and skip the per-chain list; the output is discarded. Full syncs use it.
* Partial syncs send only what changed: rewritten per-service chains, deleted chains, and for the big
  dispatch chains (KUBE-SERVICES, KUBE-NODEPORTS, ...) single `-D`/`-I` lines instead of the whole chain.
  A one-service change is then a few dozen lines whatever the cluster size.

What remains is kernel time: a transaction that adds any rule makes nf_tables re-validate every rule
reachable from the table's base chains (nft_table_validate; PREROUTING and OUTPUT both reach all of
KUBE-SERVICES), about 0.2 s at 10k services x 10 endpoints. Right after a full sync the next transaction also
waits until the kernel has freed the replaced rules.

Every sync is still one `iptables-restore -w --noflush` process (one transaction per table, as kube-proxy).
The Restorer keeps a model of what it last applied; after any failure the model is dropped and the next sync
must be a full one, which rewrites every chain podnet owns and deletes stale ones found in the kernel.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

from podnet.proxy.backend import SyncError

log = logging.getLogger(__name__)

Mode = Literal["nft", "legacy"]
TABLE_ORDER = ("filter", "nat", "mangle", "raw")

# Per-service chains kube-proxy deletes when no longer referenced (stale-chain cleanup).
SERVICE_CHAIN_PREFIXES = ("KUBE-SVC-", "KUBE-SVL-", "KUBE-EXT-", "KUBE-FW-", "KUBE-SEP-")

# Chains whose rules match disjoint traffic (one service each), so rule order does not matter except for the
# last rule (KUBE-SERVICES' final jump to KUBE-NODEPORTS must stay last). Partial syncs edit them with
# -D / -I 1 instead of rewriting thousands of lines.
DISPATCH_CHAINS = frozenset(
    {
        ("nat", "KUBE-SERVICES"),
        ("nat", "KUBE-NODEPORTS"),
        ("filter", "KUBE-SERVICES"),
        ("filter", "KUBE-EXTERNAL-SERVICES"),
        ("filter", "KUBE-NODEPORTS"),
        ("filter", "KUBE-PROXY-FIREWALL"),
    }
)

# A table block with more distinct chains than this gets the `-S` cache trick (below it, the partial cache
# is cheaper than fetching a large table).
CACHE_TRICK_MIN_CHAINS = 1500


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends traffic into one of podnet's chains (kube-proxy's jump chains)."""

    table: str
    chain: str
    target: str
    comment: str | None
    extra: tuple[str, ...] = ()
    chain_empty: bool = False  # set by Restorer.missing_jumps: the built-in chain has no rules yet

    def rule(self) -> str:
        parts = list(self.extra)
        if self.comment is not None:
            parts += ["-m", "comment", "--comment", f'"{self.comment}"']
        parts += ["-j", self.target]
        return " ".join(parts)


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
# kube-proxy's iptablesJumpChains + iptablesKubeletJumpChains, in its order (each is prepended, so the
# resulting order in a built-in chain is the reverse of this list).
JUMPS: tuple[Jump, ...] = (
    Jump("filter", "INPUT", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports"),
    Jump("filter", "FORWARD", "KUBE-SERVICES", "kubernetes service portals", _NEW),
    Jump("filter", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", _NEW),
    Jump("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
    Jump("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", _NEW),
    Jump("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", _NEW),
    Jump("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", _NEW),
    Jump("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals"),
    Jump("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals"),
    Jump("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
    Jump("filter", "INPUT", "KUBE-FIREWALL", None),
    Jump("filter", "OUTPUT", "KUBE-FIREWALL", None),
)


class RestoreError(SyncError):
    """iptables-restore failed. The kernel kept its previous rules for the failing table."""

    def __init__(self, message: str, *, partial: bool, stderr: str = "") -> None:
        super().__init__(message, partial=partial, stderr=stderr)


# --------------------------------------------------------------------------------------------------------
# Parsing restore text (pure)


@dataclass
class Ruleset:
    """Parsed restore input: per table, the chains it (re)defines with their rules, and chains it deletes.

    A chain listed in `chains` is complete: those rules and no others. Chains not listed are untouched.
    """

    chains: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)

    def line_count(self) -> int:
        return sum(len(c) + 1 for t in self.chains.values() for c in t.values())


def parse(text: str) -> Ruleset:
    """Parse iptables-restore text (`*table`, `:CHAIN`, `-A CHAIN rule`, `-X CHAIN`, `COMMIT`).

    Rules keep their text after `-A CHAIN ` verbatim, so what is written back is exactly what was rendered.
    """
    rs = Ruleset()
    table: str | None = None
    chains: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line[0] == "#":
            continue
        c = line[0]
        if c == "-":
            op, _, rest = line.partition(" ")
            chain, _, rule = rest.partition(" ")
            if op == "-A":
                try:
                    chains[chain].append(rule)
                except KeyError:
                    raise ValueError(f"line {n}: -A to chain {chain!r} that was not declared") from None
            elif op == "-X":
                rs.deleted.setdefault(_need(table, n), []).append(chain)
            else:
                raise ValueError(f"line {n}: unsupported command {op!r} (renderer output has only -A and -X)")
        elif c == ":":
            chains[line[1:].split(" ", 1)[0]] = []
        elif c == "*":
            table = line[1:].strip()
            chains = rs.chains.setdefault(table, {})
        elif line.startswith("COMMIT"):
            table = None
        else:
            raise ValueError(f"line {n}: cannot parse {line[:80]!r}")
    return rs


def _need(table: str | None, n: int) -> str:
    if table is None:
        raise ValueError(f"line {n}: command outside a *table block")
    return table


# --------------------------------------------------------------------------------------------------------
# Planning restore input (pure)

Applied = dict[str, dict[str, list[str]]]  # table -> chain -> rules, in kernel order


@dataclass
class Plan:
    text: str
    applied: Applied
    lines: int  # input lines (without the *table/COMMIT framing)
    rules_written: int
    written: dict[str, int] = field(default_factory=dict)  # rules written per table


def plan_full(
    desired: Ruleset,
    *,
    existing: dict[str, set[str]] | None = None,
    missing_jumps: Sequence[Jump] = (),
    cache_trick: bool = True,
) -> Plan:
    """Restore input that rewrites every chain in `desired` and deletes stale per-service chains.

    `existing` is the set of chain names per table found in the kernel; owned per-service chains there that
    `desired` does not define are flushed and deleted (after the rules that referenced them are gone).
    """
    out: list[str] = []
    applied: Applied = {}
    written: dict[str, int] = {}
    n_lines = rules = 0
    tables = _ordered(set(desired.chains) | {j.table for j in missing_jumps})
    for table in tables:
        chains = desired.chains.get(table, {})
        stale = sorted(
            c for c in (existing or {}).get(table, set()) if c.startswith(SERVICE_CHAIN_PREFIXES) and c not in chains
        )
        jumps = [j for j in missing_jumps if j.table == table]
        out.append(f"*{table}")
        if cache_trick and len(chains) + len(stale) >= CACHE_TRICK_MIN_CHAINS:
            out.append("-S")
        out.extend(f":{c} - [0:0]" for c in chains)
        out.extend(f":{c} - [0:0]" for c in stale)
        for chain, crules in chains.items():
            prefix = f"-A {chain} "
            out.extend(prefix + r for r in crules)
            rules += len(crules)
        out.extend(f"-X {c}" for c in stale)
        out.extend(_jump_lines(jumps))
        out.append("COMMIT")
        n_lines += len(chains) * 1 + len(stale) * 2 + len(jumps)
        applied[table] = {c: list(r) for c, r in chains.items()}
        written[table] = sum(len(r) for r in chains.values()) + len(jumps)
    return Plan("\n".join(out) + "\n", applied, n_lines + rules, rules, written)


_BLOCK_RE = re.compile(r"^\*(\S+)\n(.*?)^COMMIT[^\n]*\n?", re.M | re.S)
_DECL_RE = re.compile(r"^:(\S+)", re.M)


def declared_chains(text: str) -> dict[str, set[str]]:
    """Chains each table block of restore text declares (a regex pass: no full parse)."""
    return {m.group(1): set(_DECL_RE.findall(m.group(2))) for m in _BLOCK_RE.finditer(text)}


def full_text(
    text: str,
    *,
    existing: dict[str, set[str]] | None = None,
    missing_jumps: Sequence[Jump] = (),
    cache_trick: bool = True,
) -> str:
    """plan_full's restore input, built around the renderer's own text instead of from a parse.

    Same content as plan_full(parse(text), ...): the renderer's blocks verbatim, `-S` first in large ones,
    stale service chains flushed and deleted after every rule, missing jumps last. Building it takes a regex
    pass, so the full parse (for the applied model) can run while iptables-restore works.
    """
    out: list[str] = []
    blocks = {m.group(1): m.group(2) for m in _BLOCK_RE.finditer(text)}
    for table in _ordered(set(blocks) | {j.table for j in missing_jumps}):
        body = blocks.get(table, "")
        declared = set(_DECL_RE.findall(body))
        stale = sorted(
            c for c in (existing or {}).get(table, set()) if c.startswith(SERVICE_CHAIN_PREFIXES) and c not in declared
        )
        out.append(f"*{table}\n")
        if cache_trick and len(declared) + len(stale) >= CACHE_TRICK_MIN_CHAINS:
            out.append("-S\n")
        out.append(body if not body or body.endswith("\n") else body + "\n")
        out.extend(f":{c} - [0:0]\n" for c in stale)
        out.extend(f"-X {c}\n" for c in stale)
        out.extend(f"{line}\n" for line in _jump_lines([j for j in missing_jumps if j.table == table]))
        out.append("COMMIT\n")
    return "".join(out)


def _jump_lines(jumps: Sequence[Jump]) -> list[str]:
    """Prepend each jump as kube-proxy does (-I 1, in list order). A built-in chain that has no rules may not
    exist yet under iptables-nft, where -I fails: there the jumps are appended in reverse order instead,
    which gives the same final order."""
    lines: list[str] = []
    empty = [j for j in jumps if j.chain_empty]
    for j in reversed(empty):
        lines.append(f"-A {j.chain} {j.rule()}")
    lines.extend(f"-I {j.chain} 1 {j.rule()}" for j in jumps if not j.chain_empty)
    return lines


def plan_partial(applied: Applied, desired: Ruleset, *, cache_trick: bool = True) -> Plan:
    """Restore input that takes the kernel from `applied` to `applied` updated with `desired`.

    Unchanged chains are skipped; dispatch chains get -D/-I lines; other changed chains are flushed and
    rewritten; chains in `desired.deleted` that podnet has are flushed and deleted. Raises KeyError-free:
    a chain unknown to `applied` is simply created.
    """
    new_applied: Applied = {t: dict(c) for t, c in applied.items()}
    out: list[str] = []
    written: dict[str, int] = {}
    n_lines = rules = 0
    # `-S` makes iptables fetch the whole table (about 18 us per chain in the kernel) to skip the partial
    # cache's quadratic chain list (n^2/2 x ~55 ns): worth it once n^2 x 27.5 ns > chains x 18 us.
    trick_at = max(CACHE_TRICK_MIN_CHAINS, int((655 * sum(len(c) for c in applied.values())) ** 0.5))
    for table in _ordered(set(desired.chains) | set(desired.deleted)):
        have = new_applied.setdefault(table, {})
        decl: list[str] = []
        body: list[str] = []
        touched: set[str] = set()
        for chain, want in desired.chains.get(table, {}).items():
            cur = have.get(chain)
            if cur is not None and cur == want:
                continue
            touched.add(chain)
            if cur is not None and (table, chain) in DISPATCH_CHAINS and _can_edit(cur, want):
                edits, model = _dispatch_edits(chain, cur, want)
                if not edits:
                    have[chain] = model
                    continue
                body.extend(edits)
                rules += len(edits)
                have[chain] = model
                continue
            decl.append(f":{chain} - [0:0]")
            prefix = f"-A {chain} "
            body.extend(prefix + r for r in want)
            rules += len(want)
            have[chain] = list(want)
        deletes: list[str] = []
        for chain in desired.deleted.get(table, []):
            if chain in desired.chains.get(table, {}) or chain not in have:
                continue
            decl.append(f":{chain} - [0:0]")
            deletes.append(f"-X {chain}")
            touched.add(chain)
            del have[chain]
        if not decl and not body and not deletes:
            continue
        out.append(f"*{table}")
        if cache_trick and len(touched) >= trick_at:
            out.append("-S")
        out.extend(decl)
        out.extend(body)
        out.extend(deletes)
        out.append("COMMIT")
        n_lines += len(decl) + len(body) + len(deletes)
        written[table] = len(body)
    return Plan("\n".join(out) + "\n" if out else "", new_applied, n_lines, rules, written)


def plan_delta(applied: Applied, old: Ruleset, new: Ruleset, deleted_chains: Iterable[str] = ()) -> Plan:
    """Partial sync from renders of only the changed services: `old` as last applied, `new` as wanted now.

    Both renders hold the fixed chains plus the changed services' rules. Dispatch-chain rules only in
    `old` are deleted and rules only in `new` inserted; the changed services' own chains are rewritten when
    they differ; `deleted_chains` (chains the old versions needed and the new ones do not) are removed.
    The work is proportional to the changed services, not to the cluster.
    """
    desired = Ruleset()
    for table in _ordered(set(new.chains) | set(old.chains)):
        want = desired.chains.setdefault(table, {})
        cur_table = applied.get(table, {})
        old_t, new_t = old.chains.get(table, {}), new.chains.get(table, {})
        for chain, rules in new_t.items():
            if (table, chain) in DISPATCH_CHAINS and chain in cur_table:
                gone = Counter(old_t.get(chain, [])) - Counter(rules)
                added = Counter(rules) - Counter(old_t.get(chain, []))
                if not gone and not added:
                    continue
                model = list(cur_table[chain])
                if gone:
                    kept = []
                    for r in model:
                        if gone.get(r):
                            gone[r] -= 1
                            continue
                        kept.append(r)
                    model = kept
                extra = []
                for r in rules:
                    if added.get(r):
                        added[r] -= 1
                        extra.append(r)
                want[chain] = extra + model
            else:
                want[chain] = rules
        for chain in old_t:
            if (table, chain) in DISPATCH_CHAINS and chain not in new_t and chain in cur_table:
                raise ValueError(f"{table}/{chain}: the new render lacks a dispatch chain the old one had")
    for chain in deleted_chains:
        desired.deleted.setdefault("nat", []).append(chain)
    return plan_partial(applied, desired)


def _can_edit(cur: list[str], want: list[str]) -> bool:
    """-D/-I editing keeps the kernel's last rule last; only allowed if the last rule does not change."""
    if not cur or not want:
        return False
    return cur[-1] == want[-1]


def _dispatch_edits(chain: str, cur: list[str], want: list[str]) -> tuple[list[str], list[str]]:
    """-D lines for rules gone, -I 1 lines for rules new (multiset difference); and the resulting model."""
    have = Counter(cur)
    need = Counter(want)
    gone = have - need
    new = need - have
    edits: list[str] = []
    model = list(cur)
    if gone:
        for rule, k in gone.items():
            edits.extend([f"-D {chain} {rule}"] * k)
        remaining = Counter(gone)
        kept: list[str] = []
        for r in model:
            if remaining.get(r):
                remaining[r] -= 1
                continue
            kept.append(r)
        model = kept
    added: list[str] = []
    for rule in want:  # insert in desired order; each -I 1 goes on top, so insert in reverse
        if new.get(rule):
            new[rule] -= 1
            added.append(rule)
    for rule in reversed(added):
        edits.append(f"-I {chain} 1 {rule}")
    model = added + model
    return edits, model


def _ordered(tables: Iterable[str]) -> list[str]:
    ts = set(tables)
    return [t for t in TABLE_ORDER if t in ts] + sorted(ts - set(TABLE_ORDER))


# --------------------------------------------------------------------------------------------------------
# Running iptables (I/O)


def _exists(binary: str) -> bool:
    return shutil.which(binary) is not None or os.path.exists(f"/usr/sbin/{binary}")


@dataclass
class Runner:
    """Runs commands, optionally inside a named netns (`ip netns exec`); the daemon runs inside it already."""

    netns: str | None = None
    timeout: float = 600.0

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """A process reading text on stdin, stdout discarded (the `-S` listing), stderr captured."""
        full = ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)
        return subprocess.Popen(full, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                text=True)

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None,
            discard_stdout: bool = False) -> subprocess.CompletedProcess[str]:
        full = ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)
        return subprocess.run(
            full,
            input=input,
            stdout=subprocess.DEVNULL if discard_stdout else subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            timeout=timeout or self.timeout,
            check=False,
        )


_KUBELET_CHAINS = re.compile(r"^:(KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY)\b", re.M)


def detect_mode(runner: Runner) -> Mode:
    """iptables-nft or iptables-legacy, decided as kube-proxy's image does (iptables-wrappers).

    kubelet leaves KUBE-IPTABLES-HINT / KUBE-KUBELET-CANARY in the mangle table of the mode the host uses:
    look in nft first, then legacy; otherwise the mode with more rules; with no rules anywhere, nft.
    PODNET_IPTABLES_MODE=nft|legacy overrides.
    """
    forced = os.environ.get("PODNET_IPTABLES_MODE")
    if forced in ("nft", "legacy"):
        return forced  # type: ignore[return-value]
    have_nft, have_legacy = _exists("iptables-nft-save"), _exists("iptables-legacy-save")
    if not have_legacy:
        return "nft"
    if not have_nft:
        return "legacy"
    nft_out = _safe(runner, ["iptables-nft-save", "-t", "mangle"])
    if _KUBELET_CHAINS.search(nft_out):
        return "nft"
    legacy_out = _safe(runner, ["iptables-legacy-save"])
    if _KUBELET_CHAINS.search(legacy_out):
        return "legacy"
    legacy_rules = sum(1 for line in legacy_out.splitlines() if line.startswith("-"))
    if legacy_rules >= 10:
        nft_rules = sum(1 for line in _safe(runner, ["iptables-nft-save"]).splitlines() if line.startswith("-"))
        if legacy_rules > nft_rules:
            return "legacy"
    return "nft"


def _safe(runner: Runner, argv: Sequence[str]) -> str:
    try:
        p = runner.run(argv, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return p.stdout or ""


@dataclass
class SyncStats:
    full: bool
    seconds: float
    lines: int
    rules_written: int
    written: dict[str, int] = field(default_factory=dict)


class Restorer:
    """Loads restore text into the kernel, full or partial, and remembers what it applied."""

    def __init__(self, runner: Runner | None = None, mode: Mode | None = None) -> None:
        self.runner = runner or Runner()
        self.mode: Mode = mode or detect_mode(self.runner)
        self.applied: Applied | None = None
        self.last_input = ""  # for error reports

    # binaries of the detected mode
    def _bin(self, tool: str) -> str:
        name = f"{tool.replace('iptables', f'iptables-{self.mode}', 1)}"
        return name if _exists(name) else tool

    @property
    def needs_full(self) -> bool:
        return self.applied is None

    def sync(self, text: str, *, full: bool) -> SyncStats:
        """Apply renderer output. full=True rewrites all owned chains; else only what differs from before.

        Raises RestoreError (the kernel keeps its rules; the model is dropped so the next sync is full).
        """
        if not full and self.applied is None:
            raise RestoreError("partial sync without a previous full sync", partial=True)
        start = time.monotonic()
        if full:
            return self._sync_full(text, start)
        assert self.applied is not None
        plan = plan_partial(self.applied, parse(text), cache_trick=self.mode == "nft")
        if plan.text:
            self._restore(plan.text, partial=not full)
        self.applied = plan.applied
        return SyncStats(full, time.monotonic() - start, plan.lines, plan.rules_written, plan.written)

    def _sync_full(self, text: str, start: float) -> SyncStats:
        declared = declared_chains(text)
        existing = self.list_chains(declared.keys())
        missing = self.missing_jumps(declared)
        self._ensure_base_chains(missing, existing)
        rtext = full_text(text, existing=existing, missing_jumps=missing, cache_trick=self.mode == "nft")
        self.last_input = rtext
        argv = [self._bin("iptables-restore"), "-w", "5", "--noflush"]
        proc = self.runner.popen(argv)
        result: dict[str, object] = {}

        def feed() -> None:
            try:
                _, err = proc.communicate(rtext, timeout=self.runner.timeout)
                result["stderr"] = err
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                result["timeout"] = True

        writer = threading.Thread(target=feed, name="iptables-restore-feed", daemon=True)
        writer.start()
        desired = parse(text)  # the applied model, built while iptables-restore works on the other core
        writer.join()
        if result.get("timeout"):
            self.applied = None
            raise RestoreError(f"iptables-restore timed out after {self.runner.timeout}s", partial=False)
        if proc.returncode != 0:
            self.applied = None
            err = str(result.get("stderr") or "").strip()
            raise RestoreError(f"iptables-restore failed (exit {proc.returncode}): {err}{_context(rtext, err)}",
                               partial=False, stderr=err)
        self.applied = {t: desired.chains.get(t, {}) for t in _ordered(set(desired.chains) | set(declared))}
        written = {t: sum(len(r) for r in chains.values()) + sum(1 for j in missing if j.table == t)
                   for t, chains in self.applied.items()}
        n_rules = sum(written.values())
        return SyncStats(True, time.monotonic() - start, n_rules + sum(len(c) for c in declared.values()),
                         n_rules, written)

    def sync_delta(self, old_text: str, new_text: str, deleted_chains: Iterable[str] = ()) -> SyncStats:
        """Partial sync from renders of just the changed services (see plan_delta)."""
        if self.applied is None:
            raise RestoreError("partial sync without a previous full sync", partial=True)
        start = time.monotonic()
        plan = plan_delta(self.applied, parse(old_text), parse(new_text), deleted_chains)
        if plan.text:
            self._restore(plan.text, partial=True)
        self.applied = plan.applied
        return SyncStats(False, time.monotonic() - start, plan.lines, plan.rules_written, plan.written)

    def _ensure_base_chains(self, jumps: Sequence[Jump], existing: dict[str, set[str]]) -> None:
        """Create absent built-in chains (iptables-nft makes them lazily) before the main restore.

        With the `-S` cache trick, iptables-nft believes listed built-in chains exist and a later -A/-I to one
        that is not in the kernel fails with ENOENT. Setting the ACCEPT policy creates the chain; an absent
        base chain accepts everything anyway, so this changes no packet's fate.
        """
        absent: dict[str, list[str]] = {}
        for j in jumps:
            if j.chain not in existing.get(j.table, set()) and j.chain not in absent.get(j.table, []):
                absent.setdefault(j.table, []).append(j.chain)
        if not absent:
            return
        text = "".join(
            f"*{t}\n" + "".join(f"-P {c} ACCEPT\n" for c in chains) + "COMMIT\n" for t, chains in absent.items()
        )
        self._restore(text, partial=False)

    def _restore(self, text: str, *, partial: bool) -> None:
        self.last_input = text
        argv = [self._bin("iptables-restore"), "-w", "5", "--noflush"]
        try:
            # stdout carries the discarded `-S` listing
            p = self.runner.run(argv, input=text, discard_stdout=True)
        except subprocess.TimeoutExpired as e:
            self.applied = None
            raise RestoreError(f"iptables-restore timed out after {e.timeout}s", partial=partial) from e
        if p.returncode != 0:
            self.applied = None
            err = (p.stderr or "").strip()
            raise RestoreError(
                f"iptables-restore failed (exit {p.returncode}): {err}{_context(text, err)}",
                partial=partial, stderr=err,
            )

    def list_chains(self, tables: Iterable[str]) -> dict[str, set[str]]:
        """Chain names per table as they are in the kernel now (for stale-chain cleanup)."""
        tables = list(tables)
        if self.mode == "nft" and _exists("nft"):
            p = self.runner.run(["nft", "list", "chains", "ip"], timeout=120)
            if p.returncode == 0:
                return _parse_nft_chains(p.stdout, tables)
        result: dict[str, set[str]] = {}
        for t in tables:
            p = self.runner.run([self._bin("iptables-save"), "-t", t], timeout=300)
            result[t] = {line[1:].split(" ", 1)[0] for line in p.stdout.splitlines() if line.startswith(":")}
        return result

    def missing_jumps(self, declared: Mapping[str, Container[str]]) -> list[Jump]:
        """kube-proxy's jumps from built-in chains whose target podnet renders and which are not in place."""
        wanted = [j for j in JUMPS if j.target in declared.get(j.table, ())]
        listing: dict[tuple[str, str], list[str]] = {}
        for key in dict.fromkeys((j.table, j.chain) for j in wanted):
            p = self.runner.run([self._bin("iptables"), "-w", "5", "-t", key[0], "-S", key[1]], timeout=60)
            listing[key] = p.stdout.splitlines() if p.returncode == 0 else []
        missing = []
        for j in wanted:
            lines = listing[(j.table, j.chain)]
            if not any(_is_jump(line, j) for line in lines):
                empty = not any(line.startswith("-A ") for line in lines)
                missing.append(dataclasses.replace(j, chain_empty=empty))
        return missing

    def save(self, table: str) -> str:
        return self.runner.run([self._bin("iptables-save"), "-t", table], timeout=300).stdout


def _is_jump(line: str, j: Jump) -> bool:
    if not line.startswith(f"-A {j.chain} ") or not line.endswith(f"-j {j.target}"):
        return False
    if j.comment is None:
        return "--comment" not in line
    if f'--comment "{j.comment}"' not in line and f"--comment {j.comment}" not in line:
        return False
    return ("--ctstate NEW" in line) == ("--ctstate" in " ".join(j.extra))


_TABLE_RE = re.compile(r"^table ip (\S+) \{")
_CHAIN_RE = re.compile(r"^\s+chain (\S+) \{")


def _parse_nft_chains(text: str, tables: Sequence[str]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {t: set() for t in tables}
    table: str | None = None
    for line in text.splitlines():
        m = _TABLE_RE.match(line)
        if m:
            table = m.group(1)
            continue
        m = _CHAIN_RE.match(line)
        if m and table in result:
            result[table].add(m.group(1).strip('"'))
    return result


_LINE_RE = re.compile(r"line:? (\d+)")


def _context(text: str, err: str) -> str:
    """The input lines around the one iptables-restore complains about (kube-proxy logs 3 lines too)."""
    m = _LINE_RE.search(err)
    if not m:
        return ""
    n = int(m.group(1))
    lines = text.splitlines()
    lo, hi = max(0, n - 2), min(len(lines), n + 1)
    return "\n" + "\n".join(f"  {i + 1}: {lines[i][:200]}" for i in range(lo, hi))
