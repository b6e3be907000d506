"""Connect latency through a ClusterIP with 10 vs 10,000 services (x 10 endpoints), iptables and nftables mode.

Goal (issue 8): in nftables mode, the median TCP connect time through a ClusterIP at 10k services stays within
1.1x of the time at 10 services; iptables mode is measured the same way for comparison (its KUBE-SERVICES chain
is a linear scan). The floor is a direct connect to an endpoint IP (no DNAT; it still crosses the router's
tables, where it misses every service).

Topology per (mode, size), all in fresh pn-nft-dp-* namespaces:
    client 10.0.1.2 -- router (10.0.1.1 | 10.0.2.1; holds the proxy rules) -- server 10.0.2.2
The server owns the whole endpoint range (`ip route add local 10.128.0.0/9 dev lo`) and listens on :8080, so
every endpoint the DNAT picks answers. The rules are loaded by the real backends (IptablesBackend /
NftablesBackend). Both sizes of one mode exist side by side and are measured interleaved (rounds of
--count connects each: small VIP, big VIP, small direct, big direct) so host drift hits them alike.

Run as root: `.venv/bin/python benchmarks/dataplane.py [--count 1000] [--rounds 3] [--big 10000]` (~3 min).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import subprocess
import sys
import time

from podnet.net import netns
from podnet.proxy.config import LocalDetector, ProxierSettings
from podnet.proxy.state import DesiredState, Endpoint, ServicePort, ServicePortName

ENDPOINTS = 10
SETTINGS = ProxierSettings(node_name="bench", node_ip="10.0.1.1", node_ips=("10.0.1.1",),
                           local_detector=LocalDetector.by_cidr("10.128.0.0/9"))

SERVER = """
import socket, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

CLIENT = """
import json, socket, statistics, sys, time
host, port, count = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
out = []
for _ in range(count + 20):
    s = socket.socket(); s.settimeout(3)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00")
    t = time.perf_counter(); s.connect((host, port)); out.append(time.perf_counter() - t); s.close()
print(json.dumps(statistics.median(out[20:]) * 1e6))
"""


def make_state(n: int) -> DesiredState:
    services = {}
    for i in range(n):
        name = ServicePortName(f"ns{i % 50}", f"svc{i}", "http", "TCP")
        eps = [Endpoint(ip=f"10.{128 + ((i * ENDPOINTS + j) >> 16)}.{((i * ENDPOINTS + j) >> 8) & 255}."
                           f"{(i * ENDPOINTS + j) & 255}", port=8080, node_name="other") for j in range(ENDPOINTS)]
        services[name] = ServicePort(name=name, cluster_ip=f"10.96.{(i >> 8) & 255}.{i & 255}", port=80,
                                     endpoints=tuple(sorted(eps, key=str)))
    return DesiredState(node_name="bench", services=services)


