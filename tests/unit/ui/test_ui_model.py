"""The page's view of a lab: nodes with their devices and pods, Services with the chains and shares that
podnet's iptables renderer writes for the same objects."""

from __future__ import annotations

import re

import pytest

from podnet.proxy.iptables import render as iptables
from podnet.proxy.tracker import desired_state_from_objects
from podnet.ui import model

from .ui_fixtures import endpoint, facts, node, pod, service, slice_, three_node_objects


def _rendered_chains(objects: dict[str, list[dict]]) -> dict[str, tuple[str, dict[str, tuple[str, float]]]]:
    """From the restore text podnet's proxy would load on node1: Service -> (KUBE-SVC chain, {endpoint:
    (KUBE-SEP chain, share)}), the share being what the chain's statistic rules leave for each endpoint."""
    flat = [o for kind in ("Service", "EndpointSlice", "Node") for o in objects[kind]]
    text = iptables.render(desired_state_from_objects(flat, "node1")).text
    svc_chain: dict[str, str] = {}
    for m in re.finditer(r'-A KUBE-SERVICES -m comment --comment "(\S+) cluster IP" .* -j (KUBE-SVC-\w+)', text):
        svc_chain[m.group(1)] = m.group(2)
    out = {}
    for ref, chain in svc_chain.items():
        rules = re.findall(rf'-A {chain} -m comment --comment "\S+ -> (\S+)"(?: -m statistic --mode random '
                           r'--probability ([0-9.]+))? -j (KUBE-SEP-\w+)', text)
        left, eps = 1.0, {}
        for ep, p, sep in rules:
            share = left * (float(p) if p else 1.0)
            left -= share
            eps[ep] = (sep, share)
        out[ref] = (chain, eps)
    return out


def test_chains_and_shares_are_the_renderers() -> None:
    objects = three_node_objects()
    view = model.build(facts(), objects)
    rendered = _rendered_chains(objects)
    assert set(rendered) == {"default/web", "default/web-np", "default/outside:http"}
    for s in view.services:
        (port,) = s.ports
        chain, eps = rendered[s.ref + (f":{port.name}" if port.name else "")]
        assert port.chain == chain
        with_chain = {e.address: (e.chain, e.share) for e in port.endpoints if e.chain}
        assert set(with_chain) == set(eps)
        for addr, (sep, share) in eps.items():
            assert with_chain[addr][0] == sep
            assert with_chain[addr][1] == pytest.approx(share)


def test_endpoints_point_at_their_pods_and_unready_ones_get_nothing() -> None:
    view = model.build(facts(), three_node_objects())
    web = next(s for s in view.services if s.name == "web")
    eps = {e.address: e for e in web.ports[0].endpoints}
    assert eps["10.244.1.2:80"].pod == "default/web-a" and eps["10.244.1.2:80"].share == pytest.approx(0.5)
    assert eps["10.244.2.2:80"].pod == "default/web-b" and eps["10.244.2.2:80"].node == "node2"
    gone = eps["10.244.3.2:80"]
    assert (gone.ready, gone.terminating, gone.share, gone.chain) == (False, True, 0.0, "")
    outside = next(s for s in view.services if s.name == "outside")
    (ep,) = outside.ports[0].endpoints
    assert ep.pod == "" and ep.share == 1.0 and ep.chain.startswith("KUBE-SEP-")
    np = next(s for s in view.services if s.name == "web-np")
    assert np.type == "NodePort" and np.ports[0].node_port == 30080


def test_a_service_without_endpoints_has_no_chain() -> None:
    objects = three_node_objects()
    objects["Service"].append(service("empty", "10.96.0.20", [{"port": 81, "protocol": "TCP"}], selector={"a": "b"}))
    view = model.build(facts(), objects)
    empty = next(s for s in view.services if s.name == "empty")
    assert empty.ports[0].chain == "" and empty.ports[0].endpoints == ()


def test_nodes_carry_their_subnet_bridge_and_overlay_device() -> None:
    view = model.build(facts("vxlan", vni=4), three_node_objects())
    assert [n.name for n in view.nodes] == ["node1", "node2", "node3"]
    n1 = view.nodes[0]
    assert (n1.internal_ip, n1.netns, n1.subnet) == ("192.168.77.11", "pn-t1.node1", "10.244.1.0/24")
    assert (n1.bridge, n1.bridge_address) == ("cni0", "10.244.1.1/24")
    assert (n1.overlay.device, n1.overlay.address) == ("flannel.4", "10.244.1.0/32")
    assert "aa:bb:cc:00:00:01" in n1.overlay.detail
    assert [p.name for p in n1.pods] == ["client", "web-a"]
    assert [p.name for p in view.unscheduled] == ["waiting"]
    assert view.nodes[2].pods[0].terminating


@pytest.mark.parametrize(("backend", "device", "address"), [("udp", "flannel0", "10.244.1.0/16"),
                                                             ("host-gw", "eth0", "")])
def test_other_backends(backend: str, device: str, address: str) -> None:
    n1 = model.build(facts(backend), three_node_objects()).nodes[0]
    assert (n1.overlay.kind, n1.overlay.device, n1.overlay.address) == (backend, device, address)


def test_the_lease_wins_over_subnet_env_and_subnet_env_is_the_fallback() -> None:
    f = facts(leases=False)
    view = model.build(f, three_node_objects())
    assert view.nodes[1].subnet == "10.244.2.0/24"  # from FLANNEL_SUBNET=10.244.2.1/24
    moved = model.LeaseFact("10.244.77.0/24", "192.168.77.12", "vxlan", {"VNI": 1})
    view = model.build(model.LabFacts(**{**f.__dict__, "leases": (moved,)}), three_node_objects())
    assert view.nodes[1].subnet == "10.244.77.0/24" and view.nodes[1].bridge_address == "10.244.77.1/24"


def test_a_bad_object_is_a_warning_not_a_blank_picture() -> None:
    objects = three_node_objects()
    objects["Service"].append(service("bad", "10.96.0.30", [{"port": 99999, "protocol": "TCP"}]))
    objects["EndpointSlice"].append({"kind": "EndpointSlice", "metadata": {"name": "x", "namespace": "default"}})
    view = model.build(facts(), objects)
    assert any("Service default/bad" in w for w in view.warnings)
    assert any("EndpointSlice default/x" in w for w in view.warnings)
    assert {s.name for s in view.services} >= {"web", "web-np", "outside"}


def test_nodes_sort_by_number_and_pods_of_unknown_nodes_are_unscheduled() -> None:
    objects = {"Node": [node(f"node{i}", f"192.168.77.{10 + i}") for i in (10, 2, 1)],
               "Pod": [pod("p", "gone", "10.244.9.9")], "Service": [], "EndpointSlice": []}
    view = model.build(facts(nodes=10), objects)
    assert [n.name for n in view.nodes] == ["node1", "node2", "node10"]
    assert [p.ref for p in view.unscheduled] == ["default/p"]


def test_internal_traffic_policy_local_names_the_svl_chain() -> None:
    objects = three_node_objects()
    objects["Service"] = [service("loc", "10.96.0.40", [{"port": 80, "protocol": "TCP"}], selector={"app": "web"},
                                  internalTrafficPolicy="Local")]
    objects["EndpointSlice"] = [slice_("loc", [endpoint("10.244.1.2", "node1")],
                                       [{"name": "", "port": 80, "protocol": "TCP"}])]
    (s,) = model.build(facts(), objects).services
    assert s.ports[0].chain.startswith("KUBE-SVL-")
