"""Contract: leases. Keys attached to a lease vanish, with delete events, when it expires or is revoked.

TTLs are 2 s: etcd rounds shorter TTLs up to its minimum (about 1.5 s with the default heartbeat).
"""

from __future__ import annotations

import time
from typing import Any

import pytest

from podnet.store import LeaseNotFound, Put, Store

TTL = 2

ORPHAN = """
import sys
from podnet.store import open_store
url, prefix, ttl = sys.argv[1], sys.argv[2], float(sys.argv[3])
s = open_store(url)
lease = s.grant(ttl)
s.put(prefix + "a", b"held-a", lease=lease)
s.put(prefix + "b", b"held-b", lease=lease)
print(lease)
s.close()  # and exit without revoke or keepalive, as a crashed daemon would
"""


def test_expired_lease_removes_its_keys_with_delete_events(store: Store, store_url: str, ns: str,
                                                           collect: Any, procs: Any) -> None:
    store.put(ns + "free", b"no lease")
    r0 = store.revision()
    c = collect(store.watch(ns, r0 + 1))
    started = time.monotonic()
    lease = int(procs.run(ORPHAN, store_url, ns, str(TTL)).strip())
    kv = store.get(ns + "a")
    if time.monotonic() - started < TTL * 0.75:  # the child may have been slow to start
        assert kv is not None and kv.lease == lease
    # nobody keeps the lease alive: the store must expire it on its own
    events = c.wait_count(4, timeout=TTL + 6)
    assert [(e.type, e.key, e.value) for e in events[:2]] == [("put", ns + "a", b"held-a"), ("put", ns + "b", b"held-b")]
    deletes = events[2:]
    assert sorted((e.type, e.key, e.prev_value) for e in deletes) == [
        ("delete", ns + "a", b"held-a"), ("delete", ns + "b", b"held-b"),
    ]
    assert deletes[0].revision <= deletes[1].revision
    assert store.get(ns + "a") is None and store.get(ns + "b") is None
    assert [kv.key for kv in store.list(ns).items] == [ns + "free"]
    with pytest.raises(LeaseNotFound):
        store.keepalive(lease)
    with pytest.raises(LeaseNotFound):
        store.put(ns + "late", b"x", lease=lease)
    assert store.get(ns + "late") is None


def test_keepalive_extends_the_lease(store: Store, ns: str) -> None:
    lease = store.grant(TTL)
    store.put(ns + "k", b"v", lease=lease)
    deadline = time.monotonic() + TTL * 1.6  # well past the first expiry
    while time.monotonic() < deadline:
        time.sleep(0.4)
        assert store.keepalive(lease) >= TTL - 0.5
        kv = store.get(ns + "k")
        assert kv is not None and kv.lease == lease
    store.revoke(lease)
    assert store.get(ns + "k") is None


def test_revoke_deletes_keys_in_one_revision_with_events(store: Store, ns: str, collect: Any) -> None:
    lease = store.grant(60)
    store.commit([Put(ns + "a", b"1", lease=lease), Put(ns + "b", b"2", lease=lease)])
    store.put(ns + "c", b"3")
    r = store.revision()
    c = collect(store.watch(ns, r + 1))
    store.revoke(lease)
    events = c.wait_count(2)
    assert sorted((e.type, e.key, e.prev_value) for e in events) == [
        ("delete", ns + "a", b"1"), ("delete", ns + "b", b"2"),
    ]
    assert {e.revision for e in events} == {r + 1}
    assert store.revision() == r + 1
    assert [kv.key for kv in store.list(ns).items] == [ns + "c"]
    with pytest.raises(LeaseNotFound):
        store.keepalive(lease)
    store.revoke(lease)  # revoking a lease that is gone is not an error


def test_put_with_unknown_lease_fails_and_writes_nothing(store: Store, ns: str) -> None:
    lease = store.grant(60)
    store.revoke(lease)
    r = store.revision()
    with pytest.raises(LeaseNotFound):
        store.put(ns + "a", b"x", lease=lease)
    assert store.get(ns + "a") is None
    assert store.revision() == r


def test_put_without_lease_detaches_the_key(store: Store, ns: str) -> None:
    lease = store.grant(60)
    store.put(ns + "a", b"1", lease=lease)
    store.put(ns + "b", b"1", lease=lease)
    store.put(ns + "a", b"2")  # etcd: a put without a lease detaches the key from its old lease
    kv = store.get(ns + "a")
    assert kv is not None and kv.lease == 0
    store.revoke(lease)
    assert [(kv.key, kv.value) for kv in store.list(ns).items] == [(ns + "a", b"2")]


def test_leases_are_independent(store: Store, ns: str) -> None:
    l1, l2 = store.grant(60), store.grant(60)
    assert l1 > 0 and l2 > 0 and l1 != l2
    store.put(ns + "one", b"1", lease=l1)
    store.put(ns + "two", b"2", lease=l2)
    store.revoke(l1)
    assert [kv.key for kv in store.list(ns).items] == [ns + "two"]
    assert store.keepalive(l2) >= 59
    store.revoke(l2)
    assert store.list(ns).items == []
