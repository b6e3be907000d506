"""Apply iptables-restore input to the kernel: the one place that runs iptables for the proxy.

The renderer (render.py) writes kube-proxy's restore text; this module decides *how* to load it,
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

import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, cast

from podnet.api.defaults import IPV4, IPV6
from podnet.net.exec import in_netns
from podnet.proxy.backend import SyncError
from podnet.proxy.iptables.drift import ChainKey
from podnet.proxy.iptables.drift_check import DriftCheck, read_output
from podnet.proxy.iptables.names import JUMPS, Jump
from podnet.proxy.iptables.ruleset import (
    Applied,
    Block,
    Ruleset,
    _ordered,
    apply_changes,
    full_text_parts,
    plan_partial,
    streamed_parts,
)

if TYPE_CHECKING:
    from podnet.proxy.iptables.render import FullStream

log = logging.getLogger(__name__)

Mode = Literal["nft", "legacy"]


class RestoreError(SyncError):
    """iptables-restore failed. The kernel kept its previous rules for the failing table."""

    def __init__(self, message: str, *, partial: bool, stderr: str = "") -> None:
        super().__init__(message, partial=partial, stderr=stderr)


# --------------------------------------------------------------------------------------------------------
# Running iptables (I/O)


def _exists(binary: str) -> bool:
    return shutil.which(binary) is not None or os.path.exists(f"/usr/sbin/{binary}")


@dataclass
class Runner:
    """Runs commands, optionally inside a named netns; the daemon runs inside it already.

    The argv comes from net/exec.py's in_netns, the one place that builds `ip netns exec`.
    """

    netns: str | None = None
    timeout: float = 600.0

    def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """A process reading text on stdin, stdout discarded (the `-S` listing), stderr captured."""
        return subprocess.Popen(in_netns(self.netns, argv), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)

    def popen_read(self, argv: Sequence[str]) -> subprocess.Popen[str]:
        """A process whose output is read (a listing), stderr discarded."""
        return subprocess.Popen(in_netns(self.netns, argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)

    def run(self, argv: Sequence[str], *, input: str | None = None, timeout: float | None = None,
            discard_stdout: bool = False) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            in_netns(self.netns, argv),
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
    if forced == "nft":
        return "nft"
    if forced == "legacy":
        return "legacy"
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
class Listing:
    """What a full sync needs to know of the kernel before it loads: chain names per table (stale chains to
    delete, absent built-in chains) and the rules of the built-in chains kube-proxy jumps from."""

    chains: dict[str, set[str]]
    builtin: dict[tuple[str, str], list[str]]


@dataclass
class SyncStats:
    full: bool
    seconds: float
    lines: int
    rules_written: int
    written: dict[str, int] = field(default_factory=dict)


class Restorer:
    """Loads restore text into the kernel, full or partial, and remembers what it applied."""

    def __init__(self, runner: Runner | None = None, mode: Mode | None = None, *, ip_family: str = IPV4) -> None:
        self.runner = runner or Runner()
        self.mode: Mode = mode or detect_mode(self.runner)
        self.ip_family = ip_family  # IPv6: ip6tables-restore/-save, the nft `ip6` tables
        # replaced by a full sync; a partial sync changes it in place, under drift.lock, once the kernel has
        # the change (the drift check copies it under that lock)
        self.applied: Applied | None = None
        self.rules: dict[str, int] = {}  # rules per table in `applied`, kept with it (metrics read it per sync)
        self.drift = DriftCheck(self)

    # binaries of the detected mode and this family (kube-proxy runs ip6tables for its IPv6 proxier)
    def _bin(self, tool: str) -> str:
        if self.ip_family == IPV6:
            tool = tool.replace("iptables", "ip6tables", 1)
        name = tool.replace("tables", f"tables-{self.mode}", 1)
        return name if _exists(name) else tool

    @property
    def needs_full(self) -> bool:
        return self.applied is None or self.drift.found is not None

    def _applied_now(self, applied: Applied | None, touched: set[ChainKey] | None) -> None:
        """Record a sync's outcome: the new model (None after a failure) and the chains it wrote (None: all)."""
        with self.drift.lock:
            self.applied = applied
            self.rules = {t: sum(len(r) for r in chains.values()) for t, chains in (applied or {}).items()}
            self.drift.synced(touched)

    def sync_full(self, blocks: Mapping[str, Block] | FullStream, model: Callable[[], Ruleset],
                  listing: Listing | None = None) -> SyncStats:
        """Load a full render, rewriting all owned chains and deleting stale ones found in the kernel.

        `blocks` is a finished render's (RenderResult.tables), or a render.FullStream, which renders while
        iptables-restore reads it (the nat table first, as it is formatted): then nothing but the listing
        comes before the load. `model` builds the render's Ruleset (the new applied model); it runs while
        iptables-restore works (for a stream, once the render is done). `listing` is list_kernel()'s, when the
        caller took it while rendering. Raises RestoreError (the kernel keeps its rules; the model is dropped
        so the next sync is full).
        """
        start = time.monotonic()
        self.drift.repairing()
        listing = listing or self.list_kernel()
        stream = None if isinstance(blocks, Mapping) else blocks
        if stream is not None:  # the chains jumped to from built-in chains are declared first
            declared = {t: set(stream.declared_before(t)) for t in ("filter", stream.first)}
        else:
            declared = {t: set(b.chains) for t, b in cast(Mapping[str, Block], blocks).items()}
        existing = {t: listing.chains.get(t, set()) for t in declared}
        missing = self.missing_jumps(declared, listing)
        self._ensure_base_chains(missing, existing)
        trick = self.mode == "nft"

        def parts(s: FullStream | None) -> Iterator[str]:
            if s is None:
                return full_text_parts(cast(Mapping[str, Block], blocks), existing=existing, missing_jumps=missing,
                                       cache_trick=trick)
            return streamed_parts(s.first, s.lines(), s.blocks, existing=existing, missing_jumps=missing,
                                  cache_trick=trick, first_is_large=s.large)

        argv = [self._bin("iptables-restore"), "-w", "5", "--noflush"]
        deadline = time.monotonic() + self.runner.timeout
        proc = self.runner.popen(argv)
        result: dict[str, str] = {}
        fed = threading.Event()
        failed: list[BaseException] = []

        def feed() -> None:
            # Streamed in pieces: no second copy of the input, encoded whole, at any time.
            assert proc.stdin is not None and proc.stderr is not None
            try:
                for part in parts(stream):
                    proc.stdin.write(part)
                proc.stdin.close()
            except BrokenPipeError:  # it stopped reading: it failed, and its stderr says why
                pass
            except BaseException as exc:  # the render failed: nothing may be committed from half an input
                failed.append(exc)
                proc.kill()
            finally:
                fed.set()
            result["stderr"] = proc.stderr.read()
            proc.wait()

        writer = threading.Thread(target=feed, name="iptables-restore-feed", daemon=True)
        writer.start()
        if stream is not None:
            fed.wait(max(0.0, deadline - time.monotonic()))  # the render runs in the feeder
        desired = model() if not failed else Ruleset()  # built while iptables-restore works on the other core
        writer.join(max(0.0, deadline - time.monotonic()))
        if writer.is_alive():
            proc.kill()
            writer.join()
            self._applied_now(None, None)
            raise RestoreError(f"iptables-restore timed out after {self.runner.timeout}s", partial=False)
        if failed:
            self._applied_now(None, None)
            raise failed[0]
        if proc.returncode != 0:
            self._applied_now(None, None)
            err = result.get("stderr", "").strip()
            rtext = "".join(parts(stream.again() if stream is not None else None))  # the input it read
            raise RestoreError(f"iptables-restore failed (exit {proc.returncode}): {err}{_context(rtext, err)}",
                               partial=False, stderr=err)
        if stream is not None:
            declared = {t: set(b.chains) for t, b in stream.blocks().items()}
        applied = {t: desired.chains.get(t, {}) for t in _ordered(set(desired.chains) | set(declared))}
        self._applied_now(applied, None)
        written = {t: self.rules.get(t, 0) + sum(1 for j in missing if j.table == t) for t in applied}
        n_rules = sum(written.values())
        return SyncStats(True, time.monotonic() - start, n_rules + sum(len(c) for c in declared.values()),
                         n_rules, written)

    def sync_partial(self, old: Ruleset, new: Ruleset, deleted_chains: Iterable[str] = ()) -> SyncStats:
        """Partial sync from renders of just the changed services, as last applied and as wanted (plan_partial).

        Raises RestoreError (the kernel keeps its rules; the model is dropped so the next sync is full).
        """
        if self.applied is None:
            raise RestoreError("partial sync without a previous full sync", partial=True)
        start = time.monotonic()
        plan = plan_partial(self.applied, old, new, deleted_chains, cache_trick=self.mode == "nft")
        if plan.text:
            self._restore(plan.text, partial=True)
        with self.drift.lock:
            if self.applied is not None:
                for table, n in apply_changes(self.applied, plan.changes).items():
                    self.rules[table] = self.rules.get(table, 0) + n
            self.drift.synced(plan.touched)
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
        argv = [self._bin("iptables-restore"), "-w", "5", "--noflush"]
        try:
            # stdout carries the discarded `-S` listing
            p = self.runner.run(argv, input=text, discard_stdout=True)
        except subprocess.TimeoutExpired as e:
            self._applied_now(None, None)
            raise RestoreError(f"iptables-restore timed out after {e.timeout}s", partial=partial) from e
        if p.returncode != 0:
            self._applied_now(None, None)
            err = (p.stderr or "").strip()
            raise RestoreError(
                f"iptables-restore failed (exit {p.returncode}): {err}{_context(text, err)}",
                partial=partial, stderr=err,
            )

    def list_kernel(self) -> Listing:
        """Chain names of the tables podnet writes and the built-in chains' rules, as the kernel has them now.

        Run while the render is being built: the listings are other processes, so they take no Python time.
        """
        keys = list(dict.fromkeys((j.table, j.chain) for j in JUMPS))
        chains = self.list_chains(dict.fromkeys(t for t, _ in keys))
        builtin: dict[tuple[str, str], list[str]] = {}
        for table, chain in keys:
            p = self.runner.run([self._bin("iptables"), "-w", "5", "-t", table, "-S", chain], timeout=60)
            builtin[(table, chain)] = p.stdout.splitlines() if p.returncode == 0 else []
        return Listing(chains, builtin)

    @property
    def nft_family(self) -> str:
        """The nft table family iptables-nft of this IP family writes: `ip` or `ip6`."""
        return "ip6" if self.ip_family == IPV6 else "ip"

    def list_chains(self, tables: Iterable[str]) -> dict[str, set[str]]:
        """Chain names per table as they are in the kernel now (for stale-chain cleanup)."""
        tables = list(tables)
        if self.mode == "nft" and _exists("nft"):
            # parsed as it is read: 4 MB of text at 10k x 10 (110k chains), never held whole
            found = read_output(self.runner.popen_read(["nft", "list", "chains", self.nft_family]),
                                lambda lines: _parse_nft_chains(lines, tables), timeout=120)
            if found is not None:
                return found
        result: dict[str, set[str]] = {}
        for t in tables:
            p = self.runner.run([self._bin("iptables-save"), "-t", t], timeout=300)
            result[t] = {line[1:].split(" ", 1)[0] for line in p.stdout.splitlines() if line.startswith(":")}
        return result

    def missing_jumps(self, declared: Mapping[str, Container[str]], listing: Listing | None = None) -> list[Jump]:
        """kube-proxy's jumps from built-in chains whose target podnet renders and which are not in place."""
        listing = listing or self.list_kernel()
        wanted = [j for j in JUMPS if j.target in declared.get(j.table, ())]
        return [j for j in wanted if not any(j.matches(line) for line in listing.builtin.get((j.table, j.chain), []))]

    def check_drift(self, *, attempts: int = 5, rules_timeout: float = 60.0) -> str | None:
        """Compare the kernel with the applied model, writing nothing (drift_check.py). Any thread."""
        return self.drift.check(attempts=attempts, rules_timeout=rules_timeout)

    def popen_save(self) -> subprocess.Popen[str]:
        """iptables-save of every table, as a process (the drift check stops it when a sync lands)."""
        return self.runner.popen_read([self._bin("iptables-save")])

    def save(self, table: str) -> str:
        return self.runner.run([self._bin("iptables-save"), "-t", table], timeout=300).stdout


_TABLE_RE = re.compile(r"^table ip6? (\S+) \{")  # `nft list chains ip|ip6` lists one family only
_CHAIN_RE = re.compile(r"^\s+chain (\S+) \{")


def _parse_nft_chains(lines: str | Iterable[str], tables: Sequence[str]) -> dict[str, set[str]]:
    result: dict[str, set[str]] = {t: set() for t in tables}
    table: str | None = None
    for line in (lines.splitlines() if isinstance(lines, str) else lines):
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
