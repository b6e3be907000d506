"""WriteIndex: the write path's watch cache (controllers/writeindex.py) and the planner reading from it."""

from __future__ import annotations

import queue
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.api import load_objects
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.endpoints import ready_addresses, sync_ops
from podnet.controllers.writeindex import WriteIndex
from podnet.store import Event, ListResult, Put, keys, open_store
from podnet.store.buckets import buckets_of
from tests.unit.controllers.conftest import ListingStore
from tests.unit.controllers.test_apply import SVC, CountingStore, ns_yaml, pod_yaml, slices


@pytest.fixture
def index(store):  # type: ignore[no-untyped-def]
    ix = WriteIndex(store).start()
    try:
        assert ix.caught_up(10)
        yield ix
    finally:
        ix.stop()


def _svc(name: str, app: str) -> str:
    return SVC.replace("name: web", f"name: {name}").replace("app: web", f"app: {app}")


def _pod(name: str, ip: str, app: str) -> str:
    return pod_yaml(name, ip).replace("app: web", f"app: {app}")


# ---- buckets_of

def test_buckets_of_each_kind() -> None:
    pod = keys.resource("Pod", "ns1", "p")
    assert buckets_of(pod, b'{"metadata":{"labels":{"b":"2","a":"1","n":3}}}') == (
        ("pod", "ns1", "a", "1"), ("pod", "ns1", "b", "2"))  # non-string values are no labels
    svc = keys.resource("Service", "ns1", "s")
    assert buckets_of(svc, b'{"spec":{"selector":{"tier":"fe","app":"web"}}}') == (("selector", "ns1", "app", "web"),)
    assert buckets_of(svc, b'{"spec":{}}') == ()  # selector-less: selects no pod
    es = keys.resource("EndpointSlice", "ns1", "web-1a2b3")
    assert buckets_of(es, b'{"metadata":{"labels":{"kubernetes.io/service-name":"web"}}}') == (
        ("stem", "ns1", "web"), ("slice", "ns1", "web"))
    assert buckets_of(keys.resource("Node", None, "n1"), b"not json") == (("node",),)
    assert buckets_of(pod, b"{not json") == ()
    assert buckets_of(keys.resource("ConfigMap", "ns1", "c"), b"{}") == ()


# ---- the index follows the store

def test_index_follows_puts_relabels_and_deletes(store, index) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(_svc("web", "web") + "---" + _pod("a", "10.32.0.5", "web")))
    assert index.caught_up()
    pod_key = keys.resource("Pod", "default", "a")
    assert [kv.key for kv in index.members([("pod", "default", "app", "web")])] == [pod_key]
    assert [kv.key for kv in index.members([("selector", "default", "app", "web")])] == [
        keys.resource("Service", "default", "web")]
    (es,) = index.members([("slice", "default", "web")])
    assert es.value == store.get(es.key).value and es.mod_revision == store.get(es.key).mod_revision
    apply_objects(store, load_objects(_pod("a", "10.32.0.5", "api")))
    assert index.caught_up()
    assert index.members([("pod", "default", "app", "web")]) == []
    assert [kv.key for kv in index.members([("pod", "default", "app", "api")])] == [pod_key]
    assert index.get(pod_key) is not None and index.get(pod_key).mod_revision == store.get(pod_key).mod_revision
    delete_objects(store, [("Pod", "default", "a")])
    assert index.caught_up()
    assert index.get(pod_key) is None and index.members([("pod", "default", "app", "api")]) == []


def test_index_lists_again_after_its_watch_ends(store, index) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(_pod("a", "10.32.0.5", "web")))
    assert index.caught_up()
    before = index.relists
    with index._cond:
        watch = index._watch
    assert watch is not None
    watch.close()  # as a broken stream would
    apply_objects(store, load_objects(_pod("b", "10.32.0.6", "web")))
    assert index.caught_up(10)
    assert index.relists > before
    assert [kv.key for kv in index.members([("pod", "default", "app", "web")])] == [
        keys.resource("Pod", "default", "a"), keys.resource("Pod", "default", "b")]


