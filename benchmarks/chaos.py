"""Chaos benchmark: rounds of kill -9 of every lab process (random, seeded order) in a 2-node lab, in both
proxy modes (and with the lab's own etcd, --etcd), while a client in a pod calls the examples' ClusterIP
and a NodePort on a node address.

Per lab: kills survived (the process came back and a Service created right after the kill answered),
requests sent and failed. Per role (proxy, overlay, agent, supervisor, controlplane, etcd, apiserver):
how long after the kill its successor ran and a new Service answered (median and worst; goal 2 s).
Baseline in the same run and labs: the same client windows and new-Service timings with no kill.

    python benchmarks/chaos.py [--rounds 3] [--etcd] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
from collections import defaultdict

from rich.console import Console
from rich.table import Table

from podnet.lab import chaos, cluster, topology
from podnet.lab.state import lab_dir

GOAL = 2.0  # seconds from a kill until a new Service answers
BASELINE = "(no kill)"


def one_lab(mode: str, store: str, rounds: int, rng: random.Random) -> tuple[chaos.Run, chaos.Run]:
    """(baseline, kills) of one fresh lab."""
    name = f"bch{secrets.token_hex(2)}"
    spec = topology.build(name, 2, "vxlan", mode, store)
    try:
        cluster.up(spec, f"sqlite:///{lab_dir(name)}/state.db")
        w = chaos.start_workload(name)
        roles = chaos.victims(name)
        baseline = chaos.run(name, w, [None] * len(roles))
        order: list[str | None] = []
        for _ in range(rounds):
            r = list(roles)
            rng.shuffle(r)
            order += r
        kills = chaos.run(name, w, order, first_index=len(roles))
        return baseline, kills
    finally:
        cluster.down(name)


def _s(x: float | None) -> str:
    return "-" if x is None else ("never" if x == float("inf") else f"{x:.2f} s")


def _worst(values: list[float | None]) -> float:
    return max((v if v is not None else float("inf") for v in values), default=0.0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3, help="kills of every role per lab (default 3)")
    ap.add_argument("--etcd", action="store_true", help="also run each proxy mode with the lab's own etcd")
    ap.add_argument("--seed", type=int, default=None)
    args = ap.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    rng = random.Random(seed)
    console = Console(width=150)
    console.print(f"chaos seed {seed}")
    labs = Table("lab", "run", "kills survived", "requests sent", "failed",
                 title="kill -9 of every lab process under a ClusterIP + NodePort client")
    by_role: dict[str, list[tuple[str, chaos.Kill]]] = defaultdict(list)  # role kind -> (lab, kill)
    ok = True
    stores = ["sqlite", "etcd"] if args.etcd else ["sqlite"]
    for mode in ("iptables", "nftables"):
        for store in stores:
            lab = f"{mode}, {store}"
            baseline, kills = one_lab(mode, store, args.rounds, rng)
            for label, res in (("baseline (no kills)", baseline), (f"{len(kills.kills)} kills", kills)):
                survived = "-" if res is baseline else f"{res.survived}/{len(res.kills)}"
                labs.add_row(lab, label, survived, str(res.sent), str(res.failed))
                ok &= res.failed == 0 and res.survived == len(res.kills)
                for e in res.errors[:5]:
                    console.print(f"  [red]{lab} {label}[/]: {e}")
            by_role[BASELINE] += [(lab, k) for k in baseline.kills]
            for k in kills.kills:
                by_role[k.kind].append((lab, k))
    console.print(labs)

    base_worst = _worst([k.converged_after for _, k in by_role[BASELINE]])
    roles = Table("killed", "kills", "back after (worst)", "new Service p50", "worst", "worst / baseline",
                  f"within {GOAL:.0f} s", "worst in",
                  title="a Service created right after kill -9 answers from a pod: seconds from the kill")
    for role in [BASELINE, *sorted(r for r in by_role if r != BASELINE)]:
        entries = by_role[role]
        times = [k.converged_after for _, k in entries]
        answered = [t for t in times if t is not None]
        worst = _worst(times)
        lab_of_worst = max(entries, key=lambda e: e[1].converged_after if e[1].converged_after is not None
                           else float("inf"))[0]
        within = sum(t is not None and t <= GOAL for t in times)
        roles.add_row(role, str(len(entries)),
                      "-" if role == BASELINE else _s(_worst([k.back_after for _, k in entries])),
                      _s(statistics.median(answered)) if answered else "-", _s(worst),
                      f"{worst / base_worst:.1f}x" if base_worst and worst != float("inf") else "-",
                      f"{within}/{len(times)}", lab_of_worst)
    console.print(roles)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
