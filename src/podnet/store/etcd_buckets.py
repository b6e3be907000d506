"""The planner's buckets (store/buckets.py) kept in etcd beside the objects, so a one-shot `podnet apply`
on etcd reads them instead of listing namespaces (issue 16, goal 7), as it does on SQLite.

A bucket member is an empty key `/podnet/buckets/<bucket as JSON><object key>`, carrying the object's
lease so both expire together. The JSON array ends at its closing bracket and object keys start with "/",
so a bucket's prefix never matches another bucket's members.

The invariant is that the members are a *superset* of the truth at every revision; readers filter:
- A put writes the buckets of its new value in the same Txn as the object (etcd.py's _txn), so an object
  is never missing from a bucket it belongs to. When that would pass etcd's 128 operations per Txn, the
  buckets are written first in Txns of their own: members of an object not (yet) there are filtered out.
- The buckets an object left (a relabel, a delete) are found from the Txn's prev_kv and removed in a
  second Txn that holds only while the object is still as written (compare on its mod_revision, or
  version 0 after a delete); if it moved on, the candidates are checked against what it is now. A crash
  between the two leaves stale members, which cost space and a filter, never a wrong answer.
- bucket_members reads the members and the objects at one revision and keeps only the objects whose
  bytes put them in a bucket asked for. bucket_sizes counts members: a hint for the smallest bucket.

Data written before this existed: the first store that is asked (`keeps_buckets`) fills the buckets in
from a listing of the indexed kinds, each object guarded by its mod_revision, then writes the marker.
Writers always keep them, marker or not.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from aetcd import rpc

from podnet.store import keys
from podnet.store.base import KeyValue, LeaseNotFound, StoreError
from podnet.store.buckets import Bucket, buckets_of, encode, indexed

if TYPE_CHECKING:
    from podnet.store.etcd import EtcdStore

log = logging.getLogger(__name__)

MAX_TXN_OPS = 128  # etcd's --max-txn-ops default: a Txn's compares, successes and failures, each
_PREFIX = keys.BUCKETS_PREFIX.encode()
_KINDS = ("Pod", "Service", "EndpointSlice", "Node")


def prefix(bucket: Bucket) -> bytes:
    return _PREFIX + encode(bucket).encode()


def member_key(bucket: Bucket, key: str) -> bytes:
    return prefix(bucket) + key.encode()


def member_puts(key: str, value: bytes, lease: int) -> list[Any]:
    """The Txn operations that put key's buckets for this value (none for a kind without buckets)."""
    if not indexed(key):
        return []
    return [rpc.RequestOp(request_put=rpc.PutRequest(key=member_key(b, key), value=b"", lease=lease))
            for b in buckets_of(key, value)]


def left(key: str, prev: Any, new_value: bytes | None) -> set[Bucket]:
    """Buckets key was in (prev: etcd's prev_kv, or None) and is not in with new_value (None: deleted)."""
    if prev is None or not indexed(key):
        return set()
    now = set(buckets_of(key, new_value)) if new_value is not None else set()
    return set(buckets_of(key, bytes(prev.value))) - now


def _txn(store: EtcdStore, req: Any, what: str) -> Any:
    def call(ep: Any, t: float) -> Any:
        return ep.kv.Txn(req, timeout=t, metadata=store.metadata())

    return store._run(what, call, mutating=True)[0]


def prune(store: EtcdStore, key: str, candidates: set[Bucket], mod_revision: int) -> None:
    """Delete key's members of `candidates` while key is still at mod_revision (0: absent); if it moved on,
    keep those of its buckets now and try again."""
    k = key.encode()
    for _ in range(5):
        if not candidates:
            return
        if mod_revision:
            cmp = rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=mod_revision)
        else:
            cmp = rpc.Compare(key=k, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0)
        todo = sorted(candidates)
        moved = None
        for i in range(0, len(todo), MAX_TXN_OPS):
            req = rpc.TxnRequest(
                compare=[cmp],
                success=[rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=member_key(b, key)))
                         for b in todo[i:i + MAX_TXN_OPS]],
                failure=[rpc.RequestOp(request_range=rpc.RangeRequest(key=k))])
            resp = _txn(store, req, f"prune buckets of {key}")
            if not resp.succeeded:
                kvs = resp.responses[0].response_range.kvs
                moved = kvs[0] if kvs else None
                break
        else:
            return
        candidates = candidates - (set(buckets_of(key, bytes(moved.value))) if moved is not None else set())
        mod_revision = int(moved.mod_revision) if moved is not None else 0
    log.warning("buckets of %s: the key kept changing; stale members stay (filtered on read)", key)


