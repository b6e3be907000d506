"""The nftables backend's decisions with a fake nft (no kernel): full/partial, recreation, failures, defaults.

Also `podnet proxy render --mode nftables [--layout kube-proxy]` (pure: files in, script out).
"""

from __future__ import annotations

import importlib.util
from dataclasses import replace

import pytest
from typer.testing import CliRunner

from podnet.cli.main import app
from podnet.proxy.config import KubeProxyConfiguration
from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName
from podnet.proxy.nftables.backend import NftablesBackend
from podnet.proxy.nftables.nft import NftError, TableObjects
from podnet.proxy.settings import LocalDetector, ProxierSettings
from tests.unit.proxy.proxy_golden_support import SHARED_GOLDEN

S = ProxierSettings(node_name="n1", node_ip="10.0.0.1", node_ips=("10.0.0.1",),
                    local_detector=LocalDetector.by_cidr("10.244.0.0/16"), node_port_cidrs=("10.0.0.1/32",))


class FakeNft:
    """Records scripts; fails the scripts a test asks it to; reports a table listing."""

    uses_binding = False

    def __init__(self, listing: TableObjects | None = None) -> None:
        self.scripts: list[str] = []
        self.isolated: list[bool] = []
        self.listing = listing
        self.fail_next = 0

    def run(self, script: str, *, isolated: bool = False) -> None:
        self.scripts.append(script)
        self.isolated.append(isolated)
        if self.fail_next:
            self.fail_next -= 1
            raise NftError("nft transaction failed: Error: Could not process rule: File exists")

    def list_table(self, family: str, table: str) -> TableObjects | None:
        return self.listing


def sp(i: int, eps: int = 2) -> ServicePort:
    name = ServicePortName("ns", f"s{i}", "p", "TCP")
    return ServicePort(name=name, cluster_ip=f"10.96.0.{i + 1}", port=80,
                       endpoints=tuple(Endpoint(ip=f"10.244.0.{10 * i + j + 2}", port=8080) for j in range(eps)))


def state(*ports: ServicePort) -> DesiredState:
    return DesiredState("n1", services={p.name: p for p in ports})


def test_whole_table_loads_run_in_a_child_and_partial_syncs_in_the_binding() -> None:
    # libnftables' allocations for a whole table stay in the caller's heap: full loads go to `nft -f -`.
    nft = FakeNft(None)
    b = NftablesBackend(nft=nft)  # type: ignore[arg-type]
    b.full_sync(state(sp(0)), S)
    b.partial_sync(state(sp(0)), state(sp(0), sp(1)), S, False)
    assert nft.isolated == [True, False]
    nft.listing, nft.fail_next = TableObjects(frozenset({"old-chain"}), frozenset(), frozenset()), 1
    b.full_sync(state(sp(0)), S)  # refused in place: the table is recreated, in a child as well
    assert nft.isolated[2:] == [True, True] and "delete table ip podnet" in nft.scripts[-1]


def test_first_full_sync_of_an_empty_node_just_loads() -> None:
    nft = FakeNft(None)
    b = NftablesBackend(nft=nft)  # type: ignore[arg-type]
    assert b.needs_full
    b.full_sync(state(sp(0)), S)
    assert len(nft.scripts) == 1 and nft.scripts[0].startswith("add table ip podnet")
    assert "delete" not in nft.scripts[0] and not b.needs_full


def test_full_sync_removes_what_the_kernel_has_beyond_the_desired_state() -> None:
    nft = FakeNft(TableObjects(frozenset({"services", "cluster-tcp-40", "endpoint-X-ns/old/tcp/p__1.2.3.4/80"}),
                               frozenset({"affinity-X-ns/old/tcp/p__1.2.3.4/80", "cluster-ips"}), frozenset()))
    b = NftablesBackend(nft=nft)  # type: ignore[arg-type]
    b.full_sync(state(sp(0)), S)
    tail = nft.scripts[0].splitlines()[-5:]
    assert tail == [
        "flush chain ip podnet cluster-tcp-40",
        "flush chain ip podnet endpoint-X-ns/old/tcp/p__1.2.3.4/80",
        "delete chain ip podnet cluster-tcp-40",
        "delete chain ip podnet endpoint-X-ns/old/tcp/p__1.2.3.4/80",
        "delete set ip podnet affinity-X-ns/old/tcp/p__1.2.3.4/80",
    ]


