"""The planner's indexes: which stored objects one write touches, without listing namespaces.

The planner (controllers/apply.py) asks an index two things: the stored objects in some buckets
(store/buckets.py says what a bucket is), and which of some buckets is smallest. Two kinds answer:

- `WriteIndex`, the long-running writer's watch cache (the API server keeps one), as kube-apiserver keeps
  its watch cache and kube-controller-manager its informers: every Pod, Service, EndpointSlice and Node
  as stored (key, bytes, revisions), filed in buckets. Fresh enough to plan from: `caught_up()` waits
  until the index has applied every commit up to the store revision read at that moment (a few tenths
  of a millisecond behind the commit, by the store's watch), so a plan never misses a write that
  finished before it began. It follows the store's whole key space ("/") so that every revision reaches
  it as an event, and counts a revision as applied only when the watch says all of that commit's events
  were delivered (Watch.done_through): a reader never sees half a commit. After a gap (compaction,
  store restart) it lists again; until then caught_up() is False and the planner reads the store itself.
  It works on either store. An object whose JSON does not parse is kept (its key and revision still
  matter to a conditional write) in no bucket.
- `StoreIndex`, a store's own bucket table (the SQLite store writes it in the transaction of every
  object, so it is never behind): what a one-shot `podnet apply` uses. etcd keeps no such table.

`index_for` picks: the writer's WriteIndex if it has one, else the store's own, else none (the planner
lists).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Protocol, cast

from podnet.store.base import CompactedError, Event, KeyValue, Store, StoreError, Watch
from podnet.store.buckets import Bucket, buckets_of, indexed

log = logging.getLogger(__name__)

ROOT = "/"  # every key podnet or flannel writes starts with it


class Index(Protocol):
    def caught_up(self, timeout: float = 1.0) -> bool: ...
    def members(self, buckets: Iterable[Bucket]) -> list[KeyValue]: ...
    def smallest(self, buckets: Iterable[Bucket]) -> Bucket | None: ...


class WriteIndex:
    """See the module docstring. start() it, pass it to apply_objects/delete_objects, stop() it."""

    def __init__(self, store: Store, *, name: str = "write index") -> None:
        self.store = store
        self.name = name
        self._cond = threading.Condition()
        self._kvs: dict[str, KeyValue] = {}
        self._member: dict[str, tuple[Bucket, ...]] = {}
        self._buckets: dict[Bucket, set[str]] = {}
        self._done = -1  # every commit up to this revision is applied; -1 while (re)listing
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None
        self.relists = 0

    # ---- lifecycle

    def start(self) -> WriteIndex:
        self._thread = threading.Thread(target=self._run, name=f"podnet-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._cond:
            watch = self._watch
            self._cond.notify_all()
        if watch is not None:
            watch.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def __enter__(self) -> WriteIndex:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- reads (any thread)

    def caught_up(self, timeout: float = 1.0) -> bool:
        """True once every commit up to the store's current revision is applied here (False on timeout,
        while re-listing, or if the store cannot be read: the caller then reads the store itself)."""
        try:
            target = self.store.revision()
        except StoreError:
            return False
        with self._cond:
            return self._cond.wait_for(lambda: self._done >= target or self._stop.is_set(), timeout) \
                and not self._stop.is_set()

    @property
    def revision(self) -> int:
        with self._cond:
            return self._done

    def get(self, key: str) -> KeyValue | None:
        with self._cond:
            return self._kvs.get(key)

    def members(self, buckets: Iterable[Bucket]) -> list[KeyValue]:
        """The stored objects in any of these buckets, each once, in key order."""
        with self._cond:
            found: set[str] = set()
            for b in buckets:
                found |= self._buckets.get(b, set())
            return [self._kvs[k] for k in sorted(found)]

    def smallest(self, buckets: Iterable[Bucket]) -> Bucket | None:
        """Of these buckets, the one with the fewest members (None if none is given)."""
        with self._cond:
            return min(buckets, key=lambda b: len(self._buckets.get(b, ())), default=None)

    # ---- the loop

    def _run(self) -> None:
        pause = 0.1
        while not self._stop.is_set():
            try:
                listed = self.store.list(ROOT)
                self._load(listed.items, listed.revision)
                pause = 0.1
                watch = self.store.watch(ROOT, listed.revision + 1)
                with self._cond:
                    self._watch = watch
                if self._stop.is_set():
                    watch.close()
                    break
                for event in watch:
                    if self._stop.is_set():
                        break
                    self._apply(event, getattr(watch, "done_through", event.revision - 1))
                else:
                    if not self._stop.is_set():
                        log.warning("%s: watch ended at revision %d; listing again", self.name, self._done)
            except CompactedError as exc:
                log.info("%s: %s; listing again", self.name, exc)
            except Exception as exc:  # noqa: BLE001 - the index must outlive surprises; the planner falls back
                log.warning("%s: %s; listing again in %.1fs", self.name, exc, pause)
                self._stop.wait(pause)
                pause = min(pause * 2, 2.0)
            finally:
                with self._cond:
                    open_watch, self._watch = self._watch, None
                    self._done = -1
                    self.relists += 1
                if open_watch is not None:
                    open_watch.close()

    def _load(self, items: list[KeyValue], revision: int) -> None:
        with self._cond:
            self._kvs.clear()
            self._member.clear()
            self._buckets.clear()
            for kv in items:
                if indexed(kv.key):
                    self._put(kv)
            self._done = revision
            self._cond.notify_all()

    def _apply(self, event: Event, done_through: int) -> None:
        with self._cond:
            if indexed(event.key):
                prev = self._kvs.get(event.key)
                self._remove(event.key)
                if event.type == "put":
                    self._put(KeyValue(event.key, event.value or b"",
                                       prev.create_revision if prev is not None else event.revision,
                                       event.revision))
            if done_through > self._done:
                self._done = done_through
                self._cond.notify_all()

    def _put(self, kv: KeyValue) -> None:
        self._kvs[kv.key] = kv
        member = buckets_of(kv.key, kv.value)
        self._member[kv.key] = member
        for b in member:
            self._buckets.setdefault(b, set()).add(kv.key)

    def _remove(self, key: str) -> None:
        self._kvs.pop(key, None)
        for b in self._member.pop(key, ()):
            s = self._buckets.get(b)
            if s is not None:
                s.discard(key)
                if not s:
                    del self._buckets[b]


class BucketStore(Protocol):
    """A store that keeps the bucket table itself (SqliteStore)."""

    keeps_buckets: bool

    def bucket_members(self, buckets: list[Bucket]) -> list[KeyValue]: ...
    def bucket_sizes(self, buckets: list[Bucket]) -> dict[Bucket, int]: ...


class StoreIndex:
    """A store's own bucket table as the planner's index. Each read is one snapshot of the store as
    committed, so it is always caught up."""

    def __init__(self, store: BucketStore) -> None:
        self.store = store

    def caught_up(self, timeout: float = 1.0) -> bool:
        return True

    def members(self, buckets: Iterable[Bucket]) -> list[KeyValue]:
        return self.store.bucket_members(list(buckets))

    def smallest(self, buckets: Iterable[Bucket]) -> Bucket | None:
        wanted = list(buckets)
        sizes = self.store.bucket_sizes(wanted)
        return min(wanted, key=lambda b: sizes.get(b, 0), default=None)


def index_for(store: Store, index: Index | None) -> Index | None:
    """The index a plan on this store reads: the writer's own, else the store's bucket table if it keeps
    one (SQLite), else None (the planner lists namespaces)."""
    if index is not None:
        return index
    if getattr(store, "keeps_buckets", False):
        return StoreIndex(cast(BucketStore, store))
    return None
