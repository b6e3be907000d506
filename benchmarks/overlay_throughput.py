"""Pod-to-pod TCP throughput across nodes for the vxlan, host-gw and udp backends, against the plain
underlay veth path (node to node over the same bridge) measured in the same run.

Topology: podnet/testing/overlay_testbed.py (underlay bridge namespace, 2 node namespaces, a pod behind a
bridge on each). One iperf3 TCP stream, bounded (-t seconds); for each backend, `--rounds` pairs of
(node-to-node underlay, pod-to-pod overlay) runs back to back in the same testbed; medians reported
(these machines are noisy, see shared/reference/performance.md).

Targets (issue 4): vxlan >= 90 % of the baseline, host-gw >= 95 %, udp >= 1 Gbit/s; a miss is reported
in the table (exit status stays 0 so `make bench` runs the other benchmarks; a failed measurement exits
non-zero). The pod path crosses two more veths, two bridges and two forwarding hops than the
node-to-node baseline, all on the sending CPU in this setup.

Where the single-stream gap comes from (measured on a 2-CPU VM, Nov 2026; paired ratios, noise ~+-5 %):
a veth delivers on the CPU that sends, so one stream's whole chain - sender TCP, both nodes' stacks,
the receiving pod's veth - is processed by whichever CPU transmits; both CPUs stay ~30 % idle. The
pod path's extra hops (pod veth + cni0 + a forwarding decision, on each side) are pure per-packet CPU
work. None of these changed the ratio beyond noise, for baseline and pod path alike: bridge-nf-call-
iptables=0 on the underlay bridge and/or on the nodes (br_netfilter, kube-proxy needs it on nodes),
veth GRO (NAPI mode) on underlay and/or pod veths, GRO/rx-udp-gro-forwarding on flannel.1 and eth0,
-w 4M socket buffers. The sender's TCP retransmits are reordering, not drops (no backlog drops):
ACK-clocked sends leave from the ACK's CPU, so segments enter two per-CPU backlogs; the baseline
shows more of them than the pod path, so they are not the pod path's cost.
A kernel profile (perf record -e cpu-clock, Dec 2026, both iperf3 on one CPU so nothing overlaps) finds
no hot spot: the pod path's extra time is spread over the kernel's own forwarding functions (veth_xmit,
br_handle_frame, fib_table_lookup, ip_forward, vxlan_xmit_one, ...), none above ~1.3 % of samples, while
the share spent copying payload falls from 42 % to 32 %. podnet has no code in the vxlan or host-gw data
path; the devices are flannel's recipe, so flanneld on this machine meets the same kernel cost.
Also measured and ruled out: vxlan noudpcsum (no change), congestion control bbr (the VM's default) vs
cubic (within noise). IPv4 BIG TCP (gso/gro_ipv4_max_size 512K on every device, kernel >= 6.3) lifts
host-gw by 5-8 points (still < 95 %) but cannot cross vxlan (0.25 Gbit/s: the encapsulation drops
super-packets over 64K), so podnet does not set it.

Modes (the same treatment for baseline and pod path in every mode); figures are medians of pair ratios
on a 2-CPU VM, Nov 2026 / Dec 2026 (kernel 6.18, a slower day: underlay 13-17 instead of ~19.6 Gbit/s):
  default         nodes share both CPUs, one stream. host-gw ~83 % / 82-93 %, vxlan ~68 % / 65-75 %.
  --cpu-per-node  models separate machines: RPS sends each node's underlay receive work to a CPU of
                  its own and iperf3 client/server are pinned to their node's CPU. The pod path's
                  figure stays the same as in the default mode; the baseline loses ~25 % (it no longer
                  gets the second CPU's help), so the ratio rose in Nov (host-gw ~96-98 %, vxlan
                  ~87-90 %); in Dec it did not reproduce (host-gw 92 %, vxlan 71 %).
  -P 2            two streams fill both CPUs: the ratio becomes the per-byte CPU cost (host-gw ~96 %,
                  vxlan ~74 %: encapsulation is real work).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import statistics
import subprocess
import sys
import time

from podnet.net import netns
from podnet.testing.overlay_testbed import Testbed

CASES = ["underlay", "host-gw", "vxlan", "udp"]
TARGETS = {"host-gw": ("ratio", 0.95), "vxlan": ("ratio", 0.90), "udp": ("gbps", 1.0)}


def pinned(cpu: int | None, argv: list[str]) -> list[str]:
    return argv if cpu is None else ["taskset", "-c", str(cpu), *argv]


def iperf(client_ns: str, server_ns: str, server_ip: ipaddress.IPv4Address, seconds: int, *,
          streams: int = 1, cpus: tuple[int, int] | None = None) -> float:
    """Gbit/s received by the server; `cpus` pins (client, server) the same way for every path."""
    ccpu, scpu = cpus or (None, None)
    srv = subprocess.Popen(netns.exec_argv(server_ns, pinned(scpu, ["iperf3", "-s", "-1", "-B", str(server_ip)])),
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(50):  # wait until it listens
            if f"{server_ip}:5201" in netns.run(server_ns, ["ss", "-Htln"]).stdout:
                break
            time.sleep(0.05)
        argv = ["iperf3", "-c", str(server_ip), "-t", str(seconds), "-P", str(streams), "-J"]
        out = netns.run(client_ns, pinned(ccpu, argv), check=False, timeout=seconds + 20).stdout
        data = json.loads(out)
        if "error" in data:
            raise RuntimeError(f"iperf3 {client_ns} -> {server_ip}: {data['error']}")
        return data["end"]["sum_received"]["bits_per_second"] / 1e9
    finally:
        srv.kill()
        srv.wait()


def measure(case: str, seconds: int, rounds: int, *, streams: int = 1,
            cpu_per_node: bool = False) -> list[tuple[float, float]]:
    """(underlay, pod) Gbit/s pairs measured back to back in one testbed running backend `case`.

    Pairing matters on a shared machine: load from elsewhere shifts both numbers of a pair alike, so
    the ratio of a pair is far steadier than the ratio of two runs a minute apart.
    """
    tb = Testbed(2)
    try:
        tb.build()
        a, b = tb.nodes
        tb.start(case)
        cpus = None
        if cpu_per_node:
            node_cpu = tb.cpu_per_node()
            cpus = (node_cpu[a.i], node_cpu[b.i])
        pairs = []
        for _ in range(rounds):
            under = iperf(a.ns, b.ns, b.public_ip, seconds, streams=streams, cpus=cpus)
            pod = iperf(a.pod_ns, b.pod_ns, b.pod_ip, seconds, streams=streams, cpus=cpus)
            pairs.append((under, pod))
        return pairs
    finally:
        tb.close()


def diagnose(seconds: int, rounds: int) -> None:
    """Where the pod path loses against the underlay: host-gw with one pod end at a time."""
    tb = Testbed(2)
    try:
        tb.build()
        a, b = tb.nodes
        tb.start("host-gw")
        paths = {"node->node": (a.ns, b.ns, b.public_ip), "node->pod": (a.ns, b.pod_ns, b.pod_ip),
                 "pod->node": (a.pod_ns, b.ns, b.public_ip), "pod->pod": (a.pod_ns, b.pod_ns, b.pod_ip)}
        runs: dict[str, list[float]] = {k: [] for k in paths}
        for _ in range(rounds):
            for name, (c, sv, ip) in paths.items():
                runs[name].append(iperf(c, sv, ip, seconds))
        base = statistics.median(runs["node->node"])
        print("host-gw hops (median Gbit/s, ratio to node->node):")
        for name, values in runs.items():
            print(f"  {name:<11} {statistics.median(values):8.2f} {statistics.median(values) / base:7.1%}")
    finally:
        tb.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-t", "--seconds", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--cases", default=",".join(CASES))
    ap.add_argument("--diagnose", action="store_true", help="also split the host-gw path hop by hop")
    ap.add_argument("-P", "--streams", type=int, default=1, help="parallel TCP streams (iperf3 -P)")
    ap.add_argument("--cpu-per-node", action="store_true",
                    help="model separate machines: each node's underlay receive work and its iperf3 on a "
                         "CPU of its own (RPS + taskset), identical for the baseline and the pod path")
    args = ap.parse_args()
    if args.diagnose:
        diagnose(args.seconds, args.rounds)
    cases = [c for c in args.cases.split(",") if c != "underlay"]
    results = {case: measure(case, args.seconds, args.rounds, streams=args.streams,
                             cpu_per_node=args.cpu_per_node) for case in cases}
    under_all = [u for pairs in results.values() for u, _ in pairs]
    print(f"{'path':<10} {'Gbit/s':>8} {'ratio':>7} {'pair ratios':>13}  target")
    print(f"{'underlay':<10} {statistics.median(under_all):8.2f} {1:7.1%} {'':>13}  (node to node, median of all runs)")
    ok = True
    for case in cases:
        pairs = results[case]
        gbps = statistics.median(p for _, p in pairs)
        ratios = [p / u for u, p in pairs]
        ratio = statistics.median(ratios)
        spread = f"{min(ratios):.0%}-{max(ratios):.0%}"
        kind, value = TARGETS[case]
        met = ratio >= value if kind == "ratio" else gbps >= value
        ok &= met
        target = (f">= {value:.0%} of underlay" if kind == "ratio" else f">= {value} Gbit/s") + (
            "  ok" if met else "  MISSED")
        print(f"{case:<10} {gbps:8.2f} {ratio:7.1%} {spread:>13}  {target}")
    mode = "one CPU per node (RPS + taskset)" if args.cpu_per_node else "nodes share the CPUs"
    print(f"({args.streams} TCP stream(s) pod to pod across nodes, iperf3 -t {args.seconds}; {mode}; per backend "
          f"{args.rounds} underlay/pod pairs back to back in one testbed; medians; ratio = median of the pair ratios, 'pair ratios' = their lowest-highest)")
    if not ok:
        print("some targets MISSED (reported, not an error: figures depend on the machine and its load)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
