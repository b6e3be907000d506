"""The lab's namespace-name grammar: every name says which lab it belongs to, and no two things share one."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from podnet.lab import topology
from podnet.lab.topology import lab_of_netns, teardown_rank

LAB = st.from_regex(topology.LAB_NAME_RE, fullmatch=True)
DNS_LABEL = st.from_regex(r"[a-z0-9]([a-z0-9-]{0,20}[a-z0-9])?", fullmatch=True)
POD_NAME = st.from_regex(r"[a-z0-9]([a-z0-9.-]{0,70}[a-z0-9])?", fullmatch=True)


@given(LAB, LAB, DNS_LABEL, POD_NAME)
def test_every_namespace_names_its_own_lab_only(a, b, ns, pod):
    spec = topology.build(a, 2)
    names = [spec.underlay_netns, *(n.netns for n in spec.node_specs), spec.pod_netns(ns, pod)]
    for name in names:
        assert lab_of_netns(name) == a
        assert (lab_of_netns(name) == b) == (a == b)


def test_a_prefix_of_another_lab_name_claims_nothing_of_it():
    other = topology.build("web-b", 1)
    for name in (other.underlay_netns, other.node_specs[0].netns, other.pod_netns("default", "x")):
        assert lab_of_netns(name) == "web-b"
        assert lab_of_netns(name) != "web"


def test_pods_whose_names_joined_with_dashes_agree_get_different_namespaces():
    spec = topology.build("lab", 1)
    assert spec.pod_netns("a-b", "c") != spec.pod_netns("a", "b-c")
    long = "x" * 70
    assert spec.pod_netns("a", long) != spec.pod_netns("a", long + "y")
    assert len(spec.pod_netns("a", long)) <= 60


def test_removal_order_pods_then_nodes_then_underlay():
    spec = topology.build("lab", 1)
    assert teardown_rank(spec.pod_netns("default", "node1")) == 0
    assert teardown_rank(spec.pod_netns("default", "x" * 80)) == 0
    assert teardown_rank(spec.node_specs[0].netns) == 1
    assert teardown_rank(spec.underlay_netns) == 2
    assert lab_of_netns("pn-x-3f9a1c") is None  # a test's namespace is no lab's
