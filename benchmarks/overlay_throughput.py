"""Pod-to-pod TCP throughput across nodes for the vxlan, host-gw and udp backends, against the plain
underlay veth path (node to node over the same bridge) measured in the same run.

Topology: overlay/backends/testbed.py (underlay bridge namespace, 2 node namespaces, a pod behind a
bridge on each). One iperf3 TCP stream, bounded (-t seconds), each case run `--rounds` times
interleaved; the best round counts (these machines are noisy, see shared/reference/performance.md).

Targets (issue 4): vxlan >= 90 % of the baseline, host-gw >= 95 %, udp >= 1 Gbit/s.
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import subprocess
import sys
import time

from podnet.net import netns
from podnet.overlay.backends.testbed import Testbed

CASES = ["underlay", "host-gw", "vxlan", "udp"]
TARGETS = {"host-gw": ("ratio", 0.95), "vxlan": ("ratio", 0.90), "udp": ("gbps", 1.0)}


def iperf(client_ns: str, server_ns: str, server_ip: ipaddress.IPv4Address, seconds: int) -> float:
    """Gbit/s received by the server for one TCP stream."""
    srv = subprocess.Popen(netns.exec_argv(server_ns, ["iperf3", "-s", "-1", "-B", str(server_ip)]),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # wait until it listens
            if f"{server_ip}:5201" in netns.run(server_ns, ["ss", "-Htln"]).stdout:
                break
            time.sleep(0.05)
        out = netns.run(client_ns, ["iperf3", "-c", str(server_ip), "-t", str(seconds), "-J"],
                        check=False, timeout=seconds + 20).stdout
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(f"iperf3 {client_ns} -> {server_ip}: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.kill()
        srv.wait()


def measure(case: str, seconds: int) -> float:
    tb = Testbed(2)
    try:
        tb.build()
        a, b = tb.nodes
        if case == "underlay":
            return iperf(a.ns, b.ns, b.public_ip, seconds)
        tb.start(case)
        return iperf(a.pod_ns, b.pod_ns, b.pod_ip, seconds)
    finally:
        tb.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--cases", default=",".join(CASES))
    args = ap.parse_args()
    cases = args.cases.split(",")
    if "underlay" not in cases:
        cases.insert(0, "underlay")
    best: dict[str, float] = {}
    for _ in range(args.rounds):
        for case in cases:
            best[case] = max(best.get(case, 0.0), measure(case, args.seconds))
    base = best["underlay"]
    print(f"{'path':<10} {'Gbit/s':>8} {'ratio':>7}  target")
    ok = True
    for case in cases:
        gbps = best[case]
        target = ""
        if case in TARGETS:
            kind, value = TARGETS[case]
            met = (gbps / base >= value) if kind == "ratio" else gbps >= value
            target = (f">= {value:.0%} of underlay" if kind == "ratio" else f">= {value} Gbit/s") + (
                "  ok" if met else "  MISSED")
            ok &= met
        print(f"{case:<10} {gbps:8.2f} {gbps / base:7.1%}  {target}")
    print(f"(one TCP stream, iperf3 -t {args.seconds}, best of {args.rounds} rounds)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
