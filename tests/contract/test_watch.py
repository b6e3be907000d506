"""Contract: watches replay ordered events from a revision, live and across processes; compaction."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.store import CompactedError, Delete, Put, Store


def _summary(events: list[Any]) -> list[tuple[str, str, bytes | None, bytes | None]]:
    return [(e.type, e.key, e.value, e.prev_value) for e in events]


def test_watch_replays_history_in_order_with_prev_values(store: Store, ns: str, collect: Any) -> None:
    r0 = store.revision()
    store.put(ns + "a", b"a1")
    store.put(ns + "b", b"b1")
    store.put(ns + "a", b"a2")
    store.delete(ns + "b")
    store.commit([Put(ns + "c", b"c1"), Delete(ns + "a")])
    c = collect(store.watch(ns, r0 + 1))
    events = c.wait_count(6)
    assert _summary(events) == [
        ("put", ns + "a", b"a1", None),
        ("put", ns + "b", b"b1", None),
        ("put", ns + "a", b"a2", b"a1"),
        ("delete", ns + "b", None, b"b1"),
        ("put", ns + "c", b"c1", None),
        ("delete", ns + "a", None, b"a2"),
    ]
    assert [e.revision for e in events] == [r0 + 1, r0 + 2, r0 + 3, r0 + 4, r0 + 5, r0 + 5]


def test_watch_resumes_after_a_revision(store: Store, ns: str, collect: Any) -> None:
    store.put(ns + "k", b"1")
    r = store.put(ns + "k", b"2")
    store.put(ns + "k", b"3")
    store.delete(ns + "k")
    c = collect(store.watch(ns, r + 1))  # everything after r, nothing before
    events = c.wait_count(2)
    assert _summary(events) == [("put", ns + "k", b"3", b"2"), ("delete", ns + "k", None, b"3")]
    assert [e.revision for e in events] == [r + 1, r + 2]
    # the same watch carries on with live writes, still in order
    store.put(ns + "k", b"4")
    events = c.wait_count(3)
    assert _summary(events[2:]) == [("put", ns + "k", b"4", None)]
    assert len(events) == 3


def test_watch_sees_only_its_prefix(store: Store, ns: str, collect: Any) -> None:
    r0 = store.revision()
    c = collect(store.watch(ns + "in/", r0 + 1))
    store.put(ns + "out/x", b"no")
    store.put(ns + "in", b"no")  # the prefix itself without the slash is not under "in/"
    store.put(ns + "in/a", b"yes")
    store.put(ns + "inside", b"no")
    store.put(ns + "in/zz/deep", b"yes")
    events = c.wait_for(lambda evs: any(e.key == ns + "in/zz/deep" for e in evs))
    assert [e.key for e in events] == [ns + "in/a", ns + "in/zz/deep"]
    assert [e.revision for e in events] == [r0 + 3, r0 + 5]


def test_watch_from_now_sees_live_writes(store: Store, ns: str, collect: Any) -> None:
    store.put(ns + "before", b"x")
    r = store.revision()
    c = collect(store.watch(ns, r + 1))
    store.put(ns + "after", b"y")
    events = c.wait_count(1)
    assert _summary(events) == [("put", ns + "after", b"y", None)]
    assert events[0].revision == r + 1


WRITER = """
import sys
from podnet.store import open_store
url, prefix = sys.argv[1], sys.argv[2]
s = open_store(url)
for i in range(5):
    s.put(f"{prefix}{i}", f"v{i}".encode())
s.delete(f"{prefix}0")
s.close()
"""


def test_watch_sees_writes_of_another_process(store: Store, store_url: str, ns: str, collect: Any,
                                             procs: Any) -> None:
    r0 = store.revision()
    c = collect(store.watch(ns, r0 + 1))
    procs.run(WRITER, store_url, ns)
    events = c.wait_count(6, timeout=10)
    assert _summary(events) == [("put", f"{ns}{i}", f"v{i}".encode(), None) for i in range(5)] + [
        ("delete", f"{ns}0", None, b"v0")
    ]
    revs = [e.revision for e in events]
    assert revs == sorted(revs) and len(set(revs)) == 6


def test_two_watches_on_one_store_are_independent(store: Store, ns: str, collect: Any) -> None:
    r0 = store.revision()
    c1 = collect(store.watch(ns, r0 + 1))
    c2 = collect(store.watch(ns + "b", r0 + 1))
    store.put(ns + "a", b"1")
    store.put(ns + "b", b"2")
    assert [e.key for e in c1.wait_count(2)] == [ns + "a", ns + "b"]
    assert [e.key for e in c2.wait_count(1)] == [ns + "b"]
    c1.close()  # closing one watch leaves the other running
    store.put(ns + "b", b"3")
    assert [e.value for e in c2.wait_count(2)] == [b"2", b"3"]


def test_close_ends_iteration(store: Store, ns: str, collect: Any) -> None:
    c = collect(store.watch(ns, store.revision() + 1))
    c.close()
    assert not c._thread.is_alive()
    assert c.error is None


def test_watch_from_a_compacted_revision_raises_with_oldest_kept(store: Store, ns: str, collect: Any) -> None:
    r1 = store.put(ns + "a", b"1")
    store.put(ns + "a", b"2")
    r3 = store.put(ns + "a", b"3")
    store.compact(r3)
    with pytest.raises(CompactedError) as ei:
        # raised when the watch is created or on the first iteration, depending on the backend
        collect(store.watch(ns, r1)).wait_count(1)
    assert ei.value.requested == r1
    assert ei.value.compact_revision >= r3
    # the current state survives compaction; list + watch from its revision is the way back
    res = store.list(ns)
    assert [(kv.key, kv.value) for kv in res.items] == [(ns + "a", b"3")]
    c = collect(store.watch(ns, res.revision + 1))
    store.put(ns + "a", b"4")
    assert _summary(c.wait_count(1)) == [("put", ns + "a", b"4", b"3")]


def test_watch_from_the_compaction_point_still_works(store: Store, ns: str, collect: Any) -> None:
    store.put(ns + "a", b"1")
    r2 = store.put(ns + "a", b"2")
    store.compact(r2)
    # the compaction revision itself is the oldest one still kept
    c = collect(store.watch(ns, r2))
    store.put(ns + "a", b"3")
    events = c.wait_count(2)
    assert [(e.type, e.key, e.value, e.revision) for e in events] == [
        ("put", ns + "a", b"2", r2), ("put", ns + "a", b"3", r2 + 1),
    ]


def test_done_through_never_claims_a_revision_with_events_still_to_come(store: Store, ns: str) -> None:
    """A reader that must not act on half a commit waits on done_through (see base.Watch)."""
    r0 = store.revision()
    store.commit([Put(ns + "a", b"1"), Put(ns + "b", b"1"), Put(ns + "c", b"1")])
    store.put(ns + "d", b"1")
    last = store.commit([Put(ns + "e", b"1"), Delete(ns + "a")])
    w = store.watch(ns, r0 + 1)
    try:
        seen: list[tuple[int, int]] = []
        for ev in w:
            seen.append((ev.revision, w.done_through))  # type: ignore[attr-defined]
            if len(seen) == 6:
                break
    finally:
        w.close()
    revisions = [rev for rev, _ in seen]
    assert revisions == [r0 + 1] * 3 + [r0 + 2] + [r0 + 3] * 2
    for i, (rev, done) in enumerate(seen):
        assert done >= rev - 1, (i, seen)  # everything before this event's revision came before it
        assert all(later > done for later in revisions[i + 1:]), (i, seen)  # nothing at or below done is left
    assert seen[-1][1] >= last  # the last event completes its commit
