"""`podnet proxy run` on a dual-stack node: one proxier per family, packets of both families really arrive.

    client 10.20.1.2 / fd00:20:1::2 --veth-- node 10.20.1.1 / fd00:20:1::1 (cni0 10.244.1.1, fd00:10:244:1::1)
                                                  --cni0-- ep 10.244.1.2 / fd00:10:244:1::2
A RequireDualStack Service with an IPv4 and an IPv6 ClusterIP and a NodePort; the endpoint pod has an IPv4
and an IPv6 EndpointSlice. In both modes: a TCP connection arrives via each ClusterIP and via the NodePort
on each family's node address, and a UDP flow of each family; when the slices go, neither family's rules name
the endpoint any more, each family's stale UDP conntrack entries are deleted, and connections are rejected.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.proxy.pxcluster import PROBE, StoreObjects, sh

pytestmark = pytest.mark.integration

NODE = "node1"
CIP4, CIP6 = "10.96.0.10", "fd00:10:96::10"
NODE4, NODE6 = "10.20.1.1", "fd00:20:1::1"
EP4, EP6 = "10.244.1.2", "fd00:10:244:1::2"
CONFIG = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
syncPeriod: 4s
"""
# answers "ep PEER" on both families (IPv6 sockets that also take IPv4), TCP 8080 and UDP echo 5353
SERVER = """
import socket, threading
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", 5353))
def echo():
    while True:
        data, a = u.recvfrom(2048)
        u.sendto(b"ep", a)
threading.Thread(target=echo, daemon=True).start()
s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::", 8080)); s.listen(16); print("ready", flush=True)
while True:
    c, a = s.accept()
    c.settimeout(2)
    try: c.recv(1024)
    except OSError: pass
    body = ("ep " + a[0].removeprefix("::ffff:") + "\\n").encode()
    c.sendall(b"HTTP/1.0 200 OK\\r\\nContent-Length: %d\\r\\n\\r\\n" % len(body) + body); c.close()
"""


DNS4, DNS6 = "10.96.0.53", "fd00:10:96::53"
# one UDP datagram from a fixed source port (the same conntrack flow each time): "ok", "refused" or "timeout"
UDP_CLIENT = """
import socket, sys
host, sport = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
s.connect((host, 53))
s.settimeout(2)
s.send(b"ping")
try:
    print("ok" if s.recv(100) == b"ep" else "bad")
except ConnectionRefusedError:
    print("refused")
except TimeoutError:
    print("timeout")
"""


def _service(name: str, v4: str, v6: str, port: int, target: int, proto: str, node_port: int = 0) -> dict[str, Any]:
    p: dict[str, Any] = {"name": "p", "port": port, "targetPort": target, "protocol": proto}
    if node_port:
        p["nodePort"] = node_port
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "NodePort" if node_port else "ClusterIP", "ipFamilyPolicy": "RequireDualStack",
                     "ipFamilies": ["IPv4", "IPv6"], "clusterIP": v4, "clusterIPs": [v4, v6], "ports": [p]}}


def _slice(svc: str, family: str, ip: str, port: int, proto: str) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{svc}-{family.lower()}", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": svc}},
            "addressType": family, "ports": [{"name": "p", "port": port, "protocol": proto}],
            "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": NODE}]}


OBJECTS = [
    _service("web", CIP4, CIP6, 80, 8080, "TCP", 30080),
    _slice("web", "IPv4", EP4, 8080, "TCP"),
    _slice("web", "IPv6", EP6, 8080, "TCP"),
    _service("dns", DNS4, DNS6, 53, 5353, "UDP"),
    _slice("dns", "IPv4", EP4, 5353, "UDP"),
    _slice("dns", "IPv6", EP6, 5353, "UDP"),
]


