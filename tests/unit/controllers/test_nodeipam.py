"""Node IPAM's decision (kube-controller-manager's range allocator): lowest free /24 per node without one."""

from __future__ import annotations

from typing import Any

from podnet.controllers.nodeipam import assign


def _n(cidr: str | None = None) -> dict[str, Any]:
    return {"spec": {"podCIDR": cidr, "podCIDRs": [cidr]} if cidr else {}}


def test_nodes_without_a_cidr_get_the_lowest_free_ones_in_name_order() -> None:
    nodes = {"node3": _n(), "node1": _n("10.244.1.0/24"), "node2": _n()}
    assert assign("10.244.0.0/16", nodes) == {"node2": "10.244.0.0/24", "node3": "10.244.2.0/24"}


def test_assigned_cidrs_are_kept_and_exhaustion_stops_assigning() -> None:
    nodes = {"a": _n("10.0.0.0/25"), "b": _n(), "c": _n()}
    assert assign("10.0.0.0/24", nodes, mask=25) == {"b": "10.0.0.128/25"}
    assert assign("10.0.0.0/24", {"a": _n("10.0.0.0/24")}) == {}
