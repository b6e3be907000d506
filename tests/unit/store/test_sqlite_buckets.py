"""The SQLite store's bucket table (store/buckets.py): written in the transaction of every object write,
so it always says what buckets_of says of the objects stored."""

from __future__ import annotations

import json
import secrets
import sqlite3
import time
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.store import keys
from podnet.store.base import Delete, Put
from podnet.store.buckets import Bucket, buckets_of
from podnet.store.sqlite import SqliteStore


def expected(store: SqliteStore) -> dict[Bucket, set[str]]:
    """The buckets, recomputed from every stored object."""
    out: dict[Bucket, set[str]] = {}
    for kv in store.list("/").items:
        for b in buckets_of(kv.key, kv.value):
            out.setdefault(b, set()).add(kv.key)
    return out


def held(store: SqliteStore, buckets: list[Bucket]) -> dict[Bucket, set[str]]:
    out = {b: {kv.key for kv in store.bucket_members([b])} for b in buckets}
    return {b: ks for b, ks in out.items() if ks}


def table(store: SqliteStore) -> set[tuple[str, str]]:
    with sqlite3.connect(store.path) as conn:
        return set(conn.execute("SELECT bucket, key FROM buckets"))


_NS = st.sampled_from(["a", "b"])
_LABELS = st.dictionaries(st.sampled_from(["app", "tier", "kubernetes.io/service-name"]),
                          st.sampled_from(["web", "db", "x"]), max_size=3)


@st.composite
def _object(draw: st.DrawFn) -> tuple[str, bytes]:
    kind = draw(st.sampled_from(["Pod", "Service", "EndpointSlice", "Node", "Deployment"]))
    name = draw(st.sampled_from(["web", "db", "web-1a2b3", "web-9f8e7"]))
    key = keys.resource(kind, None if kind == "Node" else draw(_NS), name)
    how = draw(st.sampled_from(["labels", "selector", "both", "bad-json", "labels-not-a-map"]))
    labels, selector = draw(_LABELS), draw(_LABELS)
    if how == "bad-json":
        return key, b'{"metadata": {"labels": {"app": "web"'
    if how == "labels-not-a-map":
        return key, json.dumps({"metadata": {"labels": ["app", "web"]}}).encode()
    doc: dict[str, object] = {"metadata": {"name": name}}
    if how in ("labels", "both"):
        doc["metadata"] = {"name": name, "labels": labels}
    if how in ("selector", "both"):
        doc["spec"] = {"selector": selector}
    return key, json.dumps(doc).encode()


_STEP = st.one_of(
    st.tuples(st.just("put"), st.lists(_object(), min_size=1, max_size=3, unique_by=lambda kv: kv[0])),
    st.tuples(st.just("delete"), st.lists(_object(), min_size=1, max_size=2, unique_by=lambda kv: kv[0])),
    st.tuples(st.just("lease"), st.lists(_object(), min_size=1, max_size=2, unique_by=lambda kv: kv[0])),
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=8))
def test_the_bucket_table_matches_the_objects_after_any_writes(tmp_path: Path, steps) -> None:  # type: ignore[no-untyped-def]
    store = SqliteStore(f"sqlite://{tmp_path}/{secrets.token_hex(4)}.db")
    try:
        for what, objs in steps:
            if what == "put":
                store.commit([Put(k, v) for k, v in objs])
            elif what == "delete":
                store.commit([Delete(k) for k, _ in objs])
            else:  # written on a lease, which is then revoked: the keys go, and their buckets with them
                lease = store.grant(30)
                store.commit([Put(k, v, lease=lease) for k, v in objs])
                store.revoke(lease)
            want = expected(store)
            universe = list(want) + [b for _, objs2 in steps for k, v in objs2 for b in buckets_of(k, v)]
            assert held(store, universe) == want
            assert {key for _, key in table(store)} <= {kv.key for kv in store.list("/").items}
    finally:
        store.close()


def test_an_expired_lease_takes_its_keys_buckets_with_it(tmp_path: Path) -> None:
    store = SqliteStore(f"sqlite://{tmp_path}/s.db")
    try:
        key = keys.resource("Pod", "a", "web")
        lease = store.grant(0.2)
        store.put(key, b'{"metadata":{"labels":{"app":"web"}}}', lease=lease)
        assert [kv.key for kv in store.bucket_members([("pod", "a", "app", "web")])] == [key]
        deadline = time.monotonic() + 10
        while store.get(key) is not None and time.monotonic() < deadline:
            time.sleep(0.05)
        assert store.get(key) is None
        assert store.bucket_members([("pod", "a", "app", "web")]) == [] and table(store) == set()
    finally:
        store.close()


def test_a_schema_1_file_gets_its_buckets_when_opened(tmp_path: Path) -> None:
    """A store file written before the bucket table existed: the first open fills it in from kv."""
    path = tmp_path / "old.db"
    store = SqliteStore(f"sqlite://{path}")
    pods = {keys.resource("Pod", "a", f"p{i}"): {"app": "web" if i % 2 else "db"} for i in range(20)}
    for key, labels in pods.items():
        store.put(key, json.dumps({"metadata": {"labels": labels}}).encode())
    store.put(keys.resource("Service", "a", "web"), b'{"spec":{"selector":{"app":"web","tier":"fe"}}}')
    store.close()
    with sqlite3.connect(path) as conn:  # what a schema-1 file looks like
        conn.execute("DROP TABLE buckets")
        conn.execute("UPDATE meta SET value=1 WHERE name='schema'")
    reopened = SqliteStore(f"sqlite://{path}")
    try:
        web = {kv.key for kv in reopened.bucket_members([("pod", "a", "app", "web")])}
        assert web == {k for k, labels in pods.items() if labels["app"] == "web"}
        assert [kv.key for kv in reopened.bucket_members([("selector", "a", "app", "web")])] == [
            keys.resource("Service", "a", "web")]
        assert reopened.bucket_sizes([("pod", "a", "app", "db"), ("pod", "a", "app", "nope")]) == {
            ("pod", "a", "app", "db"): 10}
    finally:
        reopened.close()


def test_many_buckets_in_one_question(tmp_path: Path) -> None:
    """More buckets than one statement binds are asked in chunks; every member comes back once."""
    store = SqliteStore(f"sqlite://{tmp_path}/s.db")
    try:
        store.commit([Put(keys.resource("Pod", "a", f"p{i}"), json.dumps(
            {"metadata": {"labels": {"n": str(i), "all": "yes"}}}).encode()) for i in range(1200)])
        asked: list[Bucket] = [("pod", "a", "n", str(i)) for i in range(1200)] + [("pod", "a", "all", "yes")]
        got = store.bucket_members(asked)
        assert len(got) == 1200 and len({kv.key for kv in got}) == 1200
        assert [kv.key for kv in got] == sorted(kv.key for kv in got)
        sizes = store.bucket_sizes(asked)
        assert sizes[("pod", "a", "all", "yes")] == 1200 and sizes[("pod", "a", "n", "7")] == 1
    finally:
        store.close()
