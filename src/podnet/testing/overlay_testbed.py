"""A static overlay testbed in namespaces: an underlay bridge, N nodes, one pod behind a bridge per node.

Shared by the backend integration tests and benchmarks/overlay_throughput.py so both measure the same
topology. Nothing touches the root namespace:

  ns UL:   bridge br0 <- veth u<i> ... (no address: a plain L2 switch, no uplink)
  ns N<i>: eth0 192.168.77.<i>/24 (underlay), cni0 <subnet_i>.1/24, ip_forward=1, backend runner
  ns P<i>: eth0 <subnet_i>.2/24, default via <subnet_i>.1 (veth peer in N<i> enslaved to cni0)

Backends run in `runner` processes inside the node namespaces (exactly as the daemon will), with
hand-made leases: subnet 10.244.<i>.0/24, PublicIP 192.168.77.<i>.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from podnet.net import netns

NETWORK = ipaddress.IPv4Network("10.244.0.0/16")
UNDERLAY = "192.168.77.{}"


@dataclass
class Node:
    i: int
    ns: str
    pod_ns: str
    subnet: ipaddress.IPv4Network
    public_ip: ipaddress.IPv4Address
    proc: subprocess.Popen[str] | None = None
    log_path: str = ""
    lease: dict[str, Any] = field(default_factory=dict)
    mtu: int = 0

    @property
    def pod_ip(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 2

    def call(self, **req: Any) -> dict[str, Any]:
        """One request to this node's backend runner; raises on a failed answer."""
        assert self.proc is not None and self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"runner in {self.ns} exited: {self.log()}")
        reply = json.loads(line)
        if not reply.get("ok"):
            raise RuntimeError(f"runner in {self.ns}: {req.get('op')}: {reply.get('error')}")
        return reply

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()
        except OSError:
            return ""


def _default_make_ns(tag: str) -> str:
    name = f"pn-{tag}-{secrets.token_hex(3)}"
    netns.create(name)
    return name


def _sysctl(ns: str, key: str, value: str) -> None:
    netns.run(ns, ["sysctl", "-q", "-w", f"{key}={value}"])


