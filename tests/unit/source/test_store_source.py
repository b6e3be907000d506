"""The store source: the store Informer behind the source contract, selectors evaluated client-side."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from podnet.source.base import Selector
from podnet.source.store import StoreSource
from podnet.store import keys
from podnet.store.sqlite import SqliteStore

SEL = Selector(absent=("service.kubernetes.io/service-proxy-name",))


def _svc(name: str, labels: dict[str, str] | None = None) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": name, "namespace": "default", "labels": labels or {}}}).encode()


def test_an_object_leaving_the_selector_is_a_delete_and_coming_back_an_add(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    seen: list[tuple[str, Any, Any]] = []
    key = keys.resource("Service", "default", "a")
    store.put(key, _svc("a"))
    store.put(keys.resource("Service", "default", "b"), _svc("b", {SEL.absent[0]: "other"}))
    inf = StoreSource(store).informer("Service", lambda d: d["metadata"]["name"],
                                      lambda k, o, n: seen.append((k, o, n)), selector=SEL)
    inf.start()
    try:
        assert inf.wait_synced(5)
        assert list(inf.snapshot().values()) == ["a"]
        store.put(key, _svc("a", {SEL.absent[0]: "other"}))
        store.put(key, _svc("a"))
        store.put(keys.resource("Service", "default", "c"), b"[1, 2]")  # not an object: logged by decode
        rev = store.put(keys.resource("Service", "default", "d"), _svc("d"))
        deadline = time.monotonic() + 10
        while inf.revision < rev and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        inf.stop()
        store.close()
    assert seen == [("add", None, "a"), ("delete", "a", None), ("add", None, "a"), ("add", None, "d")]


def test_field_selector_follows_one_node(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    for n in ("n1", "n2"):
        store.put(keys.resource("Node", None, n), json.dumps({"kind": "Node", "metadata": {"name": n}}).encode())
    inf = StoreSource(store).informer("Node", dict, selector=Selector(fields={"metadata.name": "n2"}))
    with inf:
        assert inf.wait_synced(5)
        assert [d["metadata"]["name"] for d in inf.snapshot().values()] == ["n2"]
    store.close()


def test_patch_node_status_changes_annotations_and_status_only(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite:///{tmp_path}/s.db")
    key = keys.resource("Node", None, "n1")
    store.put(key, json.dumps({"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n1", "labels": {"a": "b"}},
                               "spec": {"podCIDR": "10.244.1.0/24"}}).encode())
    out = StoreSource(store).patch_node_status("n1", {
        "metadata": {"annotations": {"x/y": "1"}, "labels": {"a": "changed"}},
        "spec": {"podCIDR": "10.0.0.0/8"},
        "status": {"conditions": [{"type": "NetworkUnavailable", "status": "False"}]}})
    stored = json.loads(store.get(key).value)  # type: ignore[union-attr]
    store.close()
    assert stored == out
    assert stored["metadata"]["annotations"] == {"x/y": "1"} and stored["metadata"]["labels"] == {"a": "b"}
    assert stored["spec"] == {"podCIDR": "10.244.1.0/24"}
    assert stored["status"]["conditions"] == [{"type": "NetworkUnavailable", "status": "False"}]
