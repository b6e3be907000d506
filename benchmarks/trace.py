"""trace benchmark: how long a prediction takes, split into reading the kernel state and walking it.

The walk is pure (over the snapshot); reading the state runs one command per kind of state per namespace.
Baseline in the same run: the cost of reading the state alone (`snapshot.read_cluster`), which any tool that
looks at live state pays; the walk's own cost is reported per hop next to it.

Needs a running lab with pods and Services (e.g. `podnet demo --name bench --keep`, or any lab of yours):
Run: .venv/bin/python benchmarks/trace.py --lab NAME --from POD --to svc/NAME [--reps 10]

The long version of the generated-scenario test (tests/integration/trace): on a lab running
tests/integration/trace/scenario.yaml, `--scenarios 200 [--seed 13]` predicts and --verify's that many seeded
random flows and prints how many the kernel agreed with (bounded: at most 1000 flows, one at a time).
"""

from __future__ import annotations

import argparse
import statistics
import time

from rich.console import Console
from rich.table import Table


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lab", required=True)
    ap.add_argument("--from", dest="src", required=True)
    ap.add_argument("--to", dest="dst", required=True)
    ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--scenarios", type=int, default=0)
    ap.add_argument("--seed", type=int, default=13)
    a = ap.parse_args()
    if a.scenarios:
        scenarios(a.lab, min(a.scenarios, 1000), a.seed)
        return
    from podnet.trace import resolve, snapshot, walk

    reads, walks, hops = [], [], 0
    for _ in range(max(1, min(a.reps, 100))):
        t0 = time.perf_counter()
        c = snapshot.read_cluster(a.lab)
        t1 = time.perf_counter()
        src, pkt = resolve.flow(c, a.src, a.dst, "tcp", None)
        r = walk.walk(c, src, pkt)
        t2 = time.perf_counter()
        reads.append(t1 - t0)
        walks.append(t2 - t1)
        hops = sum(len(o.hops) for o in r.outcomes)
    t = Table(title=f"podnet trace {a.src} -> {a.dst} ({a.reps} runs, {hops} hops over all outcomes)")
    for col in ("what", "median ms", "p90 ms", "per hop us"):
        t.add_column(col)
    for name, xs in (("read state (baseline)", reads), ("walk (prediction)", walks)):
        xs = sorted(xs)
        t.add_row(name, f"{statistics.median(xs) * 1e3:.1f}", f"{xs[int(len(xs) * 0.9) - 1] * 1e3:.1f}",
                  f"{statistics.median(xs) / max(hops, 1) * 1e6:.0f}")
    Console().print(t)


def scenarios(lab: str, n: int, seed: int) -> None:
    import pathlib
    import sys

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent / "tests" / "integration" / "trace"))
    from test_trace import generated_flows

    from podnet.trace import resolve, snapshot, verify, walk

    agree, bad, t0 = 0, [], time.perf_counter()
    for args in generated_flows(seed, n):
        opts = dict(zip(args[::2], args[1::2], strict=True))
        c = snapshot.read_cluster(lab)
        src, pkt = resolve.flow(c, opts["--from"], opts["--to"], opts["--proto"],
                                int(opts["--sport"]) if "--sport" in opts else None)
        r = walk.walk(c, src, pkt)
        rep = verify.verify(c, src, pkt, r)
        if rep.agree:
            agree += 1
        else:
            bad.append((args, rep.disagreements[:2]))
    Console().print(f"{agree}/{n} generated flows agree with the kernel ({time.perf_counter() - t0:.0f} s)")
    for b in bad:
        Console().print(b)


if __name__ == "__main__":
    main()