class DualEnv(StoreObjects):
    def __init__(self, mode: str, tmp: Path) -> None:
        tag = secrets.token_hex(2)
        self.mode, self.tmp = mode, tmp
        self.node, self.client, self.ep = f"pn-px-dn-{tag}", f"pn-px-dc-{tag}", f"pn-px-de-{tag}"
        self.store_url = f"sqlite://{tmp / 'state.db'}"
        self.procs: list[subprocess.Popen[str]] = []
        self.log = tmp / "proxy.log"
        self._store: Any = None

    def build(self) -> None:
        from podnet.net import netns

        for ns in (self.node, self.client, self.ep):
            netns.create(ns)
        n, c, e = self.node, self.client, self.ep
        sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(n, "sysctl", "-qw", "net.ipv6.conf.all.forwarding=1")
        sh(n, "ip", "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", c)
        for ns, dev, a4, a6, gw4, gw6 in ((n, "c0", NODE4, NODE6, None, None),
                                          (c, "eth0", "10.20.1.2", "fd00:20:1::2", NODE4, NODE6)):
            sh(ns, "ip", "addr", "add", f"{a4}/24", "dev", dev)
            sh(ns, "ip", "-6", "addr", "add", f"{a6}/64", "dev", dev, "nodad")
            sh(ns, "ip", "link", "set", dev, "up")
            if gw4 and gw6:
                sh(ns, "ip", "route", "add", "default", "via", gw4)
                sh(ns, "ip", "-6", "route", "add", "default", "via", gw6)
        # an uplink to nowhere for the node's default routes: traffic to a ClusterIP without endpoints is
        # routed and meets the filter table's REJECT (as on a real node)
        sh(n, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
        sh(n, "ip", "addr", "add", "10.20.9.1/24", "dev", "up0")
        sh(n, "ip", "-6", "addr", "add", "fd00:20:9::1/64", "dev", "up0", "nodad")
        for dev in ("up0", "up1"):
            sh(n, "ip", "link", "set", dev, "up")
        sh(n, "ip", "route", "add", "default", "via", "10.20.9.2", "dev", "up0")
        sh(n, "ip", "-6", "route", "add", "default", "via", "fd00:20:9::2", "dev", "up0")
        sh(n, "ip", "link", "add", "cni0", "type", "bridge")
        sh(n, "ip", "addr", "add", "10.244.1.1/24", "dev", "cni0")
        sh(n, "ip", "-6", "addr", "add", "fd00:10:244:1::1/64", "dev", "cni0", "nodad")
        sh(n, "ip", "link", "set", "cni0", "up")
        sh(n, "ip", "link", "add", "veth0", "type", "veth", "peer", "name", "eth0", "netns", e)
        sh(n, "ip", "link", "set", "veth0", "master", "cni0", "up")
        sh(e, "ip", "addr", "add", f"{EP4}/24", "dev", "eth0")
        sh(e, "ip", "-6", "addr", "add", f"{EP6}/64", "dev", "eth0", "nodad")
        sh(e, "ip", "link", "set", "eth0", "up")
        sh(e, "ip", "route", "add", "default", "via", "10.244.1.1")
        sh(e, "ip", "-6", "route", "add", "default", "via", "fd00:10:244:1::1")
        p = self.spawn(e, [sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def spawn(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], text=True, **kw)
        self.procs.append(p)
        return p

    def teardown(self) -> None:
        from podnet.net import netns

        for p in reversed(self.procs):
            if p.poll() is None:
                os.kill(p.pid, signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    os.kill(p.pid, signal.SIGKILL)
                    p.wait(5)
        if self._store is not None:
            self._store.close()
        for ns in (self.ep, self.client, self.node):
            try:
                netns.remove(ns)
            except OSError:
                pass

    def start_proxy(self) -> None:
        cfg = self.tmp / "proxy.yaml"
        cfg.write_text(CONFIG)
        argv = [sys.executable, "-m", "podnet.cli.main", "--store", self.store_url, "proxy", "run", "--node", NODE,
                "--mode", self.mode, "--config", str(cfg)]
        out = self.log.open("w")
        self.spawn(self.node, argv, stdout=out, stderr=out)
        for fam in ("IPv4", "IPv6"):
            self.wait_log(rf"{fam} full sync of 2 service ports")

    def wait_log(self, pattern: str, *, after: int = 0, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if re.search(pattern, self.log.read_text()[after:]):
                return
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the proxy log within {timeout}s:\n{self.log.read_text()[-3000:]}")

    def connect(self, host: str, port: int) -> dict[str, Any]:
        out = sh(self.client, sys.executable, PROBE, "connect", host, str(port), "--timeout", "5", timeout=30)
        res: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
        return res

    def udp(self, host: str, sport: int) -> str:
        return sh(self.client, sys.executable, "-c", UDP_CLIENT, host, str(sport), timeout=30).strip()

    def rules(self, family: str) -> str:
        if self.mode == "iptables":
            return sh(self.node, "iptables-save" if family == "IPv4" else "ip6tables-save")
        return sh(self.node, "nft", "list", "table", "ip" if family == "IPv4" else "ip6", "podnet")


@pytest.fixture(scope="module", params=["iptables", "nftables"])
def denv(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[DualEnv]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    e = DualEnv(request.param, tmp_path_factory.mktemp(f"dual-{request.param}"))
    try:
        e.build()
        for obj in OBJECTS:
            e.put(obj)
        e.start_proxy()
        yield e
    finally:
        e.teardown()


def test_both_cluster_ips_and_both_node_ports_reach_the_endpoint(denv: DualEnv) -> None:
    for host, port in ((CIP4, 80), (CIP6, 80), (NODE4, 30080), (NODE6, 30080)):
        res = denv.connect(host, port)
        assert res["result"] == "ok" and res["body"].startswith("ep "), (host, res)
    # each family's endpoint address is in its own family's rules only
    v4, v6 = denv.rules("IPv4"), denv.rules("IPv6")
    assert EP4 in v4 and EP6 not in v4 and CIP6 not in v4
    assert EP6 in v6 and EP4 not in v6 and CIP4 not in v6


def test_udp_flows_of_both_families_reach_the_endpoint(denv: DualEnv) -> None:
    # these flows stay in conntrack, DNATed to the endpoint, until the cleanup after its removal deletes them
    assert denv.udp(DNS4, 40123) == "ok"
    assert denv.udp(DNS6, 40123) == "ok"


def test_endpoints_removed_from_both_families(denv: DualEnv) -> None:
    mark = len(denv.log.read_text())
    for name in ("web-ipv4", "web-ipv6", "dns-ipv4", "dns-ipv6"):
        denv.delete("EndpointSlice", name)
    # each family's cleaner deletes its own family's stale UDP entries (conntrack -f ipv6 for IPv6)
    for ip in (DNS4, DNS6):
        denv.wait_log(rf"deleted stale UDP conntrack entries: {re.escape(ip)}:53 via", after=mark)
    # both deletions may land in one sync per family or in two: wait until both families' rules show them
    deadline = time.monotonic() + 20
    while (EP4 in denv.rules("IPv4") or EP6 in denv.rules("IPv6")) and time.monotonic() < deadline:
        time.sleep(0.1)
    v4, v6 = denv.rules("IPv4"), denv.rules("IPv6")
    assert EP4 not in v4 and EP6 not in v6, (v4, v6)
    for host, port in ((CIP4, 80), (CIP6, 80), (NODE4, 30080), (NODE6, 30080)):
        res = denv.connect(host, port)
        assert res["result"] == "refused", (host, res)
    # the same UDP flows again: their entries went, so they meet the REJECT instead of the old endpoint
    assert denv.udp(DNS4, 40123) == "refused"
    assert denv.udp(DNS6, 40123) == "refused"
