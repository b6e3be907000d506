"""flannel's kube subnet manager: annotation keys and values byte-compatible with flanneld, peers from Nodes."""

from __future__ import annotations

import ipaddress
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from podnet.api.node import Node
from podnet.errors import PodnetError, ValidationError
from podnet.overlay.kubesubnet import (
    Annotations,
    KubeSubnetManager,
    NodeLeaseError,
    lease_of,
    own_annotations,
)
from podnet.overlay.lease import Lease, LeaseEvent
from podnet.overlay.netconf import parse_netconf
from podnet.source.store import StoreSource
from podnet.store import keys
from podnet.store.sqlite import SqliteStore

ANN = Annotations.for_prefix()


@pytest.mark.parametrize(("prefix", "key"), [  # flannel annotations_test.go (shared/reference/flannel-golden-cases.md §7)
    ("flannel.alpha.coreos.com", "flannel.alpha.coreos.com/backend-type"),
    ("flannel.alpha.coreos.com/", "flannel.alpha.coreos.com/backend-type"),
    ("flannel.alpha.coreos.com/prefix", "flannel.alpha.coreos.com/prefix-backend-type"),
    ("flannel.alpha.coreos.com/prefix-", "flannel.alpha.coreos.com/prefix-backend-type"),
    ("org.com", "org.com/backend-type"), ("org9.com", "org9.com/backend-type"), ("org.com/9", "org.com/9-backend-type"),
])
def test_annotation_keys_per_prefix(prefix: str, key: str) -> None:
    assert Annotations.for_prefix(prefix).backend_type == key


@pytest.mark.parametrize("prefix", ["org", "org/", "org/prefix", "org.COM", "org.com/PREFIX"])
def test_bad_prefixes_are_refused(prefix: str) -> None:
    with pytest.raises(ValidationError, match="--kube-annotation-prefix"):
        Annotations.for_prefix(prefix)


def test_own_annotations_are_flanneld_s_bytes() -> None:
    """The reference's example node (flannel.md §3): vxlan, and host-gw's literal "null"."""
    vx = Lease(ipaddress.IPv4Network("10.244.1.0/24"), ipaddress.IPv4Address("192.168.1.10"), backend_type="vxlan",
               backend_data={"VNI": 1, "VtepMAC": "e6:7c:02:8e:e8:7e"})
    assert own_annotations(ANN, vx) == {
        "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"e6:7c:02:8e:e8:7e"}',
        "flannel.alpha.coreos.com/backend-type": "vxlan",
        "flannel.alpha.coreos.com/kube-subnet-manager": "true",
        "flannel.alpha.coreos.com/public-ip": "192.168.1.10",
    }
    hg = Lease(vx.subnet, vx.public_ip, backend_type="host-gw")
    assert own_annotations(ANN, hg)["flannel.alpha.coreos.com/backend-data"] == "null"


def _doc(name: str, cidr: str | None, ann: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": ann or {}},
            "spec": {"podCIDR": cidr} if cidr else {}}


def _node(name: str, cidr: str | None, ann: dict[str, str] | None = None) -> Node:
    return Node.model_validate(_doc(name, cidr, ann))


FLANNELD_NODE = {  # a node annotated by a real flanneld (the reference's example values)
    "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"e6:7c:02:8e:e8:7e"}',
    "flannel.alpha.coreos.com/backend-type": "vxlan",
    "flannel.alpha.coreos.com/kube-subnet-manager": "true",
    "flannel.alpha.coreos.com/public-ip": "192.168.1.10",
}


def test_a_flanneld_node_is_a_peer() -> None:
    lease = lease_of(_node("n2", "10.244.2.0/24", FLANNELD_NODE), ANN)
    assert lease is not None and str(lease.subnet) == "10.244.2.0/24" and str(lease.public_ip) == "192.168.1.10"
    assert lease.backend_type == "vxlan" and lease.backend_data == {"VNI": 1, "VtepMAC": "e6:7c:02:8e:e8:7e"}
    assert lease_of(_node("n3", "10.244.3.0/24"), ANN) is None  # no annotations: not a flannel node (yet)
    assert lease_of(_node("n3", None, FLANNELD_NODE), ANN) is None  # no podCIDR


