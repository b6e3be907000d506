"""Connect latency through a ClusterIP with 10 vs 10,000 services (x 10 endpoints), iptables and nftables mode.

Goal (issue 8): in nftables mode, the median TCP connect time through a ClusterIP at 10k services stays within
1.1x of the time at 10 services; iptables mode is measured the same way for comparison (its KUBE-SERVICES chain
is a linear scan). The floor is a direct connect to an endpoint IP through the small router (no DNAT, and a
table of 10 services to miss; through the big router it would cross iptables' 10k-rule KUBE-SERVICES scan,
so it would be no floor).

Topology per mode, in fresh pn-nft-dp-* namespaces: ONE client wired to two routers, one holding the rules for
10 services, the other for 10k (see Bed); each router fronts its own server, which owns the whole endpoint range
(`ip route add local 10.128.0.0/9 dev lo`) and listens on :8080, so every endpoint the DNAT picks answers. The
rules are loaded by the real backends (IptablesBackend / NftablesBackend). One client process alternates connect
by connect between the small VIP, the big VIP and the direct endpoint, so the shared host's drift hits all
three alike; --rounds such processes, the median of their medians is reported.

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
from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName
from podnet.proxy.settings import LocalDetector, ProxierSettings

ENDPOINTS = 10
SETTINGS = ProxierSettings(node_name="bench", node_ip="10.0.1.1", node_ips=("10.0.1.1",),
                           local_detector=LocalDetector.by_cidr("10.128.0.0/9"))

SERVER = """
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 8080)); s.listen(4096)
print("ready", flush=True)
while True:
    c, _ = s.accept(); c.close()
"""

# One client process alternates between the targets connect by connect, so drift of the shared host hits
# every target alike; the first 20 rounds warm up (ARP, route caches) and are dropped.
CLIENT = """
import json, socket, statistics, sys, time
targets = [(h, int(p)) for h, p in (t.split(":") for t in sys.argv[2:])]
count = int(sys.argv[1])
linger = b"\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00"
times = [[] for _ in targets]
for i in range(count + 20):
    for k, target in enumerate(targets):
        s = socket.socket(); s.settimeout(3)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        t = time.perf_counter(); s.connect(target); dt = time.perf_counter() - t; s.close()
        if i >= 20:
            times[k].append(dt)
