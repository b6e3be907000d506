"""`podnet overlay run` as a real process inside node namespaces, on the sqlite store.

Topology: the backends' testbed (underlay bridge in its own namespace, 3 nodes, a pod behind cni0 on each),
but the subnets come from the daemons' leases, not from hand-made ones.
"""

from __future__ import annotations

import ipaddress
import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from podnet.net import netns
from podnet.overlay import masq
from podnet.store import keys
from podnet.store.sqlite import SqliteStore
from podnet.testing.overlay_testbed import Testbed

pytestmark = pytest.mark.integration

def podnet_argv(store_url: str, *args: str) -> list[str]:
    return [sys.executable, "-m", "podnet.cli.main", "--store", store_url, *args]


def wait_for(cond: Callable[[], object], timeout: float, what: str) -> object:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


class Daemon:
    """One `podnet overlay run` inside a node namespace; stderr goes to a file the test can show."""

    def __init__(self, ns: str, node: str, store_url: str, workdir: Path, extra: list[str]) -> None:
        self.ns = ns
        self.node = node
        self.subnet_file = workdir / node / "subnet.env"
        self.log_path = workdir / f"{node}.log"
        self.store_url = store_url
        self.extra = extra
        self.iface = "eth0"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Daemon:
        argv = podnet_argv(self.store_url, "overlay", "run", "--node", self.node, "--iface", self.iface,
                           "--subnet-file", str(self.subnet_file), *self.extra)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(netns.exec_argv(self.ns, argv), stdout=log, stderr=log)
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def env(self) -> dict[str, str]:
        if not self.subnet_file.exists():
            return {}
        return dict(line.split("=", 1) for line in self.subnet_file.read_text().splitlines())

    def wait_ready(self, timeout: float = 20) -> dict[str, str]:
        def ready() -> dict[str, str]:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise AssertionError(f"{self.node} exited {self.proc.returncode}:\n{self.log()}")
            return self.env() if "overlay running" in self.log() else {}
        return wait_for(ready, timeout, f"{self.node} ready")  # type: ignore[return-value]

    def terminate(self, timeout: float = 10) -> int:
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise

    def subnet(self) -> ipaddress.IPv4Network:
        return ipaddress.ip_network(self.env()["FLANNEL_SUBNET"], strict=False)  # type: ignore[return-value]


def ip_json(ns: str, *args: str) -> list[dict[str, object]]:
    out = netns.run(ns, ["ip", "-j", *args]).stdout
    return json.loads(out) if out.strip() else []


def routes(ns: str) -> set[str]:
    return {f"{r['dst']} via {r.get('gateway')} dev {r['dev']}" for r in ip_json(ns, "route", "show")
            if r.get("gateway")}


def wire_state(ns: str) -> tuple[str, list[object], str]:
    """What a daemon programs on a node: all routes, permanent neighbours, the FDB."""
    neigh = [n for n in ip_json(ns, "neigh", "show") if "PERMANENT" in n.get("state", [])]  # type: ignore[operator]
    return (netns.run(ns, ["ip", "route", "show"]).stdout, neigh,
            "".join(line for line in netns.run(ns, ["bridge", "fdb", "show"]).stdout.splitlines(True)
                    if "permanent" in line))


def flannel_rules(ns: str) -> list[str]:
    return [line for t in ("nat", "filter") for line in netns.run(ns, ["iptables", "-t", t, "-S"]).stdout.splitlines()
            if "flanneld" in line]


def masq_lines(subnet: ipaddress.IPv4Network) -> list[str]:
    net = ipaddress.IPv4Network("10.244.0.0/16")
    return [masq.MASQ_JUMP, *masq.masq_rules(net, subnet), masq.FWD_JUMP, *masq.forward_rules(net)]


def ping(ns: str, ip: object) -> bool:
    return netns.run(ns, ["ping", "-c", "1", "-W", "1", str(ip)], check=False).returncode == 0


@pytest.fixture
def bed(netns_factory) -> Iterator[Testbed]:  # type: ignore[no-untyped-def]
    tb = Testbed(3, make_ns=lambda tag: netns_factory(tag.replace("ovb", "ovl"))).build()
    try:
        yield tb
    finally:
        tb.close()


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"sqlite://{tmp_path}/state.db"


def set_config(store_url: str, text: bytes) -> None:
    with SqliteStore(store_url) as store:
        store.put(keys.NETWORK_CONFIG, text)  # raw, as etcdctl would: the daemon must validate it


