"""Node IPAM's decision (kube-controller-manager's range allocator): lowest free /24 per node without one,
and on a dual-stack cluster a /24 and a /64, in the cluster CIDRs' order."""

from __future__ import annotations

import ipaddress
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from podnet.controllers.nodeipam import assign


def _n(*cidrs: str) -> dict[str, Any]:
    return {"spec": {"podCIDR": cidrs[0], "podCIDRs": list(cidrs)} if cidrs else {}}


def test_nodes_without_a_cidr_get_the_lowest_free_ones_in_name_order() -> None:
    nodes = {"node3": _n(), "node1": _n("10.244.1.0/24"), "node2": _n()}
    assert assign("10.244.0.0/16", nodes) == {"node2": ["10.244.0.0/24"], "node3": ["10.244.2.0/24"]}


def test_assigned_cidrs_are_kept_and_exhaustion_stops_assigning() -> None:
    nodes = {"a": _n("10.0.0.0/25"), "b": _n(), "c": _n()}
    assert assign("10.0.0.0/24", nodes, mask=25) == {"b": ["10.0.0.128/25"]}
    assert assign("10.0.0.0/24", {"a": _n("10.0.0.0/24")}) == {}


def test_dual_stack_gives_one_subnet_of_each_family_in_order() -> None:
    nodes = {"n1": _n("10.244.0.0/24", "fd00:10:244::/64"), "n2": _n(), "n3": _n()}
    assert assign("10.244.0.0/16,fd00:10:244::/56", nodes) == {
        "n2": ["10.244.1.0/24", "fd00:10:244:1::/64"], "n3": ["10.244.2.0/24", "fd00:10:244:2::/64"]}
    assert assign("fd00:10:244::/56,10.244.0.0/16", {"x": _n()}) == {"x": ["fd00:10:244::/64", "10.244.0.0/24"]}
    assert assign("fd00:10:244::/56", {"x": _n()}, mask6=60) == {"x": ["fd00:10:244::/60"]}


def test_a_family_that_runs_out_stops_both() -> None:
    nodes = {"a": _n("10.0.0.0/24", "fd00::/64"), "b": _n()}
    assert assign("10.0.0.0/23,fd00::/64", nodes) == {}  # IPv4 has room, IPv6 has none: nothing half-given


@given(taken=st.lists(st.integers(0, 15), max_size=8, unique=True), new=st.integers(0, 20))
def test_never_overlaps_and_stays_inside(taken: list[int], new: int) -> None:
    nodes = {f"old{i}": _n(f"10.9.{i}.0/24", f"fd00:9:0:{i:x}::/64") for i in taken}
    nodes |= {f"new{i:02d}": _n() for i in range(new)}
    got = assign("10.9.0.0/20,fd00:9::/60", nodes)
    all_cidrs = [ipaddress.ip_network(c) for d in nodes.values() for c in d["spec"].get("podCIDRs", [])]
    all_cidrs += [ipaddress.ip_network(c) for cs in got.values() for c in cs]
    assert len(got) == min(new, 16 - len(taken))
    for i, a in enumerate(all_cidrs):
        assert a.subnet_of(ipaddress.ip_network("10.9.0.0/20" if a.version == 4 else "fd00:9::/60"))  # type: ignore[arg-type]
        assert not any(a.overlaps(b) for b in all_cidrs[i + 1:] if b.version == a.version)
    assert all([ipaddress.ip_network(c).version for c in cs] == [4, 6] for cs in got.values())
