"""Node status as the lab agent posts it (the kubelet's heartbeat) and as the control plane marks a node whose
agent went silent (the node lifecycle controller), on a real store."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from podnet.api import from_json
from podnet.api.node import Node
from podnet.cli.resources import _node_row
from podnet.lab import nodestatus
from podnet.store import Store, keys, open_store

T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
INFO = {"kubeletVersion": "podnet-v9.9.9", "kernelVersion": "6.1.0"}


def node_doc(name: str = "node1", lab: str = "lab1", **status: object) -> dict[str, object]:
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {"podnet.io/lab": lab, "team": "net"},
                         "creationTimestamp": nodestatus.stamp(T0)},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.168.77.11"}], **status}}


@pytest.fixture
def store(tmp_path: Path) -> Store:
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    yield s
    s.close()


def ready(obj: dict) -> dict:  # type: ignore[type-arg]
    return next(c for c in obj["status"]["conditions"] if c["type"] == "Ready")


def test_heartbeat_posts_ready_keeps_the_transition_time_and_other_fields() -> None:
    first = nodestatus.heartbeat(node_doc(), T0, INFO)
    assert ready(first) == {"type": "Ready", "status": "True", "lastHeartbeatTime": "2026-01-02T03:04:05Z",
                            "lastTransitionTime": "2026-01-02T03:04:05Z", "reason": "KubeletReady",
                            "message": "kubelet is posting ready status"}
    later = nodestatus.heartbeat(first, T0 + timedelta(seconds=10), INFO)
    assert ready(later)["lastHeartbeatTime"] == "2026-01-02T03:04:15Z"
    assert ready(later)["lastTransitionTime"] == "2026-01-02T03:04:05Z"  # still Ready since then
    assert later["status"]["nodeInfo"]["kubeletVersion"] == "podnet-v9.9.9"
    assert later["status"]["addresses"] == node_doc()["status"]["addresses"]  # type: ignore[index]
    assert later["metadata"]["labels"]["team"] == "net"
    unregistered = node_doc()
    del unregistered["metadata"]["creationTimestamp"]  # type: ignore[attr-defined]
    assert nodestatus.heartbeat(unregistered, T0, INFO)["metadata"]["creationTimestamp"] == "2026-01-02T03:04:05Z"


def test_a_silent_node_becomes_unknown_after_the_grace_period_and_ready_with_the_next_beat() -> None:
    beating = nodestatus.heartbeat(node_doc(), T0, INFO)
    assert nodestatus.judged(beating, T0 + timedelta(seconds=nodestatus.GRACE)) is None
    marked = nodestatus.judged(beating, T0 + timedelta(seconds=nodestatus.GRACE + 1))
    assert marked is not None
    assert ready(marked) == {"type": "Ready", "status": "Unknown", "lastHeartbeatTime": "2026-01-02T03:04:05Z",
                             "lastTransitionTime": "2026-01-02T03:04:46Z", "reason": "NodeStatusUnknown",
                             "message": "Kubelet stopped posting node status."}
    assert nodestatus.judged(marked, T0 + timedelta(hours=1)) is None  # marked once
    back = nodestatus.heartbeat(marked, T0 + timedelta(minutes=2), INFO)
    assert ready(back)["status"] == "True" and ready(back)["lastTransitionTime"] == "2026-01-02T03:06:05Z"


def test_a_node_that_never_posted_is_unknown_after_the_startup_grace() -> None:
    fresh = node_doc()
    assert nodestatus.judged(fresh, T0 + timedelta(seconds=nodestatus.STARTUP_GRACE)) is None
    marked = nodestatus.judged(fresh, T0 + timedelta(seconds=nodestatus.STARTUP_GRACE + 1))
    assert marked is not None and ready(marked)["reason"] == "NodeStatusNeverUpdated"
    assert ready(marked)["lastHeartbeatTime"] == "2026-01-02T03:04:05Z"  # its creation, as upstream writes it


def test_post_and_monitor_on_a_store_only_touch_this_labs_nodes(store: Store) -> None:
    for name, lab in (("node1", "lab1"), ("node2", "lab1"), ("other", "lab2")):
        store.put(keys.resource("Node", None, name), json.dumps(node_doc(name, lab)).encode())
    assert nodestatus.post(store, "node1", INFO, T0) and nodestatus.post(store, "other", INFO, T0)
    assert not nodestatus.post(store, "node9", INFO, T0)  # no such Node: nothing written
    late = T0 + timedelta(seconds=nodestatus.STARTUP_GRACE + 5)
    assert sorted(nodestatus.monitor(store, "lab1", late)) == ["node1", "node2"]  # node2 never posted
    assert nodestatus.monitor(store, "lab1", late) == []

    def row(name: str) -> list[str]:
        node = from_json(store.get(keys.resource("Node", None, name)).value)  # type: ignore[union-attr]
        assert isinstance(node, Node)
        return _node_row(node, wide=False)

    assert row("node1")[1] == "NotReady" and row("other")[1] == "Ready"  # lab2's node is lab2's business
    assert row("other")[4] == "podnet-v9.9.9"
    nodestatus.post(store, "node1", INFO, late)
    assert row("node1")[1] == "Ready"