print(json.dumps([statistics.median(t) * 1e6 for t in times]))
"""


def make_state(n: int, vip_net: int = 96) -> DesiredState:
    services = {}
    for i in range(n):
        name = ServicePortName(f"ns{i % 50}", f"svc{i}", "http", "TCP")
        eps = [Endpoint(ip=f"10.{128 + ((i * ENDPOINTS + j) >> 16)}.{((i * ENDPOINTS + j) >> 8) & 255}."
                           f"{(i * ENDPOINTS + j) & 255}", port=8080, node_name="other") for j in range(ENDPOINTS)]
        services[name] = ServicePort(name=name, cluster_ip=f"10.{vip_net}.{(i >> 8) & 255}.{i & 255}", port=80,
                                     endpoints=tuple(sorted(eps, key=str)))
    return DesiredState(node_name="bench", services=services)


class Bed:
    """One client wired to two routers (small and big rule set), each in front of its own server.

        client 10.0.1.2 -- router S (10.0.1.1 | 10.0.2.1) -- server S 10.0.2.2   ClusterIPs 10.95.0.0/16,
                                                                                 endpoint IPs (direct) too
        client 10.0.3.2 -- router B (10.0.3.1 | 10.0.2.1) -- server B 10.0.2.2   ClusterIPs 10.96.0.0/16
    """

    def __init__(self) -> None:
        tag = secrets.token_hex(2)
        self.client = f"pn-nft-dp-c-{tag}"
        self.routers = {"small": f"pn-nft-dp-rs-{tag}", "big": f"pn-nft-dp-rb-{tag}"}
        self.servers = {"small": f"pn-nft-dp-ss-{tag}", "big": f"pn-nft-dp-sb-{tag}"}
        self.names = [self.client, *self.routers.values(), *self.servers.values()]
        self.procs: list[subprocess.Popen[str]] = []

    def sh(self, ns: str, *argv: str) -> str:
        return netns.run(ns, list(argv), timeout=600).stdout

    def build(self) -> None:
        for ns in self.names:
            netns.create(ns)
        c = self.client
        for i, size in enumerate(("small", "big")):
            r, s = self.routers[size], self.servers[size]
            net = 1 + 2 * i  # 10.0.1.0/24 or 10.0.3.0/24 towards the client
            self.sh(r, "sysctl", "-qw", "net.ipv4.ip_forward=1")
            self.sh(r, "ip", "link", "add", "r0", "type", "veth", "peer", "name", f"eth{i}", "netns", c)
            self.sh(r, "ip", "link", "add", "r1", "type", "veth", "peer", "name", "eth0", "netns", s)
            for ns, dev, addr in ((r, "r0", f"10.0.{net}.1/24"), (r, "r1", "10.0.2.1/24"),
                                  (c, f"eth{i}", f"10.0.{net}.2/24"), (s, "eth0", "10.0.2.2/24")):
                self.sh(ns, "ip", "addr", "add", addr, "dev", dev)
                self.sh(ns, "ip", "link", "set", dev, "up")
            self.sh(s, "ip", "route", "add", "default", "via", "10.0.2.1")
            self.sh(s, "ip", "route", "add", "local", "10.128.0.0/9", "dev", "lo")
            self.sh(r, "ip", "route", "add", "10.128.0.0/9", "via", "10.0.2.2")
            p = subprocess.Popen(netns.exec_argv(s, [sys.executable, "-c", SERVER]), stdout=subprocess.PIPE, text=True)
            self.procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        self.sh(c, "ip", "route", "add", "10.95.0.0/16", "via", "10.0.1.1")
        self.sh(c, "ip", "route", "add", "10.96.0.0/16", "via", "10.0.3.1")
        self.sh(c, "ip", "route", "add", "10.128.0.0/9", "via", "10.0.1.1")  # the floor: past 10 services only

    def load(self, mode: str, size: str, state: DesiredState) -> float:
        router = self.routers[size]
        t = time.monotonic()
        if mode == "iptables":
            from podnet.proxy.iptables.backend import IptablesBackend
            from podnet.proxy.iptables.restore import Restorer, Runner

            IptablesBackend(Restorer(Runner(netns=router))).full_sync(state, SETTINGS)
        else:
            from podnet.proxy.nftables.backend import NftablesBackend
            from podnet.proxy.nftables.nft import Nft

            NftablesBackend(nft=Nft(router)).full_sync(state, SETTINGS)
        return time.monotonic() - t

    def connect_us(self, count: int, *targets: str) -> list[float]:
        return json.loads(self.sh(self.client, sys.executable, "-c", CLIENT, str(count), *targets))

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait(5)
        for ns in reversed(self.names):
            try:
                netns.remove(ns)
            except OSError:
                pass


def run_mode(mode: str, big: int, count: int, rounds: int) -> dict[str, float]:
    small_state, big_state = make_state(10, vip_net=95), make_state(big)
    target_small = list(small_state.services.values())[5]
    target_big = list(big_state.services.values())[big // 2]
    bed = Bed()
    try:
        bed.build()
        load_small = bed.load(mode, "small", small_state)
        load_big = bed.load(mode, "big", big_state)
        res: dict[str, list[float]] = {"small": [], "big": [], "direct": []}
        for _ in range(rounds):
            s, b, d = bed.connect_us(count, f"{target_small.cluster_ip}:80", f"{target_big.cluster_ip}:80",
                                     f"{target_big.endpoints[0].ip}:8080")
            res["small"].append(s)
            res["big"].append(b)
            res["direct"].append(d)
        out = {k: statistics.median(v) for k, v in res.items()}
        out["load_small"], out["load_big"] = load_small, load_big
        return out
    finally:
        bed.close()


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
          f"{args.rounds} rounds of {args.count} connects to each target, alternating; median of round medians")
    hdr = ("mode", "direct (floor)", "VIP, 10 svc", f"VIP, {args.big} svc", "big / small", "VIP - floor at 10 svc",
           "rules load 10 / big")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    ok = True
    for mode, r in rows:
        ratio = r["big"] / r["small"]
        print(" | ".join([mode, f"{r['direct']:.1f}", f"{r['small']:.1f}", f"{r['big']:.1f}", f"{ratio:.2f}x",
                          f"{r['small'] - r['direct']:+.1f}", f"{r['load_small']:.2f} s / {r['load_big']:.2f} s"]))
        if mode == "nftables":
            ok = ok and ratio <= 1.1
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
