"""Packets really flow through what podnet-bridge builds: pod to pod over the bridge, pod to the gateway,
and pod to an outside address only thanks to the masquerade rule (the outside has no route back to pods)."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0:
    pytest.skip("needs root for network namespaces", allow_module_level=True)

from .cni_harness import Side  # noqa: E402


@pytest.fixture
def side() -> Iterator[Side]:
    s = Side("podnet")
    try:
        yield s
    finally:
        s.close()


def ping(ns: str, dst: str) -> bool:
    return subprocess.run(["ip", "netns", "exec", ns, "ping", "-c1", "-W2", dst], capture_output=True,
                          check=False).returncode == 0


def test_pods_reach_each_other_the_gateway_and_the_outside_via_masquerade(side: Side) -> None:
    conf = {"cniVersion": "1.0.0", "name": "trafnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
            "ipMasq": True, "ipam": {"type": "host-local", "subnet": "10.60.0.0/24", "dataDir": side.data_dir,
                                     "routes": [{"dst": "0.0.0.0/0"}]}}
    pods = {}
    for name in ("p1", "p2"):
        r = side.call("bridge", "ADD", conf, cid=name, netns_path=side.container(name), ifname="eth0")
        assert r.rc == 0, r.stdout
        pods[name] = r.json["ips"][0]["address"].split("/")[0]
    # an "outside" namespace behind the host, with no route to the pod subnet
    out = side.ns_name("x")
    side.make_ns(out)
    subprocess.run(["ip", "-n", side.host, "link", "add", "pn-cni-up", "type", "veth", "peer", "name", "up0",
                    "netns", out], check=True)
    subprocess.run(["ip", "-n", side.host, "addr", "add", "192.0.2.1/24", "dev", "pn-cni-up"], check=True)
    subprocess.run(["ip", "-n", side.host, "link", "set", "pn-cni-up", "up"], check=True)
    subprocess.run(["ip", "-n", out, "addr", "add", "192.0.2.2/24", "dev", "up0"], check=True)
    subprocess.run(["ip", "-n", out, "link", "set", "up0", "up"], check=True)
    p1, p2 = side.ns_name("p1"), side.ns_name("p2")
    assert ping(p1, pods["p2"]) and ping(p2, pods["p1"]), "pod to pod over cni0"
    assert ping(p1, "10.60.0.1"), "pod to its gateway on the bridge"
    assert ping(p1, "192.0.2.2"), "outside reachable only if the pod's source is masqueraded"
    # without the masquerade (DEL removes it) the outside cannot answer: proves the rule did the work
    pkts = subprocess.run(["ip", "netns", "exec", side.host, "iptables", "-t", "nat", "-L", "POSTROUTING", "-v",
                           "-n", "-x"], capture_output=True, text=True, check=True).stdout
    assert any("CNI-" in ln and int(ln.split()[0]) > 0 for ln in pkts.splitlines()[2:]), pkts
    r = side.call("bridge", "DEL", conf, cid="p2", netns_path=side.container("p2"), ifname="eth0")
    assert r.rc == 0
    assert not ping(p1, pods["p2"]), "p2 is gone after DEL"
    subprocess.run(["ip", "netns", "exec", side.host, "iptables", "-t", "nat", "-F", "POSTROUTING"], check=True)
    assert not ping(p1, "192.0.2.2"), "no route back from outside without masquerade"
