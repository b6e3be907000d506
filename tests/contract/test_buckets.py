"""Contract: the planner's buckets (store/buckets.py) as every backend keeps them. After any puts, deletes,
relabels and lease revokes, bucket_members returns exactly the stored objects that buckets_of puts in the
buckets asked for, and bucket_sizes counts them (SQLite: a table written in the object's transaction;
etcd: member keys written in the object's Txn, pruned from prev_kv)."""

from __future__ import annotations

import json
import secrets
from typing import Any, cast

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.controllers.writeindex import BucketStore
from podnet.store import Delete, Put, Store, keys
from podnet.store.buckets import Bucket, buckets_of


def _b(store: Store) -> BucketStore:
    assert getattr(store, "keeps_buckets", False)
    return cast(BucketStore, store)


_LABELS = st.dictionaries(st.sampled_from(["app", "tier", "kubernetes.io/service-name"]),
                          st.sampled_from(["web", "db", "x"]), max_size=3)


@st.composite
def _object(draw: st.DrawFn) -> tuple[str, str, str, str, dict[str, str], dict[str, str]]:
    kind = draw(st.sampled_from(["Pod", "Service", "EndpointSlice", "Node", "Deployment"]))
    ns = draw(st.sampled_from(["a", "b"]))
    name = draw(st.sampled_from(["web", "db", "web-1a2b3", "web-9f8e7"]))
    how = draw(st.sampled_from(["labels", "selector", "both", "bad-json", "labels-not-a-map"]))
    return kind, ns, name, how, draw(_LABELS), draw(_LABELS)


def _materialise(tag: str, obj: tuple[str, str, str, str, dict[str, str], dict[str, str]]) -> tuple[str, bytes]:
    """The drawn object under this test's own namespaces (and node names), as key and JSON bytes."""
    kind, ns, name, how, labels, selector = obj
    key = keys.resource(kind, None, f"{tag}-{name}") if kind == "Node" else keys.resource(kind, f"{ns}-{tag}", name)
    if how == "bad-json":
        return key, b'{"metadata": {"labels": {"app": "web"'
    if how == "labels-not-a-map":
        return key, json.dumps({"metadata": {"labels": ["app", "web"]}}).encode()
    doc: dict[str, Any] = {"metadata": {"name": name}}
    if how in ("labels", "both"):
        doc["metadata"] = {"name": name, "labels": labels}
    if how in ("selector", "both"):
        doc["spec"] = {"selector": selector}
    return key, json.dumps(doc).encode()


def _mine(tag: str, key: str) -> bool:
    return f"-{tag}/" in key or key.rsplit("/", 1)[-1].startswith(f"{tag}-")


def _expected(store: Store, tag: str) -> dict[Bucket, set[str]]:
    out: dict[Bucket, set[str]] = {}
    for kind in ("Pod", "Service", "EndpointSlice", "Node"):
        for kv in store.list(keys.kind_prefix(kind)).items:
            if _mine(tag, kv.key):
                for b in buckets_of(kv.key, kv.value):
                    out.setdefault(b, set()).add(kv.key)
    return out


_STEP = st.tuples(st.sampled_from(["put", "delete", "lease"]), st.lists(_object(), min_size=1, max_size=3))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=6))
def test_buckets_hold_exactly_the_objects_buckets_of_puts_there(store: Store, steps: Any) -> None:
    tag = secrets.token_hex(3)
    universe: set[Bucket] = set()
    for what, drawn in steps:
        objs = dict(_materialise(tag, o) for o in drawn)  # one op per key
        universe |= {b for k, v in objs.items() for b in buckets_of(k, v)}
        if what == "put":
            store.commit([Put(k, v) for k, v in objs.items()])
        elif what == "delete":
            store.commit([Delete(k) for k in objs])
        else:  # written on a lease, which is then revoked: the keys go, and their buckets with them
            lease = store.grant(30)
            store.commit([Put(k, v, lease=lease) for k, v in objs.items()])
            store.revoke(lease)
        want = _expected(store, tag)
        asked = sorted(universe | set(want))
        got = {b: {kv.key for kv in _b(store).bucket_members([b]) if _mine(tag, kv.key)} for b in asked}
        assert {b: ks for b, ks in got.items() if ks} == want
        together = _b(store).bucket_members(asked)
        assert [kv.key for kv in together] == sorted({kv.key for kv in together})
        assert {kv.key for kv in together if _mine(tag, kv.key)} == set().union(*want.values())
        for kv in together:  # the bytes of each member as stored now
            current = store.get(kv.key)
            assert current is not None and current.value == kv.value
        sizes = _b(store).bucket_sizes([b for b in asked if b != ("node",)])
        assert sizes == {b: len(ks) for b, ks in want.items() if b != ("node",)}


def test_a_relabelled_pod_leaves_its_old_bucket_and_joins_the_new(store: Store) -> None:
    ns = f"r-{secrets.token_hex(3)}"
    key = keys.resource("Pod", ns, "p")
    store.put(key, json.dumps({"metadata": {"labels": {"app": "web"}}}).encode())
    web, db = ("pod", ns, "app", "web"), ("pod", ns, "app", "db")
    assert [kv.key for kv in _b(store).bucket_members([web])] == [key]
    store.put(key, json.dumps({"metadata": {"labels": {"app": "db"}}}).encode())
    assert _b(store).bucket_members([web]) == []
    assert [kv.key for kv in _b(store).bucket_members([db])] == [key]
    assert _b(store).bucket_sizes([web, db]) == {db: 1}
    store.delete(key)
    assert _b(store).bucket_members([web, db]) == [] and _b(store).bucket_sizes([web, db]) == {}


def test_a_pod_with_more_labels_than_one_etcd_txn_holds_is_in_every_bucket(store: Store) -> None:
    """200 labels: more bucket puts than etcd's 128 operations per Txn (written ahead there)."""
    ns = f"m-{secrets.token_hex(3)}"
    key = keys.resource("Pod", ns, "many")
    labels = {f"l{i}": "v" for i in range(200)}
    store.put(key, json.dumps({"metadata": {"labels": labels}}).encode())
    asked: list[Bucket] = [("pod", ns, f"l{i}", "v") for i in range(200)]
    assert [kv.key for kv in _b(store).bucket_members(asked)] == [key]
    assert _b(store).bucket_sizes(asked) == {b: 1 for b in asked}
    store.put(key, json.dumps({"metadata": {"labels": {"l0": "v"}}}).encode())
    assert _b(store).bucket_sizes(asked) == {asked[0]: 1}
    store.delete(key)
    assert _b(store).bucket_sizes(asked) == {}
