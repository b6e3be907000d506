"""The vxlan, host-gw and udp backends in real namespaces: 3 nodes on an underlay bridge, one pod each.

Backends run in runner processes inside the node namespaces with hand-made leases (the daemon's tests
cover the store side). Every check reads the kernel with iproute2's JSON output, not with the code
under test, and every connectivity check sends real packets.
"""

from __future__ import annotations

import ipaddress
import json
import subprocess
import sys
import textwrap
from collections.abc import Iterator

import pytest

from podnet.net import netns
from podnet.testing.overlay_testbed import NETWORK, Node, Testbed

pytestmark = pytest.mark.integration

KINDS = ["vxlan", "host-gw", "udp"]
TCP_PORT = 8080
TCP_BYTES = 300_000  # many full-size segments: a wrong MTU shows up as a stalled transfer

SERVER = textwrap.dedent("""
    import socket, sys
    s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(16)
    payload = b"x" * int(sys.argv[2])
    print("ready", flush=True)
    while True:
        c, _ = s.accept()
        try:
            c.sendall(payload)
        finally:
            c.close()
""")

CLIENT = textwrap.dedent("""
    import json, socket, sys
    out = {}
    for ip in sys.argv[3:]:
        try:
            c = socket.create_connection((ip, int(sys.argv[1])), timeout=3)
            n = 0
            while True:
                d = c.recv(65536)
                if not d:
                    break
                n += len(d)
            c.close()
            out[ip] = n
        except OSError as e:
            out[ip] = str(e)
    print(json.dumps(out))
""")


def ip_json(ns: str, *args: str) -> list[dict]:
    out = netns.run(ns, ["ip", "-j", *args]).stdout
    return json.loads(out) if out.strip() else []


def bridge_json(ns: str, *args: str) -> list[dict]:
    out = netns.run(ns, ["bridge", "-j", *args]).stdout
    return json.loads(out) if out.strip() else []


def pings(ns: str, ip: ipaddress.IPv4Address) -> bool:
    return netns.run(ns, ["ping", "-c", "1", "-W", "1", "-q", str(ip)], check=False).returncode == 0


@pytest.fixture
def testbed(netns_factory) -> Iterator[Testbed]:
    tb = Testbed(3, make_ns=netns_factory)
    try:
        tb.build()
        yield tb
    finally:
        tb.close()


