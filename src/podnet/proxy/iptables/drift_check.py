"""The iptables backend's periodic drift check: when and how it reads the kernel, beside the syncs.

It runs on a thread of its own (Proxier._watch_drift) while the sync loop keeps writing, and never makes a sync
wait. What it compares is drift.py's (pure); this module owns what lives between the two threads:

* the chains podnet wrote since the check last looked (None: everything, after a full sync or a failure), so
  that chains written while the kernel was read are left out, and digests are only compared for chains
  podnet did not write since the previous read;
* the drift found and not repaired yet (the Restorer's `needs_full` is True while there is one);
* the read in flight. A read of the whole ruleset restarts inside iptables whenever a transaction commits
  meanwhile (iptables-nft and nft re-read until one generation is seen whole): at 10k services x 10
  endpoints a quiet iptables-save takes 3-5 s and, under one change every 2 s, never finished. So a sync's
  write stops the check's iptables-save at once (`synced`), and the check tries again in the next gap.

The Restorer holds `lock` while it replaces or changes its applied model (a partial sync changes it in
place: a copy per change cost 16 ms at 10k x 10) and calls `synced`, so a check sees the model and the
chains written to reach it together; the check compares against its own copy, taken under the lock.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, TypeVar

from podnet.proxy.iptables.drift import ChainKey, KernelTables, Previous, chains_only, find_drift, read_save
from podnet.proxy.iptables.names import JUMPS

if TYPE_CHECKING:
    from podnet.proxy.iptables.restore import Listing, Restorer

_T = TypeVar("_T")

FULL_SYNC_PERIOD = 3600.0  # kube-proxy's FullSyncPeriod: the longest its iptables mode goes without a full sync


class DriftCheck:
    def __init__(self, restorer: Restorer) -> None:
        self.restorer = restorer
        self.lock = threading.Lock()
        self.found: str | None = None  # a drift not repaired yet
        self.last_check = ""  # what the last check compared: "rules" (a whole read) or "chains" (names only)
        self._written: set[ChainKey] | None = None
        self._previous: tuple[KernelTables, set[ChainKey]] | None = None  # last whole read, chains written during it
        self._reading: subprocess.Popen[str] | None = None
        self._syncs = 0  # syncs that ended, to tell a read that one may have stopped it
        self._rules_read_at = time.monotonic()

    # ---- called by the Restorer (the sync loop's thread) --------------------------------------------

    def synced(self, touched: set[ChainKey] | None) -> None:
        """A sync ended (the Restorer holds `lock`): the chains it wrote (None: all); stop a read in flight."""
        self._syncs += 1
        if self._reading is not None and self._reading.poll() is None:
            self._reading.kill()
        if touched is None or self._written is None:
            self._written = None
        else:
            self._written |= touched

    def repairing(self) -> None:
        """A full sync starts: it repairs the drift found; one found while it runs is for the next."""
        with self.lock:
            self.found = None

    # ---- the check (its own thread) -----------------------------------------------------------------

    def check(self, *, attempts: int = 5, rules_timeout: float = 60.0) -> str | None:
        """Read the kernel and compare it with the applied model. Writes nothing.

        Every rule is read (one iptables-save, parsed as it is read: the built-in chains' rules with it); each
        read is tried up to `attempts` times. When no read could finish (syncs kept stopping it), the chain
        names and the built-in chains are read instead (`Restorer.list_kernel`, well under a second) and rules
        are not compared this time; when no whole read finished for FULL_SYNC_PERIOD, the kernel counts as
        drifted, so a full sync follows (kube-proxy's hourly one). Returns what drifted (then the Restorer's
        `needs_full` is True until a full sync), or None when the kernel matches or nothing can be concluded
        (no model yet, a full sync or a failure meanwhile).
        """
        with self.lock:
            if self.restorer.applied is None or self.found is not None:
                return None
            before, self._written = self._written, set()
            model = self.restorer.applied
        tables = list(model)

        def known(table: str, chain: str) -> bool:  # service chains of the model the read started from
            return chain in model.get(table, {})

        kernel = _retried(lambda: self._save_all(tables, known, rules_timeout), attempts)
        whole = kernel is not None
        if kernel is None:
            listing = _retried(self._listing, attempts)
            if listing is not None:
                kernel = chains_only(listing.chains, tables, known)
                kernel.builtin = listing.builtin
        with self.lock:
            during, self._written = self._written, set()
            live = self.restorer.applied
            # partial syncs change the model in place (under this lock): compare with a copy
            applied = {t: dict(c) for t, c in live.items()} if live is not None else None
            if applied is None or during is None or kernel is None:
                self._previous = None
                self._written = None if during is None else self._written
                return None
            last = self._previous
        # comparing runs without the lock (as the parse, while iptables-save was read), so a sync never waits
        # for it; `applied` is this check's own copy
        self.last_check = "rules" if whole else "chains"
        previous = None
        if whole and before is not None and last is not None:
            previous = Previous(last[0], last[1] | before)
        found = find_drift(applied, kernel, JUMPS, skip=during, previous=previous)
        with self.lock:
            # the digests of this read, for the next check: kept as the read itself (no copy per chain)
            self._previous = (kernel, set(during)) if whole else None
            now = time.monotonic()
            if whole:
                self._rules_read_at = now
            elif not found and now - self._rules_read_at > FULL_SYNC_PERIOD:
                found = [f"no read of every rule could finish for {FULL_SYNC_PERIOD / 60:.0f} min (changes kept "
                         "coming): a full sync, as kube-proxy's hourly one"]
                self._rules_read_at = now
            if not found:
                return None
            more = f" (and {len(found) - 3} more)" if len(found) > 3 else ""
            self.found = "; ".join(found[:3]) + more
            return self.found

    def _listing(self) -> Listing | None:
        try:
            return self.restorer.list_kernel()
        except (OSError, subprocess.SubprocessError):
            return None

    def _save_all(self, tables: list[str], known: Callable[[str, str], bool], timeout: float) -> KernelTables | None:
        """Every table's rules (one iptables-save), parsed as they are read (read_save keeps counts and digests,
        never the text), or None when a sync (or the timeout) stopped it."""
        with self.lock:
            syncs = self._syncs
        proc = self.restorer.popen_save()
        with self.lock:
            self._reading = proc
            if self._syncs != syncs:  # a sync landed while it started
                proc.kill()
        try:
            return read_output(proc, lambda lines: read_save(lines, tables, known), timeout=timeout)
        finally:
            with self.lock:
                self._reading = None


def read_output(proc: subprocess.Popen[str], parse: Callable[[Iterable[str]], _T], *, timeout: float) -> _T | None:
    """`parse` of a listing process's output lines as they come (no copy of the whole output), or None when
    the process failed, was killed (a sync stopping a drift check's read) or ran past `timeout` (killed)."""
    timer = threading.Timer(timeout, proc.kill)
    timer.start()
    try:
        assert proc.stdout is not None
        out = parse(proc.stdout)
        for _ in proc.stdout:  # what parse left unread, so the process can exit
            pass
    finally:
        timer.cancel()
        if proc.stdout is not None:
            proc.stdout.close()
        proc.wait()
    return out if proc.returncode == 0 else None


def _retried(read: Callable[[], _T | None], attempts: int) -> _T | None:
    """`read()` again after each try that a sync stopped (None), at most `attempts` times. (A read that
    finished is whole even if syncs landed meanwhile: the chains they wrote are left out.)"""
    for i in range(attempts):
        out = read()
        if out is not None:
            return out
        time.sleep(0.05 * (i + 1))
    return None
