"""`podnet overlay run` with dual-stack and IPv6-only net-confs, as real processes in node namespaces.

Topology (all in pn-ov-* namespaces): an underlay bridge; 3 nodes with eth0 192.168.79.<i>/24 and
fd00:77::1<i>/64. Once a daemon has written subnet.env, the test puts the first address of the node's
FLANNEL_IPV6_SUBNET on `cni0` (what the CNI bridge would hold), and a ping between two nodes'
cni0 addresses must really cross the overlay (vxlan: flannel-v6.1; host-gw: a route via PublicIPv6).
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.net import netns
from podnet.overlay import masq
from podnet.store import keys
from podnet.store.sqlite import SqliteStore

from .test_daemon_nodes import Daemon, ip_json, podnet_argv, set_config, wait_for

pytestmark = pytest.mark.integration

V6_NET = "fd00:10:244::/56"
CONFS = {
    "dual": {"Network": "10.244.0.0/16", "EnableIPv6": True, "IPv6Network": V6_NET, "IPv6SubnetLen": 64},
    "ipv6-only": {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": V6_NET, "IPv6SubnetLen": 64},
}


def conf_text(family: str, backend: str) -> bytes:
    return json.dumps({**CONFS[family], "Backend": {"Type": backend}}).encode()


def v4_of(i: int) -> str:
    return f"192.168.79.{i}"


def v6_of(i: int) -> str:
    return f"fd00:77::1{i}"


@pytest.fixture
def nodes(netns_factory) -> Iterator[list[str]]:  # type: ignore[no-untyped-def]
    ul = netns_factory("ov-6ul")
    netns.run(ul, ["ip", "link", "add", "br0", "type", "bridge"])
    netns.run(ul, ["ip", "link", "set", "br0", "up"])
    out = []
    for i in (1, 2, 3):
        ns = netns_factory(f"ov-6n{i}")
        netns.run(ul, ["ip", "link", "add", f"u{i}", "type", "veth", "peer", "name", "eth0", "netns", ns])
        netns.run(ul, ["ip", "link", "set", f"u{i}", "master", "br0", "up"])
        netns.run(ns, ["ip", "addr", "add", f"{v4_of(i)}/24", "dev", "eth0"])
        netns.run(ns, ["ip", "-6", "addr", "add", f"{v6_of(i)}/64", "dev", "eth0", "nodad"])
        netns.run(ns, ["ip", "link", "set", "eth0", "up"])
        # cni0: one end of a veth pair whose other end stays in the node (a link with carrier, no dummy module)
        netns.run(ns, ["ip", "link", "add", "cni0", "type", "veth", "peer", "name", "cni0p"])
        netns.run(ns, ["ip", "link", "set", "cni0p", "up"])
        netns.run(ns, ["ip", "link", "set", "cni0", "up"])
        out.append(ns)
    yield out


def v6_subnet(d: Daemon) -> ipaddress.IPv6Network:
    return ipaddress.ip_network(d.env()["FLANNEL_IPV6_SUBNET"], strict=False)  # type: ignore[return-value]


def ping6(ns: str, src: object, dst: object) -> bool:
    return netns.run(ns, ["ping", "-6", "-c", "1", "-W", "1", "-I", str(src), str(dst)], check=False).returncode == 0


def v6_routes(ns: str) -> set[str]:
    return {r["dst"] for r in ip_json(ns, "-6", "route", "show") if r.get("dst", "").startswith("fd00:10:244:")}


@pytest.mark.parametrize("backend", ["vxlan", "host-gw"])
@pytest.mark.parametrize("family", list(CONFS))
def test_three_nodes_over_ipv6(nodes: list[str], tmp_path: Path, family: str, backend: str) -> None:
    store_url = f"sqlite://{tmp_path}/state.db"
    set_config(store_url, conf_text(family, backend))
    daemons = [Daemon(ns, f"n{i}", store_url, tmp_path, ["--public-ip", v4_of(i), "--ip-masq",
                                                        "--iptables-resync", "1"])
               for i, ns in enumerate(nodes, 1)]
    if family == "ipv6-only":
        # node 3 is a real IPv6-only node: no IPv4 address at all, picked by its IPv6 address
        netns.run(nodes[2], ["ip", "-4", "addr", "flush", "dev", "eth0"])
        daemons[2].extra = ["--ip-masq", "--iptables-resync", "1"]
        daemons[2].iface = v6_of(3)
    # node 3 finds its IPv6 underlay address itself (flannel's default); 1 and 2 are told, as the lab does
    for i, d in enumerate(daemons[:2], 1):
        d.extra += ["--public-ipv6", v6_of(i)]
    try:
        for d in daemons:
            d.start()
        envs = [d.wait_ready() for d in daemons]
        dual = family == "dual"
        mtu = (1430 if backend == "vxlan" else 1500)
        subnets6 = [v6_subnet(d) for d in daemons]
        assert len(set(subnets6)) == 3 and all(s.subnet_of(ipaddress.IPv6Network(V6_NET)) for s in subnets6)
        for d, env, sn6 in zip(daemons, envs, subnets6, strict=True):
            want = (f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={d.env()['FLANNEL_SUBNET']}\n" if dual else "")
            want += (f"FLANNEL_IPV6_NETWORK={V6_NET}\nFLANNEL_IPV6_SUBNET={sn6.network_address + 1}/64\n"
                     f"FLANNEL_MTU={mtu}\nFLANNEL_IPMASQ=true\n")
            assert d.subnet_file.read_text() == want
            assert ("FLANNEL_SUBNET" in env) == dual

        # the leases in the store: flannel's keys and JSON for each family
        with SqliteStore(store_url) as store:
            kvs = {kv.key: json.loads(kv.value) for kv in store.list(keys.SUBNETS_PREFIX).items}
        assert len(kvs) == 3
        for i, (d, sn6) in enumerate(zip(daemons, subnets6, strict=True), 1):
            v4 = d.subnet() if dual else ipaddress.IPv4Network("0.0.0.0/0")
            value = kvs[keys.subnet_lease(str(v4), str(sn6))]
            assert value["PublicIPv6"] == v6_of(i) and value["BackendType"] == backend
            assert value["PublicIP"] == (v4_of(i) if dual else "0.0.0.0")
            if backend == "vxlan":
                mac6 = ip_json(nodes[i - 1], "link", "show", "flannel-v6.1")[0]["address"]
                assert value["BackendV6Data"] == {"VNI": 1, "VtepMAC": mac6}
                assert ("BackendData" in value) == dual
                assert ip_json(nodes[i - 1], "link", "show", "flannel-v6.1")[0]["mtu"] == 1430
            else:
                assert "BackendV6Data" not in value

        # a packet over IPv6 from node 1's pod network to node 2's and 3's, through what the leases produced
        for ns, sn6 in zip(nodes, subnets6, strict=True):
            netns.run(ns, ["ip", "-6", "addr", "add", f"{sn6.network_address + 1}/64", "dev", "cni0", "nodad"])
        for src in range(3):
            for dst in range(3):
                if src != dst:
                    wait_for(lambda s=src, t=dst: ping6(nodes[s], subnets6[s].network_address + 1,
                                                        subnets6[t].network_address + 1), 10, f"ping6 n{src+1}->n{dst+1}")

        # IPv6 masquerade: FLANNEL-POSTRTG in ip6tables, flannel's layout with the IPv6 network and subnet
        rules6 = [line for line in netns.run(nodes[0], ["ip6tables", "-t", "nat", "-S"]).stdout.splitlines()
                  if "flanneld masq" in line]
        assert rules6 == [masq.MASQ_JUMP, *masq.masq_rules(ipaddress.IPv6Network(V6_NET), subnets6[0])]
        rules4 = netns.run(nodes[0], ["iptables", "-t", "nat", "-S"]).stdout
        assert ("flanneld masq" in rules4) == dual

        # restart node 2: it finds its lease again (by PublicIP, by PublicIPv6 when IPv6-only), same subnets,
        # same devices, and still reachable
        links2 = [(x["ifname"], x["ifindex"], x.get("address")) for x in ip_json(nodes[1], "link", "show")]
        assert daemons[1].terminate() == 0
        daemons[1].start()
        # its log file is appended to: wait for the second "overlay running", not the first run's
        wait_for(lambda: daemons[1].log().count("overlay running") == 2, 20, "n2 running again")
        assert v6_subnet(daemons[1]) == subnets6[1]
        assert [(x["ifname"], x["ifindex"], x.get("address")) for x in ip_json(nodes[1], "link", "show")] == links2
        wait_for(lambda: ping6(nodes[0], subnets6[0].network_address + 1, subnets6[1].network_address + 1), 5,
                 "ping6 n1->n2 after n2's restart")
        if backend == "vxlan":
            # someone deletes flannel-v6.1 on node 2: the resync recreates it with its MAC and its peers' entries
            mac6 = ip_json(nodes[1], "link", "show", "flannel-v6.1")[0]["address"]
            netns.run(nodes[1], ["ip", "link", "del", "flannel-v6.1"])
            wait_for(lambda: ping6(nodes[0], subnets6[0].network_address + 1, subnets6[1].network_address + 1),
                     10, "ping6 n1->n2 after flannel-v6.1 was recreated")
            assert ip_json(nodes[1], "link", "show", "flannel-v6.1")[0]["address"] == mac6

        # node 3's lease goes: the other nodes drop its IPv6 route (and keep each other's)
        assert str(subnets6[2]) in v6_routes(nodes[0])
        out = subprocess.run(podnet_argv(store_url, "overlay", "revoke", str(subnets6[2])),
                             capture_output=True, text=True, check=True)
        assert "revoked" in out.stdout
        for ns in nodes[:2]:
            wait_for(lambda n=ns: str(subnets6[2]) not in v6_routes(n), 5, "n3's IPv6 route dropped")
        assert str(subnets6[1]) in v6_routes(nodes[0])
        assert daemons[2].proc is not None and daemons[2].proc.wait(timeout=5) == 1
        assert "has been revoked" in daemons[2].log()
        assert not ping6(nodes[0], subnets6[0].network_address + 1, subnets6[2].network_address + 1)
    finally:
        for d in daemons:
            if d.proc is not None and d.proc.poll() is None:
                d.terminate()


def test_ipv6_without_an_ipv6_underlay_address_is_refused(netns_factory, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    node, peer = netns_factory("ov-6no"), netns_factory("ov-6np")
    netns.run(node, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "eth0", "netns", peer])
    netns.run(node, ["ip", "addr", "add", "192.168.79.1/24", "dev", "eth0"])
    netns.run(node, ["ip", "link", "set", "eth0", "up"])
    store_url = f"sqlite://{tmp_path}/state.db"
    set_config(store_url, conf_text("dual", "vxlan"))
    res = subprocess.run(
        netns.exec_argv(node, podnet_argv(store_url, "overlay", "run", "--node", "x", "--iface", "eth0",
                                          "--subnet-file", str(tmp_path / "subnet.env"))),
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 1 and "has no global IPv6 address" in res.stderr, res.stderr
    assert "flannel" not in netns.run(node, ["ip", "-o", "link"]).stdout
    assert not (tmp_path / "subnet.env").exists()
    with SqliteStore(store_url) as store:
        assert store.list(keys.SUBNETS_PREFIX).items == []