def test_caught_up_never_misses_a_commit_that_finished_before_it(store, index) -> None:  # type: ignore[no-untyped-def]
    """Multi-key commits from another thread land meanwhile: a write this thread finished is always seen,
    and nothing of a commit is seen unless the whole commit is (every p<i> comes with its q<i>)."""
    stop = threading.Event()
    pods = keys.kind_prefix("Pod", "noise")

    def noise() -> None:
        i = 0
        while not stop.is_set():
            store.commit([Put(f"{pods}p{i}", b'{"metadata":{"labels":{"g":"x"}}}'),
                          Put(f"{pods}q{i}", b'{"metadata":{"labels":{"g":"x"}}}')])
            i += 1

    t = threading.Thread(target=noise)
    t.start()
    try:
        for i in range(150):
            key = keys.resource("Pod", "default", f"w{i}")
            # the key looked for is the last of a 30-key commit: seen only if the whole commit is
            store.commit([*(Put(keys.resource("Pod", "default", f"v{i}-{j}"), b"{}") for j in range(29)),
                          Put(key, b'{"metadata":{"labels":{"w":"%d"}}}' % i)])
            assert index.caught_up(5)
            assert [kv.key for kv in index.members([("pod", "default", "w", str(i))])] == [key]
            with index._cond:  # one consistent look at what the index holds
                names = {k.rsplit("/", 1)[1] for k in index._buckets.get(("pod", "noise", "g", "x"), set())}
                done = index._done
            target = store.revision()
            assert done <= target
    finally:
        stop.set()
        t.join()
    assert names, "the noise writer never ran"


class _FakeWatch:
    """Events handed in by the test, with the done_through the test says."""

    def __init__(self) -> None:
        self.q: queue.Queue[tuple[Event, int] | None] = queue.Queue()
        self.done_through = 10

    def __iter__(self) -> Iterator[Event]:
        while (item := self.q.get()) is not None:
            ev, self.done_through = item
            yield ev

    def close(self) -> None:
        self.q.put(None)


class _FakeStore:
    def __init__(self) -> None:
        self.rev = 10
        self.w = _FakeWatch()

    def list(self, prefix: str) -> ListResult:
        return ListResult([], 10)

    def watch(self, prefix: str, from_revision: int) -> _FakeWatch:
        return self.w

    def revision(self) -> int:
        return self.rev


def test_caught_up_waits_for_the_last_event_of_a_commit() -> None:
    fake = _FakeStore()
    ix = WriteIndex(fake).start()  # type: ignore[arg-type]
    try:
        assert ix.caught_up(5)
        a, b = keys.resource("Pod", "default", "a"), keys.resource("Pod", "default", "b")
        fake.rev = 11  # one commit of two puts
        fake.w.q.put((Event("put", a, b"{}", 11), 10))
        for _ in range(500):
            if ix.get(a) is not None:
                break
            time.sleep(0.01)
        assert ix.get(a) is not None and not ix.caught_up(0.2)  # a is there, but b of the same commit is not
        fake.w.q.put((Event("put", b, b"{}", 11), 11))
        assert ix.caught_up(5) and ix.get(b) is not None
    finally:
        ix.stop()


