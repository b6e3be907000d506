"""Contract: keys, values, revisions, conditional writes and atomic commits (etcd v3 semantics)."""

from __future__ import annotations

from typing import Any

import pytest

from podnet.store import ConflictError, Delete, Put, Store


def test_get_of_missing_key_is_none(store: Store, ns: str) -> None:
    assert store.get(ns + "missing") is None


def test_put_then_get_returns_value_and_revisions(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"one")
    kv = store.get(ns + "a")
    assert kv is not None
    assert (kv.key, kv.value, kv.create_revision, kv.mod_revision, kv.lease) == (ns + "a", b"one", r1, r1, 0)
    r2 = store.put(ns + "a", b"two")
    kv = store.get(ns + "a")
    assert kv is not None
    assert (kv.value, kv.create_revision, kv.mod_revision) == (b"two", r1, r2)


def test_values_are_bytes_and_kept_exactly(store: Store, ns: str) -> None:
    blob = bytes(range(256)) * 4 + b"\x00end"
    store.put(ns + "bin", blob)
    kv = store.get(ns + "bin")
    assert kv is not None and kv.value == blob and isinstance(kv.value, bytes)
    store.put(ns + "empty", b"")
    kv = store.get(ns + "empty")
    assert kv is not None and kv.value == b""


def test_revision_moves_by_exactly_one_per_write(store: Store, ns: str) -> None:
    r0 = store.revision()
    assert store.put(ns + "a", b"1") == r0 + 1
    assert store.put(ns + "b", b"1") == r0 + 2
    assert store.put(ns + "a", b"2") == r0 + 3
    assert store.delete(ns + "b") is True
    assert store.revision() == r0 + 4
    # a commit of several ops is one write
    assert store.commit([Put(ns + "c", b"1"), Put(ns + "d", b"1"), Delete(ns + "a")]) == r0 + 5
    assert store.revision() == r0 + 5
    kc, kd = store.get(ns + "c"), store.get(ns + "d")
    assert kc is not None and kd is not None and kc.mod_revision == kd.mod_revision == r0 + 5


def test_failed_writes_and_noop_deletes_leave_revision(store: Store, ns: str) -> None:
    store.put(ns + "a", b"1")
    r = store.revision()
    with pytest.raises(ConflictError):
        store.put(ns + "a", b"2", if_absent=True)
    with pytest.raises(ConflictError):
        store.commit([Put(ns + "x", b"1"), Put(ns + "a", b"3", if_revision=r - 1)])
    assert store.delete(ns + "never-existed") is False
    assert store.revision() == r


def test_list_prefix_is_sorted_and_exact(store: Store, ns: str) -> None:
    for k in ("p/b", "p/a", "p/c/d", "pa", "p", "q/a"):
        store.put(ns + k, k.encode())
    res = store.list(ns + "p/")
    assert [kv.key for kv in res.items] == [ns + "p/a", ns + "p/b", ns + "p/c/d"]
    assert [kv.value for kv in res.items] == [b"p/a", b"p/b", b"p/c/d"]
    assert res.revision == store.revision()
    assert [kv.key for kv in store.list(ns).items] == sorted(
        ns + k for k in ("p/b", "p/a", "p/c/d", "pa", "p", "q/a")
    )
    assert store.list(ns + "nothing/").items == []


def test_list_revision_is_the_revision_of_the_snapshot(store: Store, ns: str) -> None:
    store.put(ns + "a", b"1")
    res = store.list(ns)
    store.put(ns + "b", b"1")
    assert res.revision == store.revision() - 1
    assert [kv.key for kv in res.items] == [ns + "a"]


def test_delete(store: Store, ns: str) -> None:
    store.put(ns + "a", b"1")
    assert store.delete(ns + "a") is True
    assert store.get(ns + "a") is None
    assert store.delete(ns + "a") is False
    # a key re-created after a delete starts a new life (new create_revision)
    r = store.put(ns + "a", b"2")
    kv = store.get(ns + "a")
    assert kv is not None and kv.create_revision == r


def test_put_only_if_absent(store: Store, ns: str) -> None:
    r = store.put(ns + "a", b"first", if_absent=True)
    with pytest.raises(ConflictError) as ei:
        store.put(ns + "a", b"second", if_absent=True)
    assert ei.value.key == ns + "a"
    kv = store.get(ns + "a")
    assert kv is not None and kv.value == b"first" and kv.mod_revision == r


def test_put_only_if_revision(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"1")
    r2 = store.put(ns + "a", b"2", if_revision=r1)
    with pytest.raises(ConflictError) as ei:
        store.put(ns + "a", b"stale", if_revision=r1)  # someone else already moved it
    assert ei.value.key == ns + "a"
    kv = store.get(ns + "a")
    assert kv is not None and kv.value == b"2" and kv.mod_revision == r2
    # if_revision=0 means "must not exist"
    store.put(ns + "b", b"new", if_revision=0)
    with pytest.raises(ConflictError):
        store.put(ns + "b", b"again", if_revision=0)
    # a revision condition on a missing key fails
    with pytest.raises(ConflictError):
        store.put(ns + "c", b"x", if_revision=r2)
    assert store.get(ns + "c") is None


