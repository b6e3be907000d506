"""Node lifecycle at lab down / up: pods stop claiming addresses nobody holds; pods of vanished nodes are
replaced (Deployment) or failed (bare), and user changes made meanwhile are never overwritten."""

from __future__ import annotations

import json

import pytest

from podnet.lab import lifecycle
from podnet.store import keys, open_store


@pytest.fixture
def store(tmp_path):
    s = open_store(f"sqlite:///{tmp_path}/s.db")
    yield s
    s.close()


def pod(name: str, node: str, *, owner: str | None = None, phase: str = "Running") -> dict:
    labels = {"app": "web", **({"podnet.io/deployment": owner} if owner else {})}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "c"}]},
            "status": {"phase": phase, "podIP": "10.244.1.5", "podIPs": [{"ip": "10.244.1.5"}],
                       "hostIP": "192.168.77.11", "conditions": [{"type": "Ready", "status": "True"}]}}


def put(store, obj: dict) -> None:
    store.put(keys.resource(obj["kind"], "default", obj["metadata"]["name"]), json.dumps(obj).encode())


def node(store, name: str) -> None:
    store.put(keys.resource("Node", None, name), json.dumps({"apiVersion": "v1", "kind": "Node",
                                                            "metadata": {"name": name}}).encode())


def get(store, name: str) -> dict | None:
    kv = store.get(keys.resource("Pod", "default", name))
    return json.loads(kv.value) if kv else None


def ready(p: dict) -> bool:
    return any(c["type"] == "Ready" and c["status"] == "True" for c in p["status"]["conditions"])


def test_down_clears_addresses_of_the_lab_nodes_pods_only(store):
    put(store, pod("a", "node1"))
    put(store, pod("b", "elsewhere"))
    assert lifecycle.nodes_gone(store, {"node1"}, "went down") == [keys.resource("Pod", "default", "a")]
    a = get(store, "a")
    assert a["status"]["phase"] == "Pending" and a["status"]["reason"] == "NodeLost"
    assert not {"podIP", "podIPs", "hostIP"} & set(a["status"]) and not ready(a)
    assert get(store, "b")["status"]["podIP"] == "10.244.1.5"  # not this lab's node: untouched
    assert lifecycle.nodes_gone(store, {"node1"}, "went down") == []  # idempotent


def test_up_replaces_deployment_pods_and_fails_bare_pods_of_vanished_nodes(store):
    node(store, "node1")
    put(store, pod("kept", "node1"))
    put(store, pod("owned", "node3", owner="web"))
    put(store, pod("bare", "node3"))
    put(store, pod("done", "node3", phase="Succeeded"))
    lifecycle.reconcile(store, {"node1"})
    kept = get(store, "kept")
    assert kept["status"]["phase"] == "Pending" and "podIP" not in kept["status"]  # a new agent starts it
    assert get(store, "owned") is None  # its Deployment creates a replacement on an existing node
    bare = get(store, "bare")
    assert bare["status"]["phase"] == "Failed" and bare["status"]["reason"] == "NodeLost"
    assert "podIP" not in bare["status"] and not ready(bare)
    assert {"type": "DisruptionTarget", "status": "True", "reason": "DeletionByPodGC",
            "message": "node node3 no longer exists"} in bare["status"]["conditions"]
    assert get(store, "done")["status"]["phase"] == "Succeeded"  # terminal pods are left as they are


def test_a_node_of_another_lab_on_the_store_keeps_its_pods(store):
    node(store, "other-node")
    put(store, pod("theirs", "other-node"))
    lifecycle.reconcile(store, {"node1"})
    assert get(store, "theirs")["status"]["phase"] == "Running"