def start_daemons(bed: Testbed, store_url: str, tmp_path: Path, extra: list[str]) -> list[Daemon]:
    daemons = []
    for node in bed.nodes:
        d = Daemon(node.ns, f"n{node.i}", store_url, tmp_path, extra)
        # cni0 already holds 10.244.<i>.1/24: the old subnet.env makes each daemon ask for that subnet.
        d.subnet_file.parent.mkdir(parents=True, exist_ok=True)
        d.subnet_file.write_text(f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={node.subnet.network_address + 1}/24\n"
                                 "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n")
        daemons.append(d.start())
    return daemons


# Per backend: FLANNEL_MTU on a 1500 underlay, and the route a node holds for peer i (None: the udp
# backend keeps its per-peer table in userspace behind one route for the whole network).
BACKENDS = {
    "vxlan": (1450, lambda i: f"10.244.{i}.0/24 via 10.244.{i}.0 dev flannel.1"),
    "host-gw": (1500, lambda i: f"10.244.{i}.0/24 via 192.168.77.{i} dev eth0"),
    "udp": (1472, None),
}


def peer_reachable(bed: Testbed, src: int, dst: int, kind: str) -> bool:
    """Does node src hold the kernel route for node dst (vxlan, host-gw) / can its pod reach dst's (udp)?"""
    route = BACKENDS[kind][1]
    if route is None:
        return ping(bed.nodes[src - 1].pod_ns, bed.nodes[dst - 1].pod_ip)
    return route(dst) in routes(bed.nodes[src - 1].ns)


