"""A small cluster in namespaces for the proxy daemon, shared by the scenarios of one module.

    client (10.10.1.2) --veth-- node (10.10.1.1; cni0 10.244.1.1/24) --cni0 bridge-- ep1 10.244.1.2
                                                                                  -- ep2 10.244.1.3
The node namespace runs `podnet proxy run` (a subprocess via ip netns exec, sqlite store file, stopped by
pid). ep1/ep2 run netprobe servers (HTTP-ish TCP 8080 and UDP echo 5353). The client reaches services
through the node, which routes. The fixture is parametrised over the proxy mode so the same scenarios
run for every backend.
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
from pathlib import Path
from typing import Any

PROBE = str(Path(__file__).with_name("netprobe.py"))
NODE = "node1"
PROXY_MODES = ["iptables", "nftables"]

FOREIGN_RULES = """*nat
:PN-FOREIGN-NAT - [0:0]
-A PN-FOREIGN-NAT -d 198.51.100.7/32 -j RETURN
-A PREROUTING -j PN-FOREIGN-NAT
COMMIT
*filter
:PN-FOREIGN-FILTER - [0:0]
-A PN-FOREIGN-FILTER -s 198.51.100.8/32 -j DROP
-A INPUT -j PN-FOREIGN-FILTER
COMMIT
"""

CONFIG = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clusterCIDR: 10.244.0.0/16
syncPeriod: 4s
"""


def sh(ns: str, *argv: str, input: str | None = None, check: bool = True, timeout: float = 30) -> str:
    p = subprocess.run(["ip", "netns", "exec", ns, *argv], input=input, capture_output=True, text=True,
                       timeout=timeout)
    if check and p.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} in {ns}: exit {p.returncode}: {p.stderr.strip()}")
    return p.stdout


def service(name: str, cluster_ip: str, port: int, target: int, proto: str = "TCP", *, node_port: int = 0,
            affinity: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "type": "NodePort" if node_port else "ClusterIP",
        "clusterIP": cluster_ip,
        "clusterIPs": [cluster_ip],
        "ports": [{"name": "p", "port": port, "targetPort": target, "protocol": proto}],
    }
    if node_port:
        spec["ports"][0]["nodePort"] = node_port
    if affinity:
        spec["sessionAffinity"] = "ClientIP"
        spec["sessionAffinityConfig"] = {"clientIP": {"timeoutSeconds": 10800}}
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"}, "spec": spec}


def endpoint_slice(name: str, svc: str, port: int, ips: list[str], proto: str = "TCP") -> dict[str, Any]:
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "default", "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "ports": [{"name": "p", "port": port, "protocol": proto}],
        "endpoints": [{"addresses": [ip], "conditions": {"ready": True}, "nodeName": NODE} for ip in ips],
    }


EP1, EP2 = "10.244.1.2", "10.244.1.3"
NODE_IP, CLIENT_IP, NODE_POD_GW = "10.10.1.1", "10.10.1.2", "10.244.1.1"
OBJECTS = [
    service("web", "10.96.0.10", 80, 8080, node_port=30080),
    endpoint_slice("web-1", "web", 8080, [EP1, EP2]),
    service("dns", "10.96.0.53", 53, 5353, "UDP"),
    endpoint_slice("dns-1", "dns", 5353, [EP1, EP2], "UDP"),
    service("sticky", "10.96.0.20", 80, 8080, affinity=True),
    endpoint_slice("sticky-1", "sticky", 8080, [EP1, EP2]),
    service("empty", "10.96.0.30", 80, 8080),
    service("self", "10.96.0.40", 80, 8080),
    endpoint_slice("self-1", "self", 8080, [EP1]),
]


class StoreObjects:
    """The objects of a test env, written straight into its store (as the API server would store them)."""

    store_url: str
    _store: Any = None

    @property
    def store(self) -> Any:
        if self._store is None:
            from podnet.store import open_store

            self._store = open_store(self.store_url)
        return self._store

    def put(self, obj: dict[str, Any]) -> None:
        from podnet.store import keys

        meta = obj["metadata"]
        self.store.put(keys.resource(obj["kind"], meta["namespace"], meta["name"]), json.dumps(obj).encode())

    def delete(self, kind: str, name: str) -> None:
        from podnet.store import keys

        self.store.delete(keys.resource(kind, "default", name))


