"""The nftables backend against a real kernel: features the shared scenarios do not cover, table hygiene, failures.

    client 10.20.1.2 --veth-- node 10.20.1.1 (br0 10.244.5.1/24) --br0-- ep1 10.244.5.2 (local, node n1)
                                                                  -- ep2 10.244.5.3 (labelled remote, n2)
ep2 sits on the node's bridge but its EndpointSlice says another node, so it stands in for a remote pod: it
is never used as a client (a remote pod's traffic would not pass this node's rules).
The backend (proxy/nftables/backend.py) is driven directly with desired states and loads through `nft -f` inside
the node namespace (ip netns exec); the daemon scenarios (test_proxy_run.py) cover the libnftables path.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from podnet.api.defaults import IPV6
from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName
from podnet.proxy.nftables.backend import NftablesBackend
from podnet.proxy.nftables.nft import Nft, NftError
from podnet.proxy.settings import LocalDetector, ProxierSettings

pytestmark = pytest.mark.integration

PROBE = str(Path(__file__).with_name("netprobe.py"))
EP1, EP2, CLIENT, NODE = "10.244.5.2", "10.244.5.3", "10.20.1.2", "10.20.1.1"
SETTINGS = ProxierSettings(node_name="n1", node_ip=NODE, node_ips=(NODE, "10.244.5.1"),
                           local_detector=LocalDetector.by_cidr("10.244.0.0/16"), node_port_cidrs=(f"{NODE}/32",))
FOREIGN = """add table ip pn-foreign
add set ip pn-foreign blocked { type ipv4_addr ; elements = { 198.51.100.8 } ; }
add chain ip pn-foreign in { type filter hook input priority 10 ; }
add rule ip pn-foreign in ip saddr @blocked drop
add table inet pn-foreign6
add chain inet pn-foreign6 pre { type nat hook prerouting priority -150 ; }
add rule inet pn-foreign6 pre ip daddr 198.51.100.7 return
"""


def sh(ns: str, *argv: str, input: str | None = None, check: bool = True) -> str:
    p = subprocess.run(["ip", "netns", "exec", ns, *argv], input=input, capture_output=True, text=True, timeout=60)
    if check and p.returncode != 0:
        raise RuntimeError(f"{argv} in {ns}: {p.stderr}")
    return p.stdout


@dataclass
class Bed:
    client: str
    node: str
    ep1: str
    ep2: str
    backend: NftablesBackend

    def probe(self, ns: str, *args: str) -> dict:
        return json.loads(sh(ns, sys.executable, PROBE, *args).strip().splitlines()[-1])

    def sync(self, *services: ServicePort) -> None:
        self.backend.full_sync(state(*services), SETTINGS)

    def table(self) -> str:
        return sh(self.node, "nft", "list", "table", "ip", "podnet")


def ep(ip: str, local: bool) -> Endpoint:
    return Endpoint(ip=ip, port=8080, local=local, node_name="n1" if local else "n2")


BOTH = (ep(EP1, True), ep(EP2, False))


def svc(name: str, cip: str, *, eps: tuple[Endpoint, ...] = BOTH, **kw: object) -> ServicePort:
    spn = ServicePortName("default", name, "p", "TCP")
    return ServicePort(name=spn, cluster_ip=cip, port=80, endpoints=tuple(sorted(eps, key=str)), **kw)  # type: ignore[arg-type]


def state(*services: ServicePort) -> DesiredState:
    return DesiredState("n1", services={sp.name: sp for sp in services})


@pytest.fixture(scope="module")
def bed() -> Iterator[Bed]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    from podnet.net import netns

    tag = os.urandom(2).hex()
    names = [f"pn-nft-{r}-{tag}" for r in ("cl", "node", "ep1", "ep2")]
    client, node, ep1, ep2 = names
    procs: list[subprocess.Popen[str]] = []
    made: list[str] = []
    try:
        for ns in names:
            netns.create(ns)
            made.append(ns)
        sh(node, "sysctl", "-qw", "net.ipv4.ip_forward=1")
        sh(node, "ip", "link", "add", "c0", "type", "veth", "peer", "name", "eth0", "netns", client)
        sh(node, "ip", "addr", "add", f"{NODE}/24", "dev", "c0")
        sh(node, "ip", "link", "set", "c0", "up")
        sh(client, "ip", "addr", "add", f"{CLIENT}/24", "dev", "eth0")
        sh(client, "ip", "link", "set", "eth0", "up")
        sh(client, "ip", "route", "add", "default", "via", NODE)
        # the node routes everything somewhere (as real nodes do), so a dropped service IP is our drop, not ENETUNREACH
        sh(node, "ip", "route", "add", "default", "via", CLIENT)
        sh(node, "ip", "link", "add", "br0", "type", "bridge")
        sh(node, "ip", "addr", "add", "10.244.5.1/24", "dev", "br0")
        sh(node, "ip", "link", "set", "br0", "up")
        for i, (ns, ip, label) in enumerate(((ep1, EP1, "ep1"), (ep2, EP2, "ep2"))):
            sh(node, "ip", "link", "add", f"v{i}", "type", "veth", "peer", "name", "eth0", "netns", ns)
            sh(node, "ip", "link", "set", f"v{i}", "master", "br0", "up")
            # as the CNI bridge plugin with hairpinMode (flannel's default): with br_netfilter loaded, a pod's
            # DNATed packet back to itself is bridged out of the port it came in on
            sh(node, "ip", "link", "set", f"v{i}", "type", "bridge_slave", "hairpin", "on")
            sh(ns, "ip", "addr", "add", f"{ip}/24", "dev", "eth0")
            sh(ns, "ip", "link", "set", "eth0", "up")
            sh(ns, "ip", "route", "add", "default", "via", "10.244.5.1")
            p = subprocess.Popen(["ip", "netns", "exec", ns, sys.executable, PROBE, "serve", label],
                                 stdout=subprocess.PIPE, text=True)
            procs.append(p)
            assert p.stdout is not None and p.stdout.readline().strip() == "ready"
        sh(node, "nft", "-f", "-", input=FOREIGN)
        yield Bed(client, node, ep1, ep2, NftablesBackend(nft=Nft(node)))
    finally:
        for p in procs:
            os.kill(p.pid, signal.SIGKILL)
            p.wait(5)
        for ns in reversed(made):
            netns.remove(ns)


def hits(counts: dict) -> set[str]:
    return {k for k, v in counts.items() if k != "errors" and v}


def test_external_traffic_policy_local(bed: Bed) -> None:
    web = svc("web", "10.96.5.10", external_ips=("192.0.2.100",), node_port=30100, external_policy_local=True)
    bed.sync(web)
    # from outside: only the local endpoint, client address kept (no masquerade)
    counts = bed.probe(bed.client, "tcp", "192.0.2.100", "80", "--count", "20")
    assert counts == {"errors": 0, "ep1": 20}, counts
    assert bed.probe(bed.client, "connect", "192.0.2.100", "80")["body"] == f"ep1 {CLIENT}"
    assert bed.probe(bed.client, "tcp", NODE, "30100", "--count", "10") == {"errors": 0, "ep1": 10}
    # from a pod of this node: short-circuited to every endpoint of the service (itself included: hairpin)
    assert hits(bed.probe(bed.ep1, "tcp", "192.0.2.100", "80", "--count", "40")) == {"ep1", "ep2"}
    # no local endpoint: outside traffic is dropped, pods still get served
    bed.sync(replace(web, endpoints=(ep(EP2, False),)))
    assert bed.probe(bed.client, "connect", "192.0.2.100", "80", "--timeout", "1")["result"] == "timeout"
    assert bed.probe(bed.ep1, "connect", "192.0.2.100", "80")["body"].startswith("ep2")


def test_internal_traffic_policy_local(bed: Bed) -> None:
    bed.sync(svc("itp", "10.96.5.11", internal_policy_local=True))
    assert bed.probe(bed.client, "tcp", "10.96.5.11", "80", "--count", "20") == {"errors": 0, "ep1": 20}


def test_load_balancer_source_ranges(bed: Bed) -> None:
    lb = svc("lb", "10.96.5.12", load_balancer_ips=("192.0.2.101",), load_balancer_source_ranges=("10.20.1.0/30",))
    bed.sync(lb)
    assert bed.probe(bed.client, "connect", "192.0.2.101", "80")["result"] == "ok"
    bed.sync(replace(lb, load_balancer_source_ranges=("198.51.100.0/24",)))
    assert bed.probe(bed.client, "connect", "192.0.2.101", "80", "--timeout", "1")["result"] == "timeout"
    # source ranges guard the LB IP only; the ClusterIP stays open
    assert bed.probe(bed.client, "connect", "10.96.5.12", "80")["result"] == "ok"


def test_node_ports_only_on_node_port_addresses(bed: Bed) -> None:
    bed.sync(svc("np", "10.96.5.13", node_port=30101))
    assert bed.probe(bed.client, "connect", NODE, "30101")["result"] == "ok"
    # the node's bridge address is not in nodePortAddresses: nothing answers there
    assert bed.probe(bed.ep1, "connect", "10.244.5.1", "30101", "--timeout", "1")["result"] != "ok"


def test_incremental_syncs_are_element_only_and_reach_the_kernel(bed: Bed) -> None:
    a, b = svc("a", "10.96.5.20", eps=(ep(EP1, True),)), svc("b", "10.96.5.21")
    bed.sync(a, b)
    old, new = state(a), state(replace(a, endpoints=(ep(EP2, False),)))
    bed.backend.partial_sync(old, new, SETTINGS, False)
    assert bed.backend.last_partial_element_only
    assert bed.probe(bed.client, "tcp", "10.96.5.20", "80", "--count", "10") == {"errors": 0, "ep2": 10}
    c = svc("c", "10.96.5.22", eps=(ep(EP1, True),))
    bed.backend.partial_sync(state(), state(c), SETTINGS, False)
    assert bed.probe(bed.client, "tcp", "10.96.5.22", "80", "--count", "5") == {"errors": 0, "ep1": 5}
    bed.backend.partial_sync(state(c), state(), SETTINGS, False)
    assert bed.probe(bed.client, "connect", "10.96.5.22", "80", "--timeout", "1")["result"] != "ok"
    assert "10.96.5.22" not in bed.table()


def test_affinity_service_chains_come_and_go(bed: Bed) -> None:
    sticky = svc("sticky", "10.96.5.30", client_ip_affinity=True, sticky_max_age_seconds=600)
    bed.sync(sticky, svc("plain", "10.96.5.31"))
    assert len(hits(bed.probe(bed.client, "tcp", "10.96.5.30", "80", "--count", "20"))) == 1
    assert "affinity-" in bed.table()
    bed.backend.partial_sync(state(sticky), state(replace(sticky, client_ip_affinity=False)), SETTINGS, False)
    table = bed.table()
    assert "affinity-" not in table and "/sticky/" not in table
    assert hits(bed.probe(bed.client, "tcp", "10.96.5.30", "80", "--count", "40")) == {"ep1", "ep2"}


def test_full_sync_removes_stale_objects_and_never_touches_other_tables(bed: Bed) -> None:
    foreign = sh(bed.node, "nft", "list", "table", "ip", "pn-foreign") + sh(bed.node, "nft", "list", "table", "inet",
                                                                            "pn-foreign6")
    bed.sync(svc("s", "10.96.5.40", client_ip_affinity=True, sticky_max_age_seconds=60), svc("t", "10.96.5.41"))
    sh(bed.node, "nft", "add chain ip podnet leftover-from-someone")
    bed.sync(svc("t", "10.96.5.41"))
    table = bed.table()
    assert "leftover-from-someone" not in table and "affinity-" not in table and "/s/" not in table
    assert "10.96.5.40" not in table
    assert sh(bed.node, "nft", "list", "table", "ip", "pn-foreign") + sh(
        bed.node, "nft", "list", "table", "inet", "pn-foreign6") == foreign


def test_failed_transaction_leaves_the_previous_ruleset(bed: Bed) -> None:
    good = svc("g", "10.96.5.50")
    bed.sync(good)
    before = bed.table()
    with pytest.raises(NftError):
        bed.sync(good, svc("broken", "10.96.5.999"))  # would not parse: nothing of the transaction applies
    assert bed.table() == before
    assert bed.backend.needs_full
    assert bed.probe(bed.client, "connect", "10.96.5.50", "80")["result"] == "ok"
    bed.sync(good, svc("h", "10.96.5.51"))  # the retry
    assert bed.probe(bed.client, "connect", "10.96.5.51", "80")["result"] == "ok"


def test_failed_partial_sync_needs_a_full_one_that_repairs(bed: Bed) -> None:
    one = svc("one", "10.96.5.60", eps=(ep(EP1, True),))
    bed.sync(one)
    # someone removed our element behind our back: deleting it again makes the transaction fail
    sh(bed.node, "nft", "delete element ip podnet service-endpoints-tcp { 10.96.5.60 . tcp . 80 . 0 }")
    with pytest.raises(NftError):
        bed.backend.partial_sync(state(one), state(replace(one, endpoints=(ep(EP2, False),))), SETTINGS, False)
    assert bed.backend.needs_full
    bed.sync(replace(one, endpoints=(ep(EP2, False),)))
    assert bed.probe(bed.client, "tcp", "10.96.5.60", "80", "--count", "5") == {"errors": 0, "ep2": 5}


def test_ipv6_services_get_their_own_table(bed: Bed) -> None:
    spn = ServicePortName("default", "v6", "p", "TCP")
    sp = ServicePort(name=spn, cluster_ip="fd00:96::10", port=80, node_port=30102,
                     endpoints=(Endpoint(ip="fd00:244::2", port=8080),))
    s6 = replace(SETTINGS, ip_family=IPV6, node_ip="fd00:20::1", node_ips=("fd00:20::1",),
                 local_detector=LocalDetector.by_cidr("fd00:244::/64"), node_port_cidrs=("fd00:20::1/128",))
    ipv4_before = bed.table()
    backend = NftablesBackend(nft=Nft(bed.node))
    backend.full_sync(DesiredState("n1", IPV6, {spn: sp}), s6)
    table = sh(bed.node, "nft", "list", "table", "ip6", "podnet")
    assert "fd00:96::10 . tcp . 80 . 0 : fd00:244::2 . 8080" in table
    assert bed.table() == ipv4_before
    sh(bed.node, "nft", "delete", "table", "ip6", "podnet")