def test_table_that_cannot_be_converged_is_recreated_in_one_transaction() -> None:
    nft = FakeNft(TableObjects(frozenset({"services"}), frozenset(), frozenset()))
    nft.fail_next = 1
    b = NftablesBackend(nft=nft)  # type: ignore[arg-type]
    b.full_sync(state(sp(0)), S)
    assert nft.scripts[1].startswith("add table ip podnet\ndelete table ip podnet\nadd table ip podnet")
    assert not b.needs_full


def test_failed_full_sync_on_an_empty_node_raises_and_keeps_needing_a_full_sync() -> None:
    nft = FakeNft(None)
    nft.fail_next = 1
    b = NftablesBackend(nft=nft)  # type: ignore[arg-type]
    with pytest.raises(NftError):
        b.full_sync(state(sp(0)), S)
    assert b.needs_full


def test_partial_sync_sends_only_element_changes_and_failure_forces_full() -> None:
    nft = FakeNft(None)
    b = NftablesBackend(nft=nft)  # type: ignore[arg-type]
    b.full_sync(state(sp(0), sp(1)), S)
    b.partial_sync(state(sp(1)), state(sp(1, 3)), S, False)
    script = nft.scripts[-1]
    assert b.last_partial_element_only and "10.96.0.2 . tcp . 80 . 2" in script and "10.96.0.1 " not in script
    nft.fail_next = 1
    with pytest.raises(NftError) as err:
        b.partial_sync(state(sp(1, 3)), state(sp(1, 1)), S, False)
    assert err.value.partial and b.needs_full


def test_partial_sync_with_other_node_settings_asks_for_a_full_one() -> None:
    b = NftablesBackend(nft=FakeNft(None))  # type: ignore[arg-type]
    b.full_sync(state(sp(0)), S)
    with pytest.raises(NftError):
        b.partial_sync(state(sp(0)), state(sp(0, 1)), replace(S, masquerade_all=True), False)
    assert b.needs_full


def test_node_ports_default_to_the_primary_ip_in_nftables_mode() -> None:
    assert NftablesBackend.adjust_config(KubeProxyConfiguration()).node_port_addresses == ["primary"]
    cfg = KubeProxyConfiguration(nodePortAddresses=["0.0.0.0/0"])
    assert NftablesBackend.adjust_config(cfg).node_port_addresses == ["0.0.0.0/0"]


# ---------------------------------------------------------------------------------------------------
# podnet proxy render --mode nftables


def render(*args: str):
    return CliRunner().invoke(app, ["proxy", "render", *args], standalone_mode=False, catch_exceptions=True)


@pytest.mark.skipif(not (SHARED_GOLDEN / "compare_helpers.py").exists(), reason="shared/ golden folder absent")
def test_render_kube_proxy_layout_equals_the_golden_file() -> None:
    spec = importlib.util.spec_from_file_location("kp_compare_nft", SHARED_GOLDEN / "compare_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)  # type: ignore[union-attr]
    case = SHARED_GOLDEN / "nftables-syncrepeated-1-initial.input.yaml"
    res = render("--mode", "nftables", "--layout", "kube-proxy", "-f", str(case))
    assert res.exit_code == 0, res.output
    expected = (SHARED_GOLDEN / "nftables-syncrepeated-1-initial.expected.txt").read_text()
    assert helpers.sort_nftables_transaction(res.output) == helpers.sort_nftables_transaction(expected)


def test_render_podnet_layout_from_objects(tmp_path) -> None:
    objects = tmp_path / "objs.yaml"
    objects.write_text("""
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec: {type: NodePort, clusterIP: 10.96.0.10, ports: [{name: http, port: 80, nodePort: 30080}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.5]}, {addresses: [10.244.2.5]}]
ports: [{name: http, port: 8080}]
""")
    facts = tmp_path / "facts.yaml"
    facts.write_text("nodeName: n1\nnodeIPs: [192.168.0.7, 192.168.1.7]\n")
    res = render("--mode", "nftables", "-f", str(objects), "--host-facts", str(facts))
    assert res.exit_code == 0, res.output
    out = res.output
    assert "add element ip podnet service-ips { 10.96.0.10 . tcp . 80 : goto cluster-tcp-2 }" in out
    assert "tcp . 30080 . 1 : 10.244.2.5 . 8080" in out
    # kube-proxy's nftables default: NodePorts on the primary node IP only
    assert "add element ip podnet nodeport-ips { 192.168.0.7 }" in out


def test_render_rejects_unknown_mode_and_layout() -> None:
    res = render("--mode", "ipvs", "--layout", "fancy", "-f", "/nonexistent.yaml")
    assert res.exit_code != 0
    text = str(res.exception)
    assert "--mode: 'ipvs'" in text and "--layout: 'fancy'" in text