@pytest.mark.parametrize(("key", "value", "text"), [
    ("flannel.alpha.coreos.com/backend-data", "{VNI:1", "not JSON"),
    ("flannel.alpha.coreos.com/backend-data", "[1]", "not an object"),
    ("flannel.alpha.coreos.com/public-ip", "192.168.1", "not an IPv4"),
])
def test_malformed_annotations_name_the_node(key: str, value: str, text: str) -> None:
    with pytest.raises(NodeLeaseError, match=f"node 'n2'.*{text}"):
        lease_of(_node("n2", "10.244.2.0/24", {**FLANNELD_NODE, key: value}), ANN)


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    yield s
    s.close()


def _put(store: SqliteStore, node: Node) -> int:
    return store.put(keys.resource("Node", None, node.name), json.dumps(node.to_dict()).encode())


def _until(pred: Any, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while not pred():
        assert time.monotonic() < end, "condition not met in time"
        time.sleep(0.02)


def test_manager_waits_for_pod_cidr_annotates_and_follows_peers(store: SqliteStore, caplog: pytest.LogCaptureFixture) -> None:
    conf = parse_netconf(b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    _put(store, _node("n1", None, {"flannel.alpha.coreos.com/public-ip-overwrite": "172.18.0.2"}))
    _put(store, _node("n2", "10.244.2.0/24", FLANNELD_NODE))
    _put(store, _node("bad", "10.244.9.0/24", {**FLANNELD_NODE, "flannel.alpha.coreos.com/public-ip": "x"}))
    m = KubeSubnetManager(StoreSource(store), "n1")
    m.start()
    try:
        with pytest.raises(PodnetError, match='node "n1" pod cidr not assigned'):
            m.wait_for_node(threading.Event(), timeout=0.3)
        _put(store, _node("n1", "10.244.1.0/24", {"flannel.alpha.coreos.com/public-ip-overwrite": "172.18.0.2"}))
        own = m.wait_for_node(threading.Event(), timeout=5)
        lease = m.acquire(conf, own, ipaddress.IPv4Address("192.168.77.11"), backend_type="vxlan",
                          backend_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"})
        assert str(lease.subnet) == "10.244.1.0/24" and str(lease.public_ip) == "172.18.0.2"
        stored = json.loads(store.get(keys.resource("Node", None, "n1")).value)  # type: ignore[union-attr]
        assert stored["metadata"]["annotations"]["flannel.alpha.coreos.com/public-ip"] == "172.18.0.2"
        events: list[LeaseEvent] = []
        m.watch(events.extend)
        assert [(e.type, str(e.lease.subnet)) for e in events] == [("added", "10.244.2.0/24")]
        _put(store, _node("n2", "10.244.2.0/24", {**FLANNELD_NODE, "flannel.alpha.coreos.com/public-ip": "192.168.1.20"}))
        _until(lambda: len(events) == 2)
        assert str(events[1].lease.public_ip) == "192.168.1.20"
        store.delete(keys.resource("Node", None, "n2"))
        _until(lambda: len(events) == 3)
        assert events[2].type == "removed" and str(events[2].lease.public_ip) == "192.168.1.20"
    finally:
        m.stop()
    assert any("node 'bad'" in r.getMessage() for r in caplog.records)


def test_pod_cidr_outside_the_network_is_refused(store: SqliteStore) -> None:
    conf = parse_netconf(b'{"Network": "10.244.0.0/16", "Backend": {"Type": "host-gw"}}')
    m = KubeSubnetManager(StoreSource(store), "n1")
    with pytest.raises(PodnetError, match="doesn't contain \"10.9.0.0/24\" PodCIDR of the \"n1\" node"):
        m.acquire(conf, _node("n1", "10.9.0.0/24"), ipaddress.IPv4Address("1.2.3.4"), backend_type="host-gw",
                  backend_data=None)