def test_stored_values_no_parser_can_read_leave_the_index_and_the_planner_working(store, index) -> None:  # type: ignore[no-untyped-def]
    """Raw store contents may be anything: not JSON, JSON of the wrong shape, or nested past Python's
    recursion limit (well inside the 1.5 MiB value limit). Such an object is in no bucket; nothing stops."""
    apply_objects(store, load_objects(_svc("web", "web")))
    bad = {"deep": b'{"metadata":{"labels":{"app":"web"}},"x":' + b"[" * 200_000 + b"]" * 200_000 + b"}", "cut": b'{"metadata":' * 100_000, "list": b"[1]",
           "labels": b'{"metadata":{"labels":["app","web"]}}', "bytes": b"\xff\xfe"}
    for name, value in bad.items():
        store.put(keys.resource("Pod", "default", name), value)
        store.put(keys.resource("Service", "default", f"bad-{name}"), value)
    apply_objects(store, load_objects(_pod("a", "10.32.0.5", "web")), index=index)
    assert index.caught_up(5) and index.relists == 0
    assert [kv.key for kv in index.members([("pod", "default", "app", "web")])] == [keys.resource("Pod", "default", "a")]
    for use in (index, None):  # the planner's own pre-filter reads the same bytes without the index
        apply_objects(store, load_objects(_svc("web", "web").replace("port: 80", "port: 81")), index=use)
        apply_objects(store, load_objects(_pod("b", "10.32.0.6", "web")), index=use)
    assert ready_addresses([es for es in slices(store) if es.service_name == "web"], "http") == [
        "10.32.0.5:8080", "10.32.0.6:8080"]


def test_a_stopped_index_makes_the_planner_read_the_store(store) -> None:  # type: ignore[no-untyped-def]
    ix = WriteIndex(store).start()
    assert ix.caught_up(10)
    ix.stop()
    apply_objects(store, load_objects(_svc("web", "web") + "---" + _pod("a", "10.32.0.5", "web")), index=ix)
    assert ready_addresses(slices(store), "http") == ["10.32.0.5:8080"]


# ---- the planner with an index

def test_with_an_index_one_pod_apply_lists_nothing(store, index) -> None:  # type: ignore[no-untyped-def]
    n = 60
    apply_objects(store, load_objects("---".join(_svc(f"s{i}", f"s{i}") for i in range(n))))
    apply_objects(store, load_objects("---".join(_pod(f"p{i}", f"10.32.1.{i + 1}", f"s{i}") for i in range(n))))
    counting = CountingStore(store)
    apply_objects(counting, load_objects(_pod("p7", "10.32.1.8", "s8")), index=index)  # s7 -> s8
    delete_objects(counting, [("Pod", "default", "p9")], index=index)
    apply_objects(counting, load_objects(_svc("new", "s3")), index=index)
    assert counting.lists == []
    assert sync_ops(store) == []
    got = {es.service_name: ready_addresses([es], "http") for es in slices(store)}
    assert got["s7"] == [] and got["s8"] == ["10.32.1.8:8080", "10.32.1.9:8080"] and got["s9"] == []
    assert got["new"] == ["10.32.1.4:8080"]


def test_without_an_index_the_sqlite_bucket_table_makes_one_pod_apply_list_nothing(tmp_path: Path) -> None:
    """`podnet apply` keeps no index: on SQLite the planner reads the store's own bucket table instead."""
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        n = 60
        apply_objects(s, load_objects("---".join(_svc(f"s{i}", f"s{i}") for i in range(n))))
        apply_objects(s, load_objects("---".join(_pod(f"p{i}", f"10.32.1.{i + 1}", f"s{i}") for i in range(n))))
        counting = CountingStore(s, buckets=True)
        apply_objects(counting, load_objects(_pod("p7", "10.32.1.8", "s8")))  # s7 -> s8
        delete_objects(counting, [("Pod", "default", "p9")])
        apply_objects(counting, load_objects(_svc("new", "s3")))
        assert counting.lists == []
        assert sync_ops(s) == []
        got = {es.service_name: ready_addresses([es], "http") for es in slices(s)}
        assert got["s7"] == [] and got["s8"] == ["10.32.1.8:8080", "10.32.1.9:8080"] and got["s9"] == []
        assert got["new"] == ["10.32.1.4:8080"]
    finally:
        s.close()