@pytest.mark.parametrize("kind", list(BACKENDS))
def test_three_nodes_lease_lifecycle(bed: Testbed, store_url: str, tmp_path: Path, kind: str) -> None:
    mtu = BACKENDS[kind][0]
    set_config(store_url, b'{"Network": "10.244.0.0/16", "Backend": {"Type": "%s"}}' % kind.encode())
    daemons = start_daemons(bed, store_url, tmp_path, ["--ip-masq", "--lease-ttl", "4", "--renew-margin", "2",
                                                       "--iptables-resync", "1"])
    try:
        for d in daemons:
            d.wait_ready()
        for node in bed.nodes:
            assert daemons[node.i - 1].subnet_file.read_text() == (
                f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.{node.i}.1/24\nFLANNEL_MTU={mtu}\n"
                "FLANNEL_IPMASQ=true\n")
        bed.set_pod_mtu(mtu)

        # every pod reaches the pods of the other nodes, through what the leases produced
        for src in bed.nodes:
            for dst in bed.nodes:
                if dst is not src:
                    wait_for(lambda s=src, d=dst: ping(s.pod_ns, d.pod_ip), 10, f"ping pod{src.i}->pod{dst.i}")
                    assert peer_reachable(bed, src.i, dst.i, kind)

        # --ip-masq rules for node 1's lease; a deleted rule comes back within the 1 s resync
        n1 = bed.nodes[0].ns
        want = masq_lines(ipaddress.IPv4Network("10.244.1.0/24"))
        assert flannel_rules(n1) == want
        netns.run(n1, ["iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "2"])
        assert flannel_rules(n1) != want
        wait_for(lambda: flannel_rules(n1) == want, 3, "rules restored")

        with SqliteStore(store_url) as store:
            kvs = {kv.key: kv for kv in store.list(keys.SUBNETS_PREFIX).items}
            assert sorted(kvs) == [keys.subnet_lease(f"10.244.{i}.0/24") for i in (1, 2, 3)]
            v2 = json.loads(kvs[keys.subnet_lease("10.244.2.0/24")].value)
            assert v2["PublicIP"] == "192.168.77.2" and v2["BackendType"] == kind
            if kind == "vxlan":
                mac2 = ip_json(bed.nodes[1].ns, "link", "show", "flannel.1")[0]["address"]
                assert v2["BackendData"] == {"VNI": 1, "VtepMAC": mac2}

            # leases outlive several 4 s TTLs: the daemons renew them
            time.sleep(5)
            assert len(store.list(keys.SUBNETS_PREFIX).items) == 3

            # restart node 2: same subnet, no write to its lease, peers' kernel state untouched
            rev2 = store.get(keys.subnet_lease("10.244.2.0/24")).mod_revision  # type: ignore[union-attr]
            before = wire_state(bed.nodes[0].ns)
            links2 = ip_json(bed.nodes[1].ns, "link", "show")
            assert daemons[1].terminate() == 0
            assert "lease 10.244.2.0/24 kept" in daemons[1].log()
            daemons[1].start()
            daemons[1].wait_ready()
            assert daemons[1].subnet() == ipaddress.ip_network("10.244.2.0/24")
            assert store.get(keys.subnet_lease("10.244.2.0/24")).mod_revision == rev2  # type: ignore[union-attr]
            # the same devices (same index: reused, not recreated) with the same MACs
            assert [(x["ifname"], x["ifindex"], x.get("address")) for x in ip_json(bed.nodes[1].ns, "link", "show")] \
                == [(x["ifname"], x["ifindex"], x.get("address")) for x in links2]
            assert wire_state(bed.nodes[0].ns) == before
            wait_for(lambda: ping(bed.nodes[0].pod_ns, bed.nodes[1].pod_ip), 5, "ping pod1->pod2 after restart")

            # revoke node 3's lease: its daemon exits with a clear message; peers drop it within 1 s
            out = subprocess.run(podnet_argv(store_url, "overlay", "revoke", "10.244.3.0/24"),
                                 capture_output=True, text=True, check=True)
            assert "revoked" in out.stdout
            t0 = time.monotonic()
            wait_for(lambda: not peer_reachable(bed, 1, 3, kind), 3, "n1 drops n3")
            assert time.monotonic() - t0 < 1.5
            assert daemons[2].proc is not None and daemons[2].proc.wait(timeout=5) == 1
            assert "lease 10.244.3.0/24 has been revoked" in daemons[2].log()
            assert "Shutting down daemon" in daemons[2].log()

            # stop node 1 for good: its 4 s lease expires and node 2 drops everything it had for it
            assert daemons[0].terminate() == 0
            wait_for(lambda: store.get(keys.subnet_lease("10.244.1.0/24")) is None, 8, "n1's lease expires")
            wait_for(lambda: not peer_reachable(bed, 2, 1, kind), 2, "n2 drops n1")
            neigh = ip_json(bed.nodes[1].ns, "neigh", "show")
            assert not any(n.get("dst") == "10.244.1.0" for n in neigh)
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.terminate()


@pytest.mark.parametrize(
    "conf,field",
    [
        (b'{"Network": "10.0.0.0/29", "Backend": {"Type": "vxlan"}}', "Network"),
        (b'{"Network": "10.244.0.0/16", "SubnetLen": 31, "Backend": {"Type": "vxlan"}}', "SubnetLen"),
        (b'{"Network": "10.244.0.0/16", "SubnetMin": "10.9.0.0", "Backend": {"Type": "vxlan"}}', "SubnetMin"),
        (b'{"Network": "10.244.0.0/16", "Backend": {"Type": "ipip"}}', "Backend.Type"),
        (b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}, "EnableNFTables": true}', "EnableNFTables"),
    ],
)
def test_bad_netconf_is_refused_and_changes_nothing(netns_factory, tmp_path: Path, conf: bytes, field: str) -> None:  # type: ignore[no-untyped-def]
    node, peer = netns_factory("ovl-bad"), netns_factory("ovl-bpe")
    with netns.ipr(node) as ip:
        ip.link("add", ifname="eth0", kind="veth", peer={"ifname": "eth0", "net_ns_fd": peer})
        idx = ip.link_lookup(ifname="eth0")[0]
        ip.addr("add", index=idx, address="192.168.78.1", prefixlen=24)
        ip.link("set", index=idx, state="up")
    store_url = f"sqlite://{tmp_path}/state.db"
    set_config(store_url, conf)
    links_before = netns.run(node, ["ip", "-o", "link"]).stdout
    routes_before = netns.run(node, ["ip", "route"]).stdout
    subnet_file = tmp_path / "run" / "subnet.env"
    res = subprocess.run(
        netns.exec_argv(node, podnet_argv(store_url, "overlay", "run", "--node", "bad", "--iface", "eth0",
                                          "--ip-masq", "--subnet-file", str(subnet_file))),
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1, res.stderr
    assert f"error: {field}:" in res.stderr
    assert netns.run(node, ["ip", "-o", "link"]).stdout == links_before
    assert netns.run(node, ["ip", "route"]).stdout == routes_before
    assert "FLANNEL" not in netns.run(node, ["iptables-save"]).stdout
    assert not subnet_file.exists()
    with SqliteStore(store_url) as store:
        assert store.list(keys.SUBNETS_PREFIX).items == []


def test_missing_iface_is_refused(netns_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node = netns_factory("ovl-noif")
    store_url = f"sqlite://{tmp_path}/state.db"
    set_config(store_url, b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    res = subprocess.run(
        netns.exec_argv(node, podnet_argv(store_url, "overlay", "run", "--node", "x", "--iface", "eth9",
                                          "--subnet-file", str(tmp_path / "subnet.env"))),
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1 and "--iface: 'eth9': no such interface" in res.stderr
    with SqliteStore(store_url) as store:
        assert store.list(keys.SUBNETS_PREFIX).items == []

