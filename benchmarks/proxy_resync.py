"""How long a change waits at 10k services x 10 endpoints when it arrives during the iptables proxy's periodic
re-sync (issue 16, goal 2: every change applied within 0.3 s, whenever it arrives).

A real Proxier (store informers -> tracker -> runner -> iptables backend) runs in namespace pn-rs-bench with
syncPeriod --period, fed by a SQLite store holding the Services and EndpointSlices. After its first full sync,
the script changes one EndpointSlice at a time (a different service each time, at random moments, --changes
of them) and records, for each, the time from the store write until the sync carrying it returned
(iptables-restore done: the kernel has it). Two ways of doing the periodic re-sync, in the same run:

  before   the periodic run rewrites everything (a full sync, as podnet did and kube-proxy does hourly)
  now      the periodic run reads the kernel on its own thread (drift check) and writes nothing unless it
           drifted; changes go out as partial syncs meanwhile. A change stops the check's read of every rule
           (iptables would restart it anyway); "whole reads" counts the checks that compared every rule,
           the others compared chain names and the built-in chains' jumps

The baseline is the same proxier's one-change partial sync when nothing else runs (median of the waits of
changes that arrived while no re-sync and no other change's sync ran). A change that arrives while the sync
loop is writing another one waits for that transaction first (one iptables-restore at a time, each ~0.2 s at
10k of kernel re-validation of the table), so its wait is up to twice the baseline: those are counted apart. Also printed: the re-syncs' own cost, and rules they wrote.

The kernel's floor, measured in the same run on the same 10k table once the proxier has stopped: one
`iptables-restore --noflush` transaction that adds a single rule to a chain nothing jumps to (and, for
contrast, the one deleting it again and an empty one). Any transaction that adds a rule makes nf_tables
re-validate every rule reachable from the table's base chains, so no change can be applied faster than that;
with `perf` installed, the share of that transaction's samples in the kernel's *_validate functions is printed.

Run as root: `.venv/bin/python benchmarks/proxy_resync.py [--services 10000] [--endpoints 10] [--period 10]
[--changes 40]` (about 4 min at 10k).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from podnet.net import netns
from podnet.net.exec import in_netns
from podnet.proxy.config import HostFacts, KubeProxyConfiguration
from podnet.proxy.iptables.backend import IptablesBackend
from podnet.proxy.iptables.restore import Restorer, Runner
from podnet.proxy.model import DesiredState
from podnet.proxy.proxier import Proxier
from podnet.store import keys, open_store

NS = os.environ.get("PN_RS_NETNS", "pn-rs-bench")  # another name when several people share a machine
NODE = "bench"


def service(i: int) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"s{i}", "namespace": "default"},
            "spec": {"type": "ClusterIP", "clusterIP": f"10.{96 + (i >> 16)}.{(i >> 8) & 255}.{i & 255}",
                     "ports": [{"name": "p", "port": 80, "targetPort": 8080, "protocol": "TCP"}]}}


def endpoint_slice(i: int, eps: int, generation: int = 0) -> dict[str, Any]:
    def ip(j: int) -> str:
        k = i * eps + j
        return f"10.{128 + (k >> 16)}.{(k >> 8) & 255}.{k & 255}"

    addrs = [ip(j) for j in range(eps)]
    if generation:
        addrs[0] = f"10.250.{generation >> 8 & 255}.{generation & 255}"
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"s{i}-1", "namespace": "default", "labels": {"kubernetes.io/service-name": f"s{i}"}},
            "addressType": "IPv4", "ports": [{"name": "p", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [a], "conditions": {"ready": True}, "nodeName": "other"} for a in addrs]}


def put(store: Any, obj: dict[str, Any]) -> None:
    meta = obj["metadata"]
    store.put(keys.resource(obj["kind"], meta["namespace"], meta["name"]), json.dumps(obj).encode())


class Recording(IptablesBackend):
    """The real backend, recording when each sync returned, which services it carried, and the re-syncs."""

    def __init__(self, restorer: Restorer, periodic_full: bool) -> None:
        super().__init__(restorer)
        self.checks_drift = not periodic_full
        self.synced: list[tuple[float, str, frozenset[str]]] = []  # (end, kind, services)
        self.partials: list[tuple[float, float]] = []  # (start, end) of every partial sync
        self.restore_took: dict[float, float] = {}  # end of a partial sync -> seconds its iptables-restore took
        self._restore_t = 0.0
        inner = restorer._restore

        def timed_restore(text: str, *, partial: bool) -> None:
            t = time.monotonic()
            try:
                inner(text, partial=partial)
            finally:
                self._restore_t += time.monotonic() - t

        restorer._restore = timed_restore  # type: ignore[method-assign]
        self.resyncs: list[tuple[float, float]] = []  # (start, end) of periodic full syncs / drift checks
        self.whole_reads = 0  # drift checks that read every rule (not only chain names)
        self.check_written = 0
        self.first_full = threading.Event()

    def full_sync(self, desired: DesiredState, settings: Any) -> dict[str, int]:
        start = time.monotonic()
        out = super().full_sync(desired, settings)
        end = time.monotonic()
        if self.first_full.is_set():
            self.resyncs.append((start, end))
        self.synced.append((end, "full", frozenset(n.name for n in desired.services)))
        self.first_full.set()
        return out

    def partial_sync(self, old: DesiredState, new: DesiredState, settings: Any, large_cluster: bool) -> dict[str, int]:
        start = time.monotonic()
        self._restore_t = 0.0
        out = super().partial_sync(old, new, settings, large_cluster)
        end = time.monotonic()
        self.partials.append((start, end))
        self.restore_took[end] = self._restore_t
        self.synced.append((end, "partial", frozenset(n.name for n in new.services)))
        return out

    def check_drift(self) -> str | None:
        start = time.monotonic()
        found = super().check_drift()
        self.resyncs.append((start, time.monotonic()))
        self.whole_reads += self.restorer.drift.last_check == "rules"
        return found


def run_phase(store_url: str, args: argparse.Namespace, periodic_full: bool, seed: int) -> dict[str, Any]:
    netns.remove(NS)
    netns.create(NS)
    store = open_store(store_url)
    config = KubeProxyConfiguration.model_validate({"syncPeriod": f"{args.period}s", "minSyncPeriod": "0s"})
    runner = Runner(netns=NS)
    backend = Recording(Restorer(runner), periodic_full)
    proxier = Proxier(store, NODE, config, backend=backend, runner=runner,
                      facts=HostFacts(nodeName=NODE, nodeIPs=["192.168.0.1"]))
    loop = threading.Thread(target=proxier.run, name="proxier", daemon=True)
    t0 = time.monotonic()
    closed = False
    loop.start()
    try:
        if not backend.first_full.wait(600):
            raise SystemExit("no first full sync in 600 s")
        first = time.monotonic() - t0
        rng = random.Random(seed)
        changes: list[tuple[float, str]] = []
        for k in range(args.changes):
            time.sleep(rng.uniform(0.3, 2.0))
            i = rng.randrange(args.services)
            while any(name == f"s{i}" for _, name in changes):
                i = rng.randrange(args.services)
            changes.append((time.monotonic(), f"s{i}"))
            put(store, endpoint_slice(i, args.endpoints, k + 1))
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(_applied(backend, c) for c in changes):
            time.sleep(0.2)
        proxier.close()
        loop.join(60)
        closed = True
        for t in threading.enumerate():  # a drift check still reading the table would share the cores
            if t.name == "drift-check":
                t.join(120)
        floor = None if periodic_full else kernel_floor(runner)
    finally:
        if not closed:
            proxier.close()
            loop.join(60)
        store.close()
        netns.remove(NS)
    waits = []
    parts: list[tuple[float, float, float]] = []
    for c in changes:
        done = _applied(backend, c)
        busy = any(s <= c[0] <= e for s, e in backend.resyncs)
        # the sync loop was already writing another change: this one waits for that transaction first
        behind = any(s <= c[0] < e for s, e in backend.partials)
        waits.append((done - c[0] if done else None, busy, behind))
        carried = next(((s, e) for s, e in backend.partials if e == done), None)
        if done and carried and carried[0] >= c[0] and not busy and not behind:
            # where a quiet change's wait went: before its sync began, the sync's own Python, iptables-restore
            restore = backend.restore_took.get(carried[1], 0.0)
            parts.append((carried[0] - c[0], carried[1] - carried[0] - restore, restore))
    return {"first": first, "waits": waits, "resyncs": [e - s for s, e in backend.resyncs],
            "fulls": sum(1 for _, kind, _ in backend.synced if kind == "full"), "whole": backend.whole_reads,
            "checks": backend.checks_drift, "floor": floor, "parts": parts}


ADD = "*nat\n:PN-FLOOR - [0:0]\n-A PN-FLOOR -d 198.51.100.9/32 -j RETURN\nCOMMIT\n"
DELETE = "*nat\n-F PN-FLOOR\n-X PN-FLOOR\nCOMMIT\n"
EMPTY = "*nat\nCOMMIT\n"
VALIDATE = re.compile(r"^\s*([\d.]+)%\s+\[k\]\s+(\S*validate\S*)", re.M)


def kernel_floor(runner: Runner, rounds: int = 7) -> dict[str, Any]:
    """Median wall time of the add / delete / empty transactions on the table the proxier left."""
    def timed(text: str) -> float:
        t = time.monotonic()
        p = runner.run(["iptables-restore", "-w", "5", "--noflush"], input=text, timeout=60)
        if p.returncode != 0:
            raise SystemExit(f"floor transaction failed: {p.stderr.strip()}")
        return time.monotonic() - t

    times: dict[str, list[float]] = {"add": [], "delete": [], "empty": []}
    for _ in range(rounds):
        times["add"].append(timed(ADD))
        times["delete"].append(timed(DELETE))
        times["empty"].append(timed(EMPTY))
    out: dict[str, Any] = {k: statistics.median(v) for k, v in times.items()}
    out["validate_share"] = _validate_share(runner)
    return out


def _validate_share(runner: Runner) -> float | None:
    """Percent of perf's samples of one add transaction spent in the kernel's *_validate functions."""
    if shutil.which("perf") is None:
        return None
    data = Path(tempfile.mkdtemp(prefix="pn-bench-perf-")) / "perf.data"
    try:
        rec = subprocess.run(["perf", "record", "-q", "-o", str(data), "--", *runner_argv(runner)], input=ADD,
                             capture_output=True, text=True, timeout=120, check=False)
        runner.run(["iptables-restore", "-w", "5", "--noflush"], input=DELETE, timeout=60)
        if rec.returncode != 0:
            return None
        rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "symbol", "--stdio"],
                             capture_output=True, text=True, timeout=120, check=False)
        return sum(float(m.group(1)) for m in VALIDATE.finditer(rep.stdout))
    finally:
        shutil.rmtree(data.parent, ignore_errors=True)


def runner_argv(runner: Runner) -> list[str]:
    return in_netns(runner.netns, ["iptables-restore", "-w", "5", "--noflush"])


def _applied(backend: Recording, change: tuple[float, str]) -> float | None:
    t, name = change
    return next((end for end, _, names in backend.synced if end > t and name in names), None)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--period", type=float, default=10.0, help="syncPeriod of the proxier (s)")
    ap.add_argument("--changes", type=int, default=40, help="changes per phase")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pn-bench-resync-"))
    url = f"sqlite:///{tmp}/state.db"
    try:
        store = open_store(url)
        for i in range(args.services):
            put(store, service(i))
            put(store, endpoint_slice(i, args.endpoints))
        store.close()
        results = {name: run_phase(url, args, periodic_full=(name == "before"), seed=n)
                   for n, name in enumerate(("before", "now"))}
    finally:
        netns.remove(NS)
        shutil.rmtree(tmp, ignore_errors=True)
    quiet = [w for r in results.values() for w, busy, behind in r["waits"] if w is not None and not busy
             and not behind]
    floor = statistics.median(quiet) if quiet else None
    print(f"\nchanges during the iptables proxy's periodic re-sync, {args.services} services x {args.endpoints} "
          f"endpoints, syncPeriod {args.period:g} s, {args.changes} changes per row")
    hdr = ("periodic re-sync", "first full sync", "re-syncs: median (whole reads)", "full syncs",
           "changes during a re-sync",
           "their worst wait", "all: p50 / p99 / worst", "worst / baseline",
           "worst of those behind another change's sync (n)", "worst of the others", "goal: worst <= 0.3 s")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    for name, r in results.items():
        done = sorted(w for w, _, _ in r["waits"] if w is not None)
        lost = sum(1 for w, _, _ in r["waits"] if w is None)
        during = [w for w, busy, _ in r["waits"] if busy and w is not None]
        behind = [w for w, _, b in r["waits"] if b and w is not None]
        others = [w for w, _, b in r["waits"] if not b and w is not None]
        worst = done[-1] if done else float("inf")
        p99 = done[min(len(done) - 1, int(len(done) * 0.99))] if done else float("nan")
        what = "full rewrite (before)" if name == "before" else "drift check, writes nothing (now)"
        print(" | ".join([
            what, f"{r['first']:.1f} s",
            (f"{len(r['resyncs'])}: {statistics.median(r['resyncs']):.2f} s" if r["resyncs"] else "0")
            + (f" ({r['whole']} read every rule)" if r["checks"] else ""),
            str(r["fulls"]), str(len(during)), f"{max(during) * 1000:.0f} ms" if during else "-",
            f"{statistics.median(done) * 1000:.0f} / {p99 * 1000:.0f} / {worst * 1000:.0f} ms"
            + (f" ({lost} never applied)" if lost else ""),
            f"{worst / floor:.1f}x" if floor else "-",
            f"{max(behind) * 1000:.0f} ms ({len(behind)})" if behind else "- (0)",
            f"{max(others) * 1000:.0f} ms" if others else "-", "met" if worst <= 0.3 and not lost else "NOT met",
        ]))
    print(f"baseline: one change's partial sync with no re-sync running, median of {len(quiet)}: "
          f"{floor * 1000:.0f} ms" if floor else "baseline: no change arrived outside a re-sync")
    parts = [x for r in results.values() for x in r["parts"]]
    if parts:
        print(f"where a quiet change's wait goes (median of {len(parts)}): store write -> watch -> tracker -> sync "
              f"start {statistics.median(x[0] for x in parts) * 1000:.1f} ms; the sync's render and plan "
              f"{statistics.median(x[1] for x in parts) * 1000:.1f} ms; iptables-restore "
              f"{statistics.median(x[2] for x in parts) * 1000:.0f} ms")
    k = results["now"]["floor"]
    if k:
        share = f"; {k['validate_share']:.0f}% of its perf samples in the kernel's *_validate functions" \
            if k["validate_share"] is not None else " (perf not installed: no profile)"
        print(f"kernel floor on the same table (median of 7): a transaction adding one rule to a chain nothing "
              f"jumps to {k['add'] * 1000:.0f} ms{share}; deleting it {k['delete'] * 1000:.0f} ms; empty "
              f"{k['empty'] * 1000:.0f} ms")
        print(f"one change's partial sync / that floor: {floor / k['add']:.2f}x" if floor else "")
        # the kernel runs one transaction at a time: a change arriving just after another change's
        # transaction began waits for it, then for its own
        print(f"floor of a change that arrives while another change's transaction runs: 2 x {k['add'] * 1000:.0f}"
              f" = {2 * k['add'] * 1000:.0f} ms; of a change alone: {k['add'] * 1000:.0f} ms; goal 2 asks 300 ms "
              f"for both ({'below' if 2 * k['add'] > 0.3 else 'above'} this machine's floor)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
