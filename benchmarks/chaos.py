"""Chaos benchmark: rounds of kill -9 of every lab process (random, seeded order) in a 2-node lab, in both
proxy modes (and with the lab's own etcd, --etcd), while a client in a pod calls the examples' ClusterIP
and a NodePort on a node address.

Per lab: kills survived (the process came back and a Service created after the kill answered), requests
sent and failed, and the time until a new Service answers (median, worst; goal 2 s). Baseline in the same
run and lab: the same client windows and new-Service timings with no kill.

    python benchmarks/chaos.py [--rounds 3] [--etcd] [--seed N]
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys

from rich.console import Console
from rich.table import Table

from podnet.lab import chaos, cluster, topology
from podnet.lab.state import lab_dir


def one_lab(mode: str, store: str, rounds: int, rng: random.Random) -> list[tuple[str, chaos.Run]]:
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
        return [("baseline (no kills)", baseline), (f"{len(order)} kills", kills)]
    finally:
        cluster.down(name)


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
    table = Table("lab", "run", "kills survived", "requests sent", "failed", "new Service p50", "worst", "worst after killing",
                  title="kill -9 of every lab process under a ClusterIP + NodePort client")
    ok = True
    stores = ["sqlite", "etcd"] if args.etcd else ["sqlite"]
    for mode in ("iptables", "nftables"):
        for store in stores:
            for label, res in one_lab(mode, store, args.rounds, rng):
                times = [k.converged_after for k in res.kills if k.converged_after is not None]
                survived = "-" if label.startswith("baseline") else f"{res.survived}/{len(res.kills)}"
                worst = max(res.kills, key=lambda k: k.converged_after if k.converged_after is not None
                            else float("inf"))
                table.add_row(f"{mode}, {store}", label, survived, str(res.sent), str(res.failed),
                              f"{statistics.median(times):.2f} s" if times else "-", f"{res.worst:.2f} s",
                              "-" if label.startswith("baseline") else worst.role)
                ok &= res.failed == 0 and res.survived == len(res.kills)
                for e in res.errors[:5]:
                    console.print(f"  [red]{mode}/{store} {label}[/]: {e}")
    console.print(table)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
