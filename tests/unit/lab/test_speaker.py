"""The speakers' election (lab/speaker.py): MetalLB layer 2's rules, computed alike on every node."""

from __future__ import annotations

import hashlib
from typing import Any

from podnet.lab.speaker import announcements, winner

LAB = "t1"
POOL = ["192.168.77.192", "192.168.77.193"]


def node(name: str, *, lab: str = LAB, labels: dict[str, str] | None = None, unavailable: bool = False) -> dict[str, Any]:
    conds = [{"type": "NetworkUnavailable", "status": "True"}] if unavailable else []
    return {"metadata": {"name": name, "labels": {"podnet.io/lab": lab, **(labels or {})}},
            "status": {"conditions": conds}}


def svc(name: str = "web", ip: str = "192.168.77.192", etp: str = "Cluster", type_: str = "LoadBalancer") -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "default"},
            "spec": {"type": type_, "externalTrafficPolicy": etp},
            "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}


def slice_(service: str, *eps: tuple[str, bool]) -> dict[str, Any]:
    return {"metadata": {"name": f"{service}-abcde", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": service}},
            "endpoints": [{"addresses": ["10.244.0.9"], "nodeName": n, "conditions": {"ready": r}} for n, r in eps]}


NODES = [node("node1"), node("node2"), node("node3")]


def first_by_hash(nodes: list[str], ip: str) -> str:
    return sorted(nodes, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).hexdigest())[0]


def test_cluster_policy_any_lab_node_may_win_and_every_speaker_agrees() -> None:
    got = announcements([svc()], [slice_("web", ("node3", True))], NODES, LAB, POOL)
    assert got == {"192.168.77.192": (first_by_hash(["node1", "node2", "node3"], "192.168.77.192"), "default/web")}
    assert winner(["node2", "node1", "node3"], "192.168.77.192") == winner(["node3", "node1", "node2"],
                                                                             "192.168.77.192")


def test_local_policy_only_nodes_with_a_serving_endpoint_are_candidates() -> None:
    for ready_on in (["node1"], ["node2"], ["node1", "node3"]):
        slices = [slice_("web", *[(n, True) for n in ready_on], ("node2" if "node2" not in ready_on else "node1", False))]
        (owner, _), = announcements([svc(etp="Local")], slices, NODES, LAB, POOL).values()
        assert owner == first_by_hash(ready_on, "192.168.77.192")


def test_nothing_is_announced_without_a_serving_endpoint_or_outside_the_pool() -> None:
    assert announcements([svc()], [slice_("web", ("node1", False))], NODES, LAB, POOL) == {}
    assert announcements([svc()], [], NODES, LAB, POOL) == {}
    assert announcements([svc(ip="10.0.0.1")], [slice_("web", ("node1", True))], NODES, LAB, POOL) == {}
    assert announcements([svc(type_="NodePort")], [slice_("web", ("node1", True))], NODES, LAB, POOL) == {}


def test_excluded_unavailable_and_other_labs_nodes_never_win() -> None:
    nodes = [node("node1", labels={"node.kubernetes.io/exclude-from-external-load-balancers": ""}),
             node("node2", unavailable=True), node("node3", lab="other"), node("node4")]
    got = announcements([svc()], [slice_("web", ("node1", True))], nodes, LAB, POOL)
    assert got == {"192.168.77.192": ("node4", "default/web")}