def test_delete_only_if_revision(store: Store, ns: str) -> None:
    r1 = store.put(ns + "a", b"1")
    store.put(ns + "a", b"2")
    with pytest.raises(ConflictError):
        store.delete(ns + "a", if_revision=r1)
    assert store.get(ns + "a") is not None
    kv = store.get(ns + "a")
    assert kv is not None
    assert store.delete(ns + "a", if_revision=kv.mod_revision) is True
    assert store.get(ns + "a") is None


def test_commit_is_all_or_nothing(store: Store, ns: str) -> None:
    store.put(ns + "taken", b"x")
    store.put(ns + "keep", b"old")
    r = store.revision()
    with pytest.raises(ConflictError) as ei:
        store.commit([
            Put(ns + "new1", b"1"),
            Put(ns + "keep", b"new"),
            Delete(ns + "taken"),
            Put(ns + "new2", b"2", if_absent=True),
            Put(ns + "keep2", b"z", if_revision=r + 100),
        ])
    assert ei.value.key == ns + "keep2"
    assert store.revision() == r
    assert store.get(ns + "new1") is None and store.get(ns + "new2") is None
    kv = store.get(ns + "keep")
    assert kv is not None and kv.value == b"old"
    assert store.get(ns + "taken") is not None


def test_commit_applies_puts_and_deletes_at_one_revision(store: Store, ns: str) -> None:
    store.put(ns + "old", b"x")
    kv_old = store.get(ns + "old")
    assert kv_old is not None
    r = store.commit([
        Put(ns + "a", b"1", if_absent=True),
        Delete(ns + "old", if_revision=kv_old.mod_revision, must_exist=True),
        Put(ns + "b", b"2", if_revision=0),
    ])
    assert [(kv.key, kv.value, kv.mod_revision) for kv in store.list(ns).items] == [
        (ns + "a", b"1", r), (ns + "b", b"2", r),
    ]


def test_commit_delete_must_exist(store: Store, ns: str) -> None:
    r = store.revision()
    with pytest.raises(ConflictError):
        store.commit([Put(ns + "a", b"1"), Delete(ns + "ghost", must_exist=True)])
    assert store.get(ns + "a") is None
    assert store.revision() == r


RACE = """
import sys
from podnet.store import ConflictError, open_store
url, prefix, me, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
s = open_store(url)
s.get(prefix + "warmup")  # connected before the start signal, so the processes really race
print("ready", flush=True)
sys.stdin.readline()
won = []
for i in range(n):
    try:
        s.put(f"{prefix}{i}", me.encode(), if_absent=True)
        won.append(i)
    except ConflictError:
        pass
s.close()
print(",".join(map(str, won)))
"""


def test_processes_racing_only_if_absent_have_exactly_one_winner(store_url: str, store: Store, ns: str,
                                                                  procs: Any) -> None:
    n_procs, n_keys = 4, 25
    children = procs.start_together(RACE, [[store_url, ns, f"p{i}", str(n_keys)] for i in range(n_procs)])
    wins: dict[str, set[int]] = {}
    for i, p in enumerate(children):
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        wins[f"p{i}"] = {int(x) for x in out.strip().split(",") if x}
    for k in range(n_keys):
        winners = [who for who, keys in wins.items() if k in keys]
        assert len(winners) == 1, f"key {k}: winners {winners}"
        kv = store.get(f"{ns}{k}")
        assert kv is not None and kv.value == winners[0].encode()
    assert sum(len(v) for v in wins.values()) == n_keys


INCREMENT = """
import sys
from podnet.store import ConflictError, open_store
url, key, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
s = open_store(url)
s.get(key)
print("ready", flush=True)
sys.stdin.readline()
conflicts = 0
for _ in range(n):
    while True:  # read-modify-write with a revision condition: the allocators' pattern
        kv = s.get(key)
        value, rev = (int(kv.value), kv.mod_revision) if kv else (0, 0)
        try:
            s.put(key, str(value + 1).encode(), if_revision=rev)
            break
        except ConflictError:
            conflicts += 1
s.close()
print(conflicts)
"""


def test_processes_incrementing_with_only_if_revision_lose_no_update(store_url: str, store: Store, ns: str,
                                                                     procs: Any) -> None:
    n_procs, n_each = 4, 15
    r0 = store.revision()
    children = procs.start_together(INCREMENT, [[store_url, ns + "counter", str(n_each)]] * n_procs)
    for p in children:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        print("conflicts seen by one child:", out.strip())
    kv = store.get(ns + "counter")
    assert kv is not None and int(kv.value) == n_procs * n_each
    assert kv.mod_revision - r0 >= n_procs * n_each  # every increment was its own write