@pytest.fixture
def pod_servers(testbed: Testbed) -> Iterator[None]:
    procs = []
    try:
        for node in testbed.nodes:
            p = subprocess.Popen(netns.exec_argv(node.pod_ns, [sys.executable, "-c", SERVER, str(TCP_PORT),
                                                               str(TCP_BYTES)]),
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        yield
    finally:
        for p in procs:
            p.kill()
            p.wait()


def others(tb: Testbed, node: Node) -> list[Node]:
    return [n for n in tb.nodes if n is not node]


# -- connectivity ------------------------------------------------------------------------------------

@pytest.mark.parametrize(("kind", "options"), [(k, {}) for k in KINDS] + [("udp", {"Offload": False})],
                         ids=[*KINDS, "udp-one-packet-per-syscall"])
def test_every_node_and_pod_reaches_every_pod_on_other_nodes(testbed: Testbed, pod_servers: None, kind: str,
                                                             options: dict):
    testbed.start(kind, options)
    failures = []
    for node in testbed.nodes:
        targets = [str(n.pod_ip) for n in others(testbed, node)]
        for src in (node.ns, node.pod_ns):
            for dst in others(testbed, node):
                if not pings(src, dst.pod_ip):
                    failures.append(f"ping {src} -> {dst.pod_ip}")
            got = json.loads(netns.run(src, [sys.executable, "-c", CLIENT, str(TCP_PORT), "-", *targets]).stdout)
            failures += [f"tcp {src} -> {ip}: {n}" for ip, n in got.items() if n != TCP_BYTES]
    assert failures == []


# -- kernel state against flannel's recipe ----------------------------------------------------------

def check_vxlan_node(node: Node, tb: Testbed) -> None:
    link = ip_json(node.ns, "-d", "link", "show", "flannel.1")[0]
    info = link["linkinfo"]["info_data"]
    assert (info["id"], info["port"], info["learning"], info["local"], link["mtu"]) == (
        1, 8472, False, str(node.public_ip), 1500 - 50)
    addrs = [(a["local"], a["prefixlen"]) for a in ip_json(node.ns, "-4", "addr", "show", "flannel.1")[0]["addr_info"]]
    assert addrs == [(str(node.subnet.network_address), 32)]
    routes = {r["dst"]: r for r in ip_json(node.ns, "route", "show", "dev", "flannel.1")}
    neighs = {n["dst"]: n for n in ip_json(node.ns, "neigh", "show", "dev", "flannel.1")}
    fdb = {f["mac"]: f for f in bridge_json(node.ns, "fdb", "show", "dev", "flannel.1") if "dst" in f}
    peers = others(tb, node)
    assert sorted(routes) == sorted(str(p.subnet) for p in peers)
    for p in peers:
        vtep, mac = str(p.subnet.network_address), p.lease["backend_data"]["VtepMAC"]
        assert routes[str(p.subnet)]["gateway"] == vtep and "onlink" in routes[str(p.subnet)]["flags"]
        assert neighs[vtep]["lladdr"] == mac and "PERMANENT" in neighs[vtep]["state"]
        assert fdb[mac]["dst"] == str(p.public_ip) and "permanent" in fdb[mac]["state"]
        assert "self" in fdb[mac]["flags"]
    assert len(fdb) == len(peers)


def check_hostgw_node(node: Node, tb: Testbed) -> None:
    routes = {r["dst"]: r for r in ip_json(node.ns, "route", "show") if r["dst"].startswith("10.244.")}
    want = {str(p.subnet): (str(p.public_ip), "eth0") for p in others(tb, node)}
    want[str(node.subnet)] = (None, "cni0")
    assert {d: (r.get("gateway"), r["dev"]) for d, r in routes.items()} == want
    assert ip_json(node.ns, "link", "show", "type", "vxlan") == []


def check_udp_node(node: Node, tb: Testbed) -> None:
    link = ip_json(node.ns, "-d", "link", "show", "flannel0")[0]
    assert link["linkinfo"]["info_kind"] == "tun" and link["mtu"] == 1500 - 28
    addrs = [(a["local"], a["prefixlen"]) for a in ip_json(node.ns, "-4", "addr", "show", "flannel0")[0]["addr_info"]]
    assert addrs == [(str(node.subnet.network_address), 32)]
    assert [r["dst"] for r in ip_json(node.ns, "route", "show", "dev", "flannel0")] == [str(NETWORK)]
    sockets = netns.run(node.ns, ["ss", "-H", "-uln"]).stdout.split()
    assert f"{node.public_ip}:8285" in sockets


CHECKS = {"vxlan": check_vxlan_node, "host-gw": check_hostgw_node, "udp": check_udp_node}


@pytest.mark.parametrize("kind", KINDS)
def test_kernel_state_matches_recipe_and_removal_undoes_it(testbed: Testbed, kind: str):
    testbed.start(kind)
    for node in testbed.nodes:
        CHECKS[kind](node, testbed)
    n1, n2, n3 = testbed.nodes
    assert pings(n1.pod_ns, n3.pod_ip)

    for node in (n1, n2):
        node.call(op="remove", lease=n3.lease)
    gone = str(n3.subnet)
    for node in (n1, n2):
        assert [r["dst"] for r in ip_json(node.ns, "route", "show", gone)] == []
        if kind == "vxlan":
            assert ip_json(node.ns, "neigh", "show", "dev", "flannel.1", str(n3.subnet.network_address)) == []
            macs = [f["mac"] for f in bridge_json(node.ns, "fdb", "show", "dev", "flannel.1")]
            assert n3.lease["backend_data"]["VtepMAC"] not in macs
            assert n2.lease["backend_data"]["VtepMAC"] in macs or node is n2
    assert not pings(n1.pod_ns, n3.pod_ip)
    assert pings(n1.pod_ns, n2.pod_ip)
    if kind == "udp":
        stats = n1.call(op="stats")["stats"]
        assert stats["tx_no_route"] >= 1  # the ping to the removed peer found no table entry
        out = netns.run(n1.pod_ns, ["ping", "-c", "1", "-W", "1", str(n3.pod_ip)], check=False).stdout
        assert f"From {NETWORK.network_address}" in out and "Destination Net Unreachable" in out

    n1.call(op="add", lease=n3.lease)  # and back: re-adding restores the path
    assert pings(n1.pod_ns, n3.pod_ip)


# -- vxlan specifics ----------------------------------------------------------------------------------

def test_vxlan_restart_reuses_device_and_keeps_peer_entries(testbed: Testbed):
    testbed.start("vxlan")
    n1, n2, _ = testbed.nodes
    before = ip_json(n1.ns, "link", "show", "flannel.1")[0]
    mac = n1.lease["backend_data"]["VtepMAC"]
    testbed.stop()
    # Nothing removed on stop: peers keep reaching each other while no runner is there.
    assert pings(n2.pod_ns, n1.pod_ip)
    testbed.start("vxlan", add_peers=False)
    after = ip_json(n1.ns, "link", "show", "flannel.1")[0]
    assert (after["ifindex"], after["address"]) == (before["ifindex"], mac)
    assert n1.lease["backend_data"]["VtepMAC"] == mac
    assert pings(n2.pod_ns, n1.pod_ip)


def test_vxlan_conflicting_device_is_recreated(testbed: Testbed):
    testbed.start("vxlan")
    n1 = testbed.nodes[0]
    before = ip_json(n1.ns, "link", "show", "flannel.1")[0]["ifindex"]
    testbed.stop()
    testbed.start("vxlan", {"Port": 4789})
    link = ip_json(n1.ns, "-d", "link", "show", "flannel.1")[0]
    assert link["ifindex"] != before and link["linkinfo"]["info_data"]["port"] == 4789
    assert pings(n1.pod_ns, testbed.nodes[1].pod_ip)


def test_vxlan_direct_routing_uses_plain_routes_for_same_l2_peers(testbed: Testbed):
    testbed.start("vxlan", {"DirectRouting": True})
    n1, n2, n3 = testbed.nodes
    routes = {r["dst"]: r for r in ip_json(n1.ns, "route", "show") if r["dst"] in (str(n2.subnet), str(n3.subnet))}
    assert {d: (r["gateway"], r["dev"]) for d, r in routes.items()} == {
        str(n2.subnet): (str(n2.public_ip), "eth0"), str(n3.subnet): (str(n3.public_ip), "eth0")}
    assert ip_json(n1.ns, "neigh", "show", "dev", "flannel.1") == []
    assert pings(n1.pod_ns, n3.pod_ip)
    n1.call(op="remove", lease=n3.lease)
    assert ip_json(n1.ns, "route", "show", str(n3.subnet)) == []
    # a peer whose PublicIP is not on-link still gets the encapsulated recipe
    far = {"subnet": "10.244.9.0/24", "public_ip": "10.99.0.1", "backend_type": "vxlan",
           "backend_data": {"VNI": 1, "VtepMAC": "0a:00:00:00:00:09"}}
    n1.call(op="add", lease=far)
    route = ip_json(n1.ns, "route", "show", "10.244.9.0/24")[0]
    assert (route["gateway"], route["dev"], "onlink" in route["flags"]) == ("10.244.9.0", "flannel.1", True)
    fdb = bridge_json(n1.ns, "fdb", "show", "dev", "flannel.1")
    assert [(f["mac"], f["dst"]) for f in fdb if "dst" in f] == [("0a:00:00:00:00:09", "10.99.0.1")]


def test_vxlan_changed_lease_replaces_the_old_entries(testbed: Testbed):
    testbed.start("vxlan")
    n1, n2, _ = testbed.nodes
    old_mac = n2.lease["backend_data"]["VtepMAC"]
    moved = {**n2.lease, "backend_data": {"VNI": 1, "VtepMAC": "0a:00:00:00:00:02"}}
    n1.call(op="add", lease=moved)
    macs = {f["mac"]: f.get("dst") for f in bridge_json(n1.ns, "fdb", "show", "dev", "flannel.1") if "dst" in f}
    assert old_mac not in macs and macs["0a:00:00:00:00:02"] == str(n2.public_ip)
    neigh = ip_json(n1.ns, "neigh", "show", "dev", "flannel.1", str(n2.subnet.network_address))
    assert neigh[0]["lladdr"] == "0a:00:00:00:00:02"
    n1.call(op="remove", lease=moved)
    assert ip_json(n1.ns, "neigh", "show", "dev", "flannel.1", str(n2.subnet.network_address)) == []
    assert "0a:00:00:00:00:02" not in [f["mac"] for f in bridge_json(n1.ns, "fdb", "show", "dev", "flannel.1")]


# -- host-gw specifics -------------------------------------------------------------------------------

def test_hostgw_peer_off_link_gets_no_route_and_a_named_error(testbed: Testbed):
    testbed.start("host-gw")
    n1 = testbed.nodes[0]
    stranger = {"subnet": "10.244.9.0/24", "public_ip": "10.99.0.1", "backend_type": "host-gw", "backend_data": None}
    n1.call(op="add", lease=stranger)
    assert ip_json(n1.ns, "route", "show", "10.244.9.0/24") == []
    log = n1.log()
    assert "10.244.9.0/24" in log and "10.99.0.1" in log and "same L2" in log
    assert pings(n1.pod_ns, testbed.nodes[1].pod_ip)  # the other peers are unaffected


# -- resync ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
def test_resync_restores_deleted_entries(testbed: Testbed, kind: str):
    testbed.start(kind)
    n1, n2, _ = testbed.nodes
    before = {"vxlan": "flannel.1", "host-gw": "eth0", "udp": "flannel0"}[kind]
    if kind == "vxlan":
        vtep = str(n2.subnet.network_address)
        mac = n2.lease["backend_data"]["VtepMAC"]
        netns.run(n1.ns, ["ip", "route", "del", str(n2.subnet)])
        netns.run(n1.ns, ["ip", "neigh", "del", vtep, "dev", "flannel.1"])
        netns.run(n1.ns, ["bridge", "fdb", "del", mac, "dev", "flannel.1", "dst", str(n2.public_ip)])
    elif kind == "host-gw":
        netns.run(n1.ns, ["ip", "route", "del", str(n2.subnet)])
    else:
        netns.run(n1.ns, ["ip", "route", "del", str(NETWORK)])
    assert not pings(n1.pod_ns, n2.pod_ip)
    n1.call(op="resync")
    assert pings(n1.pod_ns, n2.pod_ip)
    assert ip_json(n1.ns, "route", "show", "dev", before)
    if kind == "vxlan":
        check_vxlan_node(n1, testbed)
        # the whole device deleted: recreated with the same MAC, so the peers' FDB entries still fit
        mac1 = n1.lease["backend_data"]["VtepMAC"]
        netns.run(n1.ns, ["ip", "link", "del", "flannel.1"])
        n1.call(op="resync")
        assert ip_json(n1.ns, "link", "show", "flannel.1")[0]["address"] == mac1
        check_vxlan_node(n1, testbed)
        assert pings(n1.pod_ns, n2.pod_ip) and pings(n2.pod_ns, n1.pod_ip)


# -- external interface ------------------------------------------------------------------------------

def test_external_interface_by_name_ip_default_route_and_errors(testbed: Testbed):
    from podnet.errors import PodnetError
    from podnet.net.iface import lookup_external_interface

    n1 = testbed.nodes[0]
    with netns.ipr(n1.ns) as ipr:
        by_name = lookup_external_interface(ipr, "eth0")
        assert (by_name.name, str(by_name.address), str(by_name.public_ip), by_name.mtu) == (
            "eth0", "192.168.77.1", "192.168.77.1", 1500)
        assert lookup_external_interface(ipr, "192.168.77.1", "203.0.113.7") == by_name.__class__(
            "eth0", by_name.index, by_name.address, ipaddress.IPv4Address("203.0.113.7"), 1500)
        with pytest.raises(PodnetError, match="no IPv4 default route"):
            lookup_external_interface(ipr, None)
        ipr.route("add", dst="0.0.0.0/0", gateway="192.168.77.254")
        assert lookup_external_interface(ipr, None) == by_name
        for bad, msg in (("nope0", "--iface: 'nope0': no such interface"),
                         ("192.168.77.9", "no interface has this address")):
            with pytest.raises(PodnetError, match=msg):
                lookup_external_interface(ipr, bad)
        with pytest.raises(PodnetError, match="--public-ip: 'x'"):
            lookup_external_interface(ipr, "eth0", "x")


# -- in-process use with netns= (how the daemon runs when given a namespace) --------------------------

def test_udp_in_process_opens_tun_and_socket_inside_the_node_namespace(testbed: Testbed):
    from podnet.net.iface import lookup_external_interface
    from podnet.overlay.backends import create_backend
    from podnet.overlay.lease import Lease

    backends, leases = [], []
    try:
        for node in testbed.nodes[:2]:
            with netns.ipr(node.ns) as ipr:
                ext = lookup_external_interface(ipr, "eth0")
            be = create_backend("udp", ext, {}, netns=node.ns)
            backends.append(be)
            lease = Lease(subnet=node.subnet, public_ip=node.public_ip, backend_type="udp", backend_data=be.register())
            be.configure(lease, NETWORK)
            leases.append(lease)
        backends[0].add_remote(leases[1])
        backends[1].add_remote(leases[0])
        testbed.set_pod_mtu(backends[0].mtu)
        a, b = testbed.nodes[:2]
        assert pings(a.pod_ns, b.pod_ip) and pings(b.pod_ns, a.pod_ip)
        assert f"{a.public_ip}:8285" in netns.run(a.ns, ["ss", "-H", "-uln"]).stdout
        root = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True, check=True).stdout
        assert "flannel0" not in {link["ifname"] for link in json.loads(root)}  # root namespace untouched
    finally:
        for be in backends:
            be.close()