class Testbed:
    __test__ = False  # not a pytest test class despite the name
    def __init__(self, nodes: int = 3, *, make_ns: Callable[[str], str] | None = None,
                 underlay_mtu: int = 1500) -> None:
        self._own_ns = make_ns is None
        self._make_ns = make_ns or _default_make_ns
        self._made: list[str] = []
        self.underlay_mtu = underlay_mtu
        self.count = nodes
        self.ul = ""
        self.nodes: list[Node] = []
        self.kind = ""

    def _ns(self, tag: str) -> str:
        name = self._make_ns(tag)
        self._made.append(name)
        return name

    def build(self) -> Testbed:
        self.ul = self._ns("ovb-ul")
        with netns.ipr(self.ul) as ul:
            ul.link("add", ifname="br0", kind="bridge")
            br = ul.link_lookup(ifname="br0")[0]
            ul.link("set", index=br, state="up", mtu=self.underlay_mtu)
        for i in range(1, self.count + 1):
            node = Node(i, self._ns(f"ovb-n{i}"), self._ns(f"ovb-p{i}"),
                        ipaddress.IPv4Network(f"10.244.{i}.0/24"), ipaddress.IPv4Address(UNDERLAY.format(i)))
            self._wire_node(node)
            self.nodes.append(node)
        return self

    def _wire_node(self, node: Node) -> None:
        with netns.ipr(self.ul) as ul:
            ul.link("add", ifname=f"u{node.i}", kind="veth", peer={"ifname": f"e{node.i}", "net_ns_fd": node.ns})
            idx = ul.link_lookup(ifname=f"u{node.i}")[0]
            ul.link("set", index=idx, master=ul.link_lookup(ifname="br0")[0], mtu=self.underlay_mtu, state="up")
        with netns.ipr(node.ns) as ip:
            idx = ip.link_lookup(ifname=f"e{node.i}")[0]
            ip.link("set", index=idx, ifname="eth0", mtu=self.underlay_mtu)
            ip.addr("add", index=idx, address=str(node.public_ip), prefixlen=24)
            ip.link("set", index=idx, state="up")
            ip.link("add", ifname="cni0", kind="bridge")
            br = ip.link_lookup(ifname="cni0")[0]
            ip.addr("add", index=br, address=str(node.subnet.network_address + 1), prefixlen=node.subnet.prefixlen)
            ip.link("set", index=br, state="up")
            ip.link("add", ifname="veth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": node.pod_ns})
            v = ip.link_lookup(ifname="veth0")[0]
            ip.link("set", index=v, master=br, state="up")
        with netns.ipr(node.pod_ns) as ip:
            idx = ip.link_lookup(ifname="eth0")[0]
            ip.addr("add", index=idx, address=str(node.pod_ip), prefixlen=node.subnet.prefixlen)
            ip.link("set", index=idx, state="up")
            ip.route("add", dst="0.0.0.0/0", gateway=str(node.subnet.network_address + 1))
        _sysctl(node.ns, "net.ipv4.ip_forward", "1")

    def cpu_per_node(self) -> dict[int, int]:
        """Model each node as its own machine: its underlay receive work runs on one CPU of its own.

        A veth delivers on the sending CPU, so by default the receiving node's whole stack (and, for a
        pod, its forwarding hop, bridge and pod veth) runs on the sender's CPU, stacked on the sender's
        own work; a NIC delivers on the receiving machine's CPUs instead. RPS on each node's underlay
        eth0 sends node i's received frames to CPU (i-1) mod ncpu; processes meant to run "on" node i
        are pinned there by the caller. Returns {node index: cpu}. Affects only the underlay link, so
        node-to-node and pod-to-pod traffic get the same treatment.
        """
        ncpu = os.cpu_count() or 1
        cpus = {}
        for node in self.nodes:
            cpu = (node.i - 1) % ncpu
            netns.run(node.ns, ["sh", "-c", f"for q in /sys/class/net/eth0/queues/rx-*; do "
                                            f"echo {1 << cpu:x} > $q/rps_cpus; done"])
            cpus[node.i] = cpu
        return cpus

    def set_pod_mtu(self, mtu: int) -> None:
        """What the CNI plugin would do with FLANNEL_MTU: both ends of the pod veth."""
        for node in self.nodes:
            for ns, name in ((node.ns, "veth0"), (node.pod_ns, "eth0")):
                with netns.ipr(ns) as ip:
                    ip.link("set", index=ip.link_lookup(ifname=name)[0], mtu=mtu)

    # -- backends --------------------------------------------------------------------------------

    def start(self, kind: str, options: dict[str, Any] | None = None, *, add_peers: bool = True) -> None:
        """Start a runner with backend `kind` on every node, configure it with its lease, add peers."""
        self.kind = kind
        for node in self.nodes:
            fd, node.log_path = tempfile.mkstemp(prefix=f"pn-ovb-runner-{node.i}-", suffix=".log")
            os.close(fd)
            with open(node.log_path, "w") as logf:
                node.proc = subprocess.Popen(
                    netns.exec_argv(node.ns, [sys.executable, "-m", "podnet.testing.backend_runner"]),
                    stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=logf, text=True,
                )
            reply = node.call(op="init", type=kind, iface="eth0", options=options or {})
            node.mtu = reply["mtu"]
            node.lease = {"subnet": str(node.subnet), "public_ip": str(node.public_ip),
                          "backend_type": kind, "backend_data": reply["backend_data"]}
            node.call(op="configure", lease=node.lease, network=str(NETWORK))
        self.set_pod_mtu(self.nodes[0].mtu)
        if add_peers:
            for node in self.nodes:
                for peer in self.nodes:
                    if peer is not node:
                        node.call(op="add", lease=peer.lease)

    def stop(self) -> None:
        for node in self.nodes:
            if node.proc is None:
                continue
            try:
                node.call(op="close")
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                node.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                node.proc.kill()
                node.proc.wait()
            node.proc = None
            if node.log_path:
                try:
                    os.unlink(node.log_path)
                except OSError:
                    pass

    def close(self) -> None:
        """Stop runners; delete the namespaces this testbed created itself (else the factory does)."""
        self.stop()
        if self._own_ns:
            for name in reversed(self._made):
                netns.remove(name)
