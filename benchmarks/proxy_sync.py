"""How fast podnet's iptables proxy syncs at 1k / 5k / 10k services x 10 endpoints, against kube-proxy's way.

podnet: the real sync path (proxy/iptables.py renders, proxy/restore.py loads) in namespace pn-px-bench:
  full     first full sync into an empty node (render + restore, jumps, stale-chain listing included)
  re-sync  the periodic full sync over the same rules
  1-svc    partial sync after one service's endpoint changed (median of 5 changes, kernel settled), and
           the same right after a full sync (the kernel still frees the replaced rules; the transaction waits)
kube-proxy's way, the baseline, in namespace pn-px-bench-kp: the same full restore text through one
`iptables-restore -w --noflush`, as kube-proxy runs it, with a time limit (reported as ">limit" when hit).
Both namespaces hold a foreign chain (as Docker's) that must survive every sync; the script checks it.

Run as root: `.venv/bin/python benchmarks/proxy_sync.py [--sizes 1000,5000,10000] [--limit 120]` (about 5-6 min).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from dataclasses import replace

from podnet.net import netns
from podnet.proxy.config import LocalDetector, ProxierSettings
from podnet.proxy.iptables import render
from podnet.proxy.proxier import IptablesBackend
from podnet.proxy.restore import Restorer, Runner
from podnet.proxy.state import DesiredState, Endpoint, ServicePort, ServicePortName

NS = "pn-px-bench"
NS_KP = "pn-px-bench-kp"
ENDPOINTS = 10
FOREIGN = "*nat\n:DOCKER - [0:0]\n-A DOCKER -d 198.51.100.7/32 -j RETURN\n-A PREROUTING -j DOCKER\nCOMMIT\n"


def make_state(n: int, eps: int = ENDPOINTS) -> DesiredState:
    services = {}
    for i in range(n):
        name = ServicePortName(f"ns{i % 50}", f"svc{i}", "http", "TCP")
        e = [
            Endpoint(ip=f"10.{128 + ((i * eps + j) >> 16)}.{((i * eps + j) >> 8) & 255}.{(i * eps + j) & 255}",
                     port=8080, node_name="other")
            for j in range(eps)
        ]
        services[name] = ServicePort(name=name, cluster_ip=f"10.96.{(i >> 8) & 255}.{i & 255}", port=80,
                                     endpoints=tuple(sorted(e, key=str)))
    return DesiredState(node_name="bench", services=services)


SETTINGS = ProxierSettings(node_name="bench", node_ip="192.168.0.1", node_ips=("192.168.0.1",),
                           local_detector=LocalDetector.by_cidr("10.128.0.0/9"))


def fresh_ns(name: str) -> None:
    netns.remove(name)
    netns.create(name)
    netns.run(name, ["iptables-restore", "-w", "5", "--noflush"], input=FOREIGN)


def foreign_ok(name: str) -> bool:
    out = netns.run(name, ["iptables", "-w", "5", "-t", "nat", "-S", "DOCKER"], check=False).stdout
    pre = netns.run(name, ["iptables", "-w", "5", "-t", "nat", "-S", "PREROUTING"], check=False).stdout
    return "198.51.100.7" in out and "-j DOCKER" in pre


def bench_podnet(n: int) -> dict[str, float]:
    fresh_ns(NS)
    backend = IptablesBackend(Restorer(Runner(netns=NS)))
    state = make_state(n)
    t = time.monotonic()
    backend.full_sync(state, SETTINGS)
    full = time.monotonic() - t
    t = time.monotonic()
    backend.full_sync(state, SETTINGS)
    resync = time.monotonic() - t
    names = list(state.services)

    def change(k: int) -> float:
        spn = names[(k * 7919) % n]
        old_sp = state.services[spn]
        new_eps = tuple(sorted((*old_sp.endpoints[1:], Endpoint(ip=f"10.250.{k}.1", port=8080)), key=str))
        new_sp = replace(old_sp, endpoints=new_eps)
        t = time.monotonic()
        # what the sync loop does for one changed service: render old and new of just it, diff, restore
        backend.partial_sync(DesiredState("bench", services={spn: old_sp}),
                             DesiredState("bench", services={spn: new_sp}), SETTINGS, large_cluster=True)
        state.services[spn] = new_sp  # type: ignore[index]
        return time.monotonic() - t

    # Right after a full sync the kernel is still freeing the replaced ruleset, and the next transaction
    # waits for that: report it apart from the steady state (changes between periodic full syncs).
    after_full = change(0)
    time.sleep(3)
    times = [change(k) for k in range(1, 6)]
    ok = foreign_ok(NS)
    # the kernel must hold exactly what a fresh full render says (partial syncs included)
    want = render(state, SETTINGS, full=True, cleanup_stale=False)
    kernel = netns.run(NS, ["iptables-save", "-t", "nat"], check=False).stdout
    n_rules = sum(1 for line in kernel.splitlines() if line.startswith("-A KUBE-"))
    expect = want.nat_rules_written
    return {"full": full, "resync": resync, "one": statistics.median(times), "one_after_full": after_full,
            "foreign": ok,
            "rules_ok": n_rules == expect}


def bench_kube_proxy(n: int, limit: float) -> dict[str, float | None]:
    fresh_ns(NS_KP)
    text = render(make_state(n), SETTINGS, full=True).text
    out: dict[str, float | None] = {}
    for phase in ("first", "resync"):
        t = time.monotonic()
        try:
            p = subprocess.run(netns.exec_argv(NS_KP, ["iptables-restore", "-w", "5", "--noflush"]), input=text,
                               text=True, capture_output=True, timeout=limit)
            out[phase] = time.monotonic() - t if p.returncode == 0 else None
        except subprocess.TimeoutExpired:
            out[phase] = None  # limit hit
            break
    out["foreign"] = foreign_ok(NS_KP)
    return out


def fmt(v: float | None, limit: float) -> str:
    return f">{limit:.0f} s (limit)" if v is None else f"{v:.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--limit", type=float, default=120.0, help="time limit for one kube-proxy-way restore")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    try:
        for n in sizes:
            p = bench_podnet(n)
            netns.remove(NS)
            k = bench_kube_proxy(n, args.limit)
            netns.remove(NS_KP)
            rows.append((n, p, k))
            print(f"  {n} services done", file=sys.stderr, flush=True)
    finally:
        netns.remove(NS)
        netns.remove(NS_KP)
    print(f"iptables proxy sync, services x {ENDPOINTS} endpoints (ClusterIP), iptables-nft backend")
    hdr = ("services", "podnet full", "podnet re-sync", "podnet 1-svc", "1-svc right after full", "kube-proxy way",
           "kp re-sync",
           "full speed-up", "foreign kept", "rules ok")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    for n, p, k in rows:
        kp = k["first"]
        ratio = f"{kp / p['full']:.1f}x" if kp else f">{args.limit / p['full']:.1f}x"
        print(" | ".join([
            str(n), fmt(p["full"], 0), fmt(p["resync"], 0), f"{p['one'] * 1000:.0f} ms",
            f"{p['one_after_full'] * 1000:.0f} ms",
            fmt(kp, args.limit), fmt(k.get("resync"), args.limit), ratio,
            "yes" if p["foreign"] and k["foreign"] else "NO", "yes" if p["rules_ok"] else "NO",
        ]))
    return 0 if all(p["foreign"] and p["rules_ok"] for _, p, _ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