def test_a_service_added_while_slices_are_read_is_found(store, index) -> None:  # type: ignore[no-untyped-def]
    """The selector buckets are asked again after the slices were read (outputs before inputs)."""
    apply_objects(store, load_objects(_svc("web", "web") + "---" + _pod("a", "10.32.0.5", "web")))
    real = index.members
    real_caught_up = index.caught_up
    fired: list[int] = []

    def members(buckets: Any) -> Any:
        buckets = list(buckets)
        if any(b[0] == "slice" for b in buckets) and not fired:
            fired.append(1)
            apply_objects(store, load_objects(_svc("late", "web")))  # its slice: pod a on no node
            assert real_caught_up()
        return real(buckets)

    attempts: list[int] = []

    def caught_up(timeout: float = 1.0) -> bool:
        attempts.append(1)  # once per planning attempt
        return real_caught_up(timeout)

    index.members = members  # type: ignore[method-assign]
    index.caught_up = caught_up  # type: ignore[method-assign]
    apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5", node="n1")), index=index)  # a moves to n1
    assert fired and len(attempts) == 1  # late's slice was read before the commit: no conflict, no re-plan
    assert sync_ops(store) == []
    assert {es.service_name: [e.node_name for e in es.endpoints] for es in slices(store)} == {
        "web": ["n1"], "late": ["n1"]}


_NS = st.sampled_from(["pn-cv-a", "pn-cv-b"])
_APP = st.sampled_from(["a0", "a1", None])
_STEP = st.tuples(
    st.one_of(
        st.tuples(st.just("svc"), _NS, st.sampled_from(["s0", "s1"]), _APP),
        st.tuples(st.just("pod"), _NS, st.sampled_from(["p0", "p1", "p2"]), _APP),
        st.tuples(st.just("del-svc"), _NS, st.sampled_from(["s0", "s1"]), st.none()),
        st.tuples(st.just("del-pod"), _NS, st.sampled_from(["p0", "p1", "p2"]), st.none()),
    ),
    # through the index, or a writer that has none (another process, `podnet apply`): on the store's bucket
    # table, or listing (etcd)
    st.sampled_from(["write-index", "bucket-table", "listing"]),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(_STEP, min_size=1, max_size=8))
def test_with_an_index_the_derived_slices_are_up_to_date_after_any_step(tmp_path: Path, steps) -> None:  # type: ignore[no-untyped-def]
    s = open_store(f"sqlite:///{tmp_path}/{secrets.token_hex(4)}.db")
    ix = WriteIndex(s).start()
    try:
        for i, ((what, ns, name, app), path) in enumerate(steps):
            use = ix if path == "write-index" else None
            w = ListingStore(s) if path == "listing" else s
            if what == "svc":
                doc = SVC.replace("name: web", f"name: {name}").replace(
                    "  selector: {app: web}\n", f"  selector: {{app: {app}}}\n" if app else "")
                apply_objects(w, load_objects(ns_yaml(doc, ns)), index=use)
            elif what == "pod":
                doc = pod_yaml(name, f"10.32.0.{i + 1}").replace("labels: {app: web}", f"labels: {{app: {app}}}"
                                                                  if app else "labels: {}")
                apply_objects(w, load_objects(ns_yaml(doc, ns)), index=use)
            else:
                delete_objects(w, [("Service" if what == "del-svc" else "Pod", ns, name)], ignore_not_found=True,
                               index=use)
            assert sync_ops(s) == []
    finally:
        ix.stop()
        s.close()


def test_a_bulk_change_reads_whole_namespaces_not_bucket_by_bucket(tmp_path: Path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    import podnet.controllers.apply as planner

    monkeypatch.setattr(planner, "BULK_CHANGE", 8)
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        apply_objects(s, load_objects("---".join(_svc(f"s{i}", f"s{i}") for i in range(20))))
        counting = CountingStore(s, buckets=True)
        apply_objects(counting, load_objects("---".join(_pod(f"p{i}", f"10.32.1.{i + 1}", f"s{i}") for i in range(4))))
        assert counting.lists == []  # small: from the buckets
        apply_objects(counting, load_objects("---".join(_pod(f"p{i}", f"10.32.1.{i + 1}", f"s{i}") for i in range(20))))
        assert keys.kind_prefix("Service", "default") in counting.lists  # bulk: the namespace listed
        assert sync_ops(s) == []
    finally:
        s.close()
