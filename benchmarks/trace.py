"""trace benchmark: the generated-scenario run of issue 13 (>= 200 seeded random scenarios, each predicted
from live kernel state and --verify'd against the kernel's own trace), and what a verify costs.

Default (`make bench`): four labs, one after the other (iptables/vxlan and nftables/vxlan with 2 nodes,
nftables/host-gw and iptables/udp with 3 nodes); in each, WORLDS seeded random worlds of Services and pods
(tests/integration/trace/generator.py: port counts, endpoints spread over random nodes, sessionAffinity,
externalTrafficPolicy/internalTrafficPolicy Local, NodePort/LoadBalancer, loadBalancerSourceRanges, services
without endpoints), and random flows through each. Prints a table per lab and overall: scenarios, agreed,
disagreed, seconds per verify, with the prediction alone (`podnet trace` without --verify: read the live state
and walk it) as the baseline measured in the same run; then every disagreement. Exits 1 on any disagreement.

    .venv/bin/python benchmarks/trace.py [--scenarios 208] [--seed 13] [--worlds 2]

Prediction only, against a lab of yours (read the state vs walk it, per hop):

    .venv/bin/python benchmarks/trace.py --lab NAME --from POD --to svc/NAME [--reps 10]
"""

from __future__ import annotations

import argparse
import math
import re
import secrets
import statistics
import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests" / "integration" / "trace"))
import generator  # noqa: E402 (the generator is shared with the test slice in tests/integration/trace)

LABS = [("iptables", "vxlan", 2), ("nftables", "vxlan", 2), ("nftables", "host-gw", 3), ("iptables", "udp", 3)]


def scenario_run(total: int, seed: int, worlds: int) -> int:
    from podnet.lab import cluster, topology

    console = Console(width=150)
    per_world = math.ceil(total / (len(LABS) * worlds))
    rows: list[tuple[str, list[generator.FlowResult]]] = []
    t_all = time.monotonic()
    for li, (mode, backend, nodes) in enumerate(LABS):
        name = f"bt{secrets.token_hex(3)}"
        store = f"sqlite:////run/podnet/labs/{name}/state.db"
        spec = topology.build(name, nodes, backend, mode, "sqlite")
        label = f"{mode}/{backend}, {nodes} nodes"
        results: list[generator.FlowResult] = []
        try:
            cluster.up(spec, store)
            ips = {n.name: n.underlay_ip for n in spec.node_specs}
            for wi in range(worlds):
                wseed = seed * 100 + li * 10 + wi
                w = generator.make_world(wseed, ips, index=li * worlds + wi)
                generator.apply_world(name, store, w)
                for f in generator.make_flows(w, wseed, per_world):
                    r = generator.run_flow(name, f)
                    results.append(r)
                    mark = "." if r.agree else "X"
                    console.print(mark, end="")
                generator.delete_world(store, w)
        finally:
            cluster.down(name)
        console.print(f" {label}")
        rows.append((label, results))

    t = Table(title=f"podnet trace --verify over generated scenarios (seed {seed}, "
                    f"{time.monotonic() - t_all:.0f} s in all)")
    for col in ("lab", "scenarios", "agreed", "disagreed", "s/verify (median)", "s/predict (baseline)",
                "verify / predict"):
        t.add_column(col, justify="right" if col != "lab" else "left")
    everything = [r for _, rs in rows for r in rs]
    for label, rs in [*rows, ("all", everything)]:
        v = statistics.median(r.verify_s for r in rs)
        p = statistics.median(r.predict_s for r in rs)
        agreed = sum(r.agree for r in rs)
        t.add_row(label, str(len(rs)), str(agreed), str(len(rs) - agreed), f"{v:.2f}", f"{p:.2f}", f"{v / p:.1f}x")
    console.print(t)
    kinds: dict[str, list[int]] = {}
    for r in everything:
        what = re.sub(r"endpoint p\d+", "an endpoint", r.flow.what)
        k = kinds.setdefault(re.sub(r" on node\d+", "", what.split(" (")[0].split(" from ")[0].split(" at ")[0]),
                             [0, 0])
        k[0] += 1
        k[1] += r.agree
    console.print("scenario kinds (agreed/total): " + ", ".join(f"{k} {a}/{n}" for k, (n, a) in sorted(kinds.items())))
    retried = [r for r in everything if r.attempts > 1]
    if retried:
        console.print(f"{len(retried)} scenario(s) took more than one round (the kernel trace of a round was "
                      f"incomplete): " + "; ".join(" ".join(r.flow.args) for r in retried))
    bad = [r for r in everything if not r.agree]
    for r in bad:
        console.print(f"[red]DISAGREE[/] podnet trace {' '.join(r.flow.args)}  ({r.flow.what})", highlight=False)
        for d in r.disagreements:
            console.print(f"    {d}", highlight=False, markup=False)
    return 1 if bad else 0


def prediction_only(lab: str, src_word: str, dst_word: str, reps: int) -> None:
    from podnet.trace import resolve, snapshot, walk

    reads, walks, hops = [], [], 0
    for _ in range(max(1, min(reps, 100))):
        t0 = time.perf_counter()
        c = snapshot.read_cluster(lab)
        t1 = time.perf_counter()
        src, pkt = resolve.flow(c, src_word, dst_word, "tcp", None)
        r = walk.walk(c, src, pkt)
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        walks.append(t2 - t1)
        hops = sum(len(o.hops) for o in r.outcomes)
    t = Table(title=f"podnet trace {src_word} -> {dst_word} ({reps} runs, {hops} hops over all outcomes)")
    for col in ("what", "median ms", "p90 ms", "per hop us"):
        t.add_column(col)
    for name, xs in (("read state (baseline)", reads), ("walk (prediction)", walks)):
        xs = sorted(xs)
        t.add_row(name, f"{statistics.median(xs) * 1e3:.1f}", f"{xs[int(len(xs) * 0.9) - 1] * 1e3:.1f}",
                  f"{statistics.median(xs) / max(hops, 1) * 1e6:.0f}")
    Console().print(t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenarios", type=int, default=208, help="generated scenarios in all (at most 1000)")
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--worlds", type=int, default=2, help="random worlds per lab")
    ap.add_argument("--lab", help="prediction timing only, against this running lab")
    ap.add_argument("--from", dest="src")
    ap.add_argument("--to", dest="dst")
    ap.add_argument("--reps", type=int, default=10)
    a = ap.parse_args()
    if a.lab:
        if not a.src or not a.dst:
            ap.error("--lab needs --from and --to")
        prediction_only(a.lab, a.src, a.dst, a.reps)
        return
    sys.exit(scenario_run(max(1, min(a.scenarios, 1000)), a.seed, max(1, min(a.worlds, 10))))


if __name__ == "__main__":
    main()