class Env(StoreObjects):
    def __init__(self, mode: str, tmp: Path) -> None:
        self.mode = mode
        self.tmp = tmp
        tag = secrets.token_hex(2)
        self.node, self.client = f"pn-px-node-{tag}", f"pn-px-cl-{tag}"
        self.ep1, self.ep2 = f"pn-px-ep1-{tag}", f"pn-px-ep2-{tag}"
        self.namespaces = [self.node, self.client, self.ep1, self.ep2]
        self.db = tmp / "state.db"
        self.store_url = f"sqlite://{self.db}"
        self.procs: list[subprocess.Popen[str]] = []
        self.proxy: subprocess.Popen[str] | None = None
        self.proxy_log: Path | None = None
        self._store: Any = None

    # ---- topology ------------------------------------------------------------------------------
    def build(self) -> None:
        from podnet.net import netns

        for ns in self.namespaces:
            netns.create(ns)
        n = self.node
        sh(n, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(n, "ip", "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", self.client)
        sh(n, "ip", "addr", "add", f"{NODE_IP}/24", "dev", "c0")
        sh(n, "ip", "link", "set", "c0", "up")
        sh(self.client, "ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "eth0")
        sh(self.client, "ip", "link", "set", "eth0", "up")
        sh(self.client, "ip", "route", "add", "default", "via", NODE_IP)
        # An uplink that leads nowhere, for the node's default route (real nodes have one): traffic to a
        # ClusterIP without endpoints is then routed, reaches FORWARD and its REJECT, instead of "no route".
        # (Routing it back out c0 would make the node send a redirect first, which uses up the per-host ICMP
        # budget, and the REJECT's port-unreachable would be rate-limited away.)
        sh(n, "ip", "link", "add", "up0", "type", "veth", "peer", "name", "up1")
        sh(n, "ip", "addr", "add", "10.10.9.1/24", "dev", "up0")
        sh(n, "ip", "link", "set", "up0", "up")
        sh(n, "ip", "link", "set", "up1", "up")
        sh(n, "ip", "route", "add", "default", "via", "10.10.9.2", "dev", "up0")
        sh(n, "ip", "link", "add", "cni0", "type", "bridge")
        sh(n, "ip", "addr", "add", f"{NODE_POD_GW}/24", "dev", "cni0")
        sh(n, "ip", "link", "set", "cni0", "up")
        for i, (ns, ip) in enumerate(((self.ep1, EP1), (self.ep2, EP2))):
            host_if = f"veth{i}"
            sh(n, "ip", "link", "add", host_if, "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(n, "ip", "link", "set", host_if, "master", "cni0", "up")
            # as the CNI bridge plugin does with hairpinMode: true (flannel's default). With br_netfilter the
            # DNAT of a pod's packet to itself happens on the bridge and must go back out the port it came in.
            sh(n, "ip", "link", "set", host_if, "type", "bridge_slave", "hairpin", "on")
            sh(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh(ns, "ip", "link", "set", "eth0", "up")
            sh(ns, "ip", "route", "add", "default", "via", NODE_POD_GW)
        sh(n, "iptables-restore", "-w", "5", "--noflush", input=FOREIGN_RULES)
        for ns, name in ((self.ep1, "ep1"), (self.ep2, "ep2")):
            p = self.spawn(ns, [sys.executable, PROBE, "serve", name])
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"

    def spawn(self, ns: str, argv: list[str], **kw: Any) -> subprocess.Popen[str]:
        p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=subprocess.PIPE, text=True, **kw)
        self.procs.append(p)
        return p

    def teardown(self) -> None:
        from podnet.net import netns

        self.stop_proxy()
        for p in self.procs:
            if p.poll() is None:
                os.kill(p.pid, signal.SIGKILL)
                p.wait(5)
        if self._store is not None:
            self._store.close()
        for ns in reversed(self.namespaces):
            try:
                netns.remove(ns)
            except OSError:
                pass

    # ---- proxy -------------------------------------------------------------------------------------
    def start_proxy(self) -> None:
        cfg = self.tmp / "proxy.yaml"
        cfg.write_text(CONFIG)
        self.proxy_log = self.tmp / f"proxy-{len(self.procs)}.log"
        argv = [sys.executable, "-m", "podnet.cli.main", "--store", self.store_url, "proxy", "run", "--node", NODE,
                "--mode", self.mode, "--config", str(cfg)]
        log = self.proxy_log.open("w")
        self.proxy = subprocess.Popen(["ip", "netns", "exec", self.node, *argv], stdout=log, stderr=log, text=True)
        self.wait_log(r"full sync of \d+ service ports")

    def stop_proxy(self, sig: int = signal.SIGTERM) -> None:
        p, self.proxy = self.proxy, None
        if p is None or p.poll() is not None:
            return
        os.kill(p.pid, sig)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)

    def log_text(self) -> str:
        return self.proxy_log.read_text() if self.proxy_log else ""

    def wait_log(self, pattern: str, *, after: int = 0, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            text = self.log_text()[after:]
            m = re.search(pattern, text)
            if m:
                return m.group(0)
            if self.proxy is not None and self.proxy.poll() is not None:
                raise AssertionError(f"proxy exited ({self.proxy.returncode}):\n{self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"no {pattern!r} in the proxy log within {timeout}s:\n{self.log_text()[-3000:]}")

    def synced_after(self, mark: int, kind: str = r"(full|partial)") -> None:
        self.wait_log(kind + r" sync of \d+ service ports", after=mark)

    # ---- traffic -----------------------------------------------------------------------------------
    def probe(self, ns: str, *args: str, timeout: float = 60) -> Any:
        return json.loads(sh(ns, sys.executable, PROBE, *args, timeout=timeout).strip().splitlines()[-1])

    def rules(self) -> str:
        """The node's proxy rules as text, counters and timestamps removed (for equality checks)."""
        if self.mode == "iptables":
            text = sh(self.node, "iptables-save")
        else:
            text = sh(self.node, "nft", "list", "ruleset") + sh(self.node, "iptables-save")
        lines = [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in text.splitlines() if not line.startswith("#")]
        # affinity entries (nftables dynamic sets) count down their timeout: keep the entry, drop the timer
        lines = [re.sub(r" expires \S+", "", line) for line in lines]
        return "\n".join(lines)