def write_ahead(store: EtcdStore, puts: list[Any]) -> None:
    """Bucket puts too many to ride in the object's Txn: written first, MAX_TXN_OPS at a time."""
    for i in range(0, len(puts), MAX_TXN_OPS):
        req = rpc.TxnRequest(success=puts[i:i + MAX_TXN_OPS])
        try:
            _txn(store, req, "write buckets")
        except StoreError as exc:
            if "lease not found" in str(exc):
                lease = next((op.request_put.lease for op in puts if op.request_put.lease), 0)
                raise LeaseNotFound(lease) from exc
            raise


# ---- reads ----------------------------------------------------------------------------------------


def _range(store: EtcdStore, req: Any, what: str) -> Any:
    def call(ep: Any, t: float) -> Any:
        return ep.kv.Range(req, timeout=t, metadata=store.metadata())

    return store._run(what, call)[0]


def _member_keys(store: EtcdStore, bucket: Bucket, revision: int) -> tuple[list[str], int]:
    start = prefix(bucket)
    end = _prefix_end(start)
    skip = len(start)
    found: list[str] = []
    while True:
        resp = _range(store, rpc.RangeRequest(key=start, range_end=end, keys_only=True, limit=1000,
                                              revision=revision), f"bucket {encode(bucket)}")
        revision = revision or int(resp.header.revision)
        found.extend(kv.key[skip:].decode() for kv in resp.kvs)
        if not resp.more or not resp.kvs:
            return found, revision
        start = resp.kvs[-1].key + b"\0"


def _prefix_end(p: bytes) -> bytes:
    return p[:-1] + bytes([p[-1] + 1])  # bucket prefixes end in "]" (0x5d), never 0xff


def members(store: EtcdStore, buckets: list[Bucket]) -> list[KeyValue]:
    """The objects in any of these buckets, each once, in key order, read at one revision."""
    for _ in range(3):
        try:
            return _members_once(store, buckets)
        except StoreError as exc:
            if "compacted" not in str(exc):
                raise
    return _members_once(store, buckets)


def _members_once(store: EtcdStore, buckets: list[Bucket]) -> list[KeyValue]:
    from podnet.store.etcd import _kv

    revision = 0
    via: dict[str, set[Bucket]] = {}
    for b in dict.fromkeys(buckets):
        found, revision = _member_keys(store, b, revision)
        for key in found:
            via.setdefault(key, set()).add(b)
    out: list[KeyValue] = []
    for key in sorted(via):
        resp = _range(store, rpc.RangeRequest(key=key.encode(), revision=revision), f"get {key}")
        if resp.kvs:
            kv = _kv(resp.kvs[0])
            if via[key] & set(buckets_of(kv.key, kv.value)):
                out.append(kv)
    return out


def sizes(store: EtcdStore, buckets: list[Bucket]) -> dict[Bucket, int]:
    """Members per bucket (absent: none), counted at one revision; stale members count too (a hint)."""
    out: dict[Bucket, int] = {}
    revision = 0
    for b in dict.fromkeys(buckets):
        start = prefix(b)
        resp = _range(store, rpc.RangeRequest(key=start, range_end=_prefix_end(start), count_only=True,
                                              revision=revision), f"bucket {encode(b)}")
        revision = revision or int(resp.header.revision)
        if resp.count:
            out[b] = int(resp.count)
    return out


# ---- data from before the buckets ---------------------------------------------------------------------


def ready(store: EtcdStore) -> bool:
    """Whether the buckets are complete; fills them in (once per cluster) if the marker is missing."""
    if store.get(keys.BUCKETS_READY) is not None:
        return True
    filled = 0
    for kind in _KINDS:
        for kv in store.list(keys.kind_prefix(kind)).items:
            filled += _fill(store, kv)
    store.put(keys.BUCKETS_READY, b"1")
    log.info("etcd: filled in the planner's buckets of %d stored objects", filled)
    return True


def _fill(store: EtcdStore, kv: KeyValue) -> int:
    puts = member_puts(kv.key, kv.value, kv.lease)
    if not puts:
        return 0
    cmp = rpc.Compare(key=kv.key.encode(), target=rpc.Compare.MOD, result=rpc.Compare.EQUAL,
                      mod_revision=kv.mod_revision)
    for i in range(0, len(puts), MAX_TXN_OPS):
        req = rpc.TxnRequest(compare=[cmp], success=puts[i:i + MAX_TXN_OPS])
        try:
            resp = _txn(store, req, f"fill buckets of {kv.key}")
        except StoreError as exc:
            if "lease not found" in str(exc):
                return 0  # the object expired meanwhile, and its buckets are not needed
            raise
        if not resp.succeeded:
            return 0  # written since the listing: by a writer that keeps buckets
    return 1