class Bed:
    """client -- router -- server, in namespaces named pn-nft-dp-<role>-<tag>."""

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.client, self.router, self.server = (f"pn-nft-dp-{r}-{tag}" for r in ("c", "r", "s"))
        self.names = [self.client, self.router, self.server]
        self.proc: subprocess.Popen[str] | None = None

    def sh(self, ns: str, *argv: str, input: str | None = None) -> str:
        return netns.run(ns, list(argv), input=input, timeout=600).stdout

    def build(self) -> None:
        for ns in self.names:
            netns.create(ns)
        c, r, s = self.client, self.router, self.server
        self.sh(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        self.sh(r, "ip", "link", "add", "r0", "type", "veth", "peer", "name", "eth0", "netns", c)
        self.sh(r, "ip", "link", "add", "r1", "type", "veth", "peer", "name", "eth0", "netns", s)
        for ns, dev, addr in ((r, "r0", "10.0.1.1/24"), (r, "r1", "10.0.2.1/24"), (c, "eth0", "10.0.1.2/24"),
                              (s, "eth0", "10.0.2.2/24")):
            self.sh(ns, "ip", "addr", "add", addr, "dev", dev)
            self.sh(ns, "ip", "link", "set", dev, "up")
        self.sh(c, "ip", "route", "add", "default", "via", "10.0.1.1")
        self.sh(s, "ip", "route", "add", "default", "via", "10.0.2.1")
        self.sh(s, "ip", "route", "add", "local", "10.128.0.0/9", "dev", "lo")
        self.sh(r, "ip", "route", "add", "10.128.0.0/9", "via", "10.0.2.2")
        self.proc = subprocess.Popen(netns.exec_argv(s, [sys.executable, "-c", SERVER]), stdout=subprocess.PIPE,
                                     text=True)
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == "ready"

    def load(self, mode: str, state: DesiredState) -> float:
        t = time.monotonic()
        if mode == "iptables":
            from podnet.proxy.proxier import IptablesBackend
            from podnet.proxy.restore import Restorer, Runner

            IptablesBackend(Restorer(Runner(netns=self.router))).full_sync(state, SETTINGS)
        else:
            from podnet.proxy.nft import Nft
            from podnet.proxy.nft_backend import NftablesBackend

            NftablesBackend(nft=Nft(self.router)).full_sync(state, SETTINGS)
        return time.monotonic() - t

    def connect_us(self, host: str, port: int, count: int) -> float:
        return float(json.loads(self.sh(self.client, sys.executable, "-c", CLIENT, host, str(port), str(count))))

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        for ns in reversed(self.names):
            try:
                netns.remove(ns)
            except OSError:
                pass


def run_mode(mode: str, big: int, count: int, rounds: int) -> dict[str, float]:
    small_state, big_state = make_state(10), make_state(big)
    target_small = list(small_state.services.values())[5]
    target_big = list(big_state.services.values())[big // 2]
    small, large = Bed(), Bed()
    try:
        small.build()
        large.build()
        load_small = small.load(mode, small_state)
        load_big = large.load(mode, big_state)
        res: dict[str, list[float]] = {"small": [], "big": [], "direct_small": [], "direct_big": []}
        for _ in range(rounds):
            res["small"].append(small.connect_us(target_small.cluster_ip, 80, count))
            res["big"].append(large.connect_us(target_big.cluster_ip, 80, count))
            res["direct_small"].append(small.connect_us(target_small.endpoints[0].ip, 8080, count))
            res["direct_big"].append(large.connect_us(target_big.endpoints[0].ip, 8080, count))
        out = {k: statistics.median(v) for k, v in res.items()}
        out["load_small"], out["load_big"] = load_small, load_big
        return out
    finally:
        small.close()
        large.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--count", type=int, default=1000, help="connects per measurement")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--big", type=int, default=10000)
    ap.add_argument("--modes", default="iptables,nftables")
    args = ap.parse_args()
    rows = []
    for mode in args.modes.split(","):
        rows.append((mode, run_mode(mode, args.big, args.count, args.rounds)))
        print(f"  {mode} done", file=sys.stderr, flush=True)
    print(f"median TCP connect time (us), ClusterIP with 10 vs {args.big} services x {ENDPOINTS} endpoints; "
          f"{args.rounds} interleaved rounds of {args.count} connects, median of round medians")
    hdr = ("mode", "direct (floor)", "VIP, 10 svc", f"VIP, {args.big} svc", "big / small", "VIP - floor at 10 svc",
           "rules load 10 / big")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    ok = True
    for mode, r in rows:
        floor = min(r["direct_small"], r["direct_big"])
        ratio = r["big"] / r["small"]
        print(" | ".join([mode, f"{floor:.1f}", f"{r['small']:.1f}", f"{r['big']:.1f}", f"{ratio:.2f}x",
                          f"{r['small'] - floor:+.1f}", f"{r['load_small']:.2f} s / {r['load_big']:.2f} s"]))
        if mode == "nftables":
            ok = ok and ratio <= 1.1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
