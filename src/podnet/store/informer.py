"""Informer: the one way daemons read the store (list at a revision, then watch from the next one).

Why one shared reader: every daemon needs the same loop, and the hard parts are in the gaps. When the
watch breaks (history compacted, store unreachable) the informer lists again and hands handlers the
*difference* between what they last saw and the new list (adds, updates, deletes), so a handler's view
converges without it ever knowing a gap happened. Handlers receive decoded, typed objects; keys and
bytes stay here. A value that does not decode is logged with its key and skipped: one bad object must
not stop a node's proxy or overlay from following everything else.

The diffing here does not depend on where the values come from: `podnet.source.kube` feeds the same
class from a Kubernetes API server (keys "ns/name", versions resourceVersion, values decoded documents),
so the store and the API give handlers the same contract (podnet.source says what it is).
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable
from typing import Generic, Literal, TypeVar

from podnet.store.base import CompactedError, Event, KeyValue, Store, StoreError, StoreUnavailable, Watch

log = logging.getLogger(__name__)

T = TypeVar("T")
ChangeKind = Literal["add", "update", "delete"]


class NotSelected(Exception):  # noqa: N818 - a signal from decoders, not an error
    """Raised by a decoder for an object outside the informer's selector (labels, fields): the object is
    treated as absent, so one that stops matching reaches handlers as a delete, as a server-side selector
    makes a Kubernetes watch say DELETED."""


class _Skip(enum.Enum):
    """What _decode returns instead of an object."""

    ABSENT = "absent"  # the decoder raised NotSelected: as if the key were not there
    BAD = "bad"  # the decoder failed (logged): keep the last good object, if any


class Informer(Generic[T]):
    """Follows every key under prefix; keeps a snapshot {key: object} and calls handlers on change.

    decode(value) turns stored bytes into the caller's type (e.g. Service.model_validate_json) and may
    raise anything for bad input. Give decode_kv(key, value) instead when the key carries part of the
    object (flannel's subnet leases: the subnet is in the key, not in the JSON). Handlers run on the informer's thread, in store order, as
    handler(kind, old, new): add (None, new), update (old, new), delete (old, None). After a gap the
    differences come as the same three kinds. A handler that raises is logged; the informer goes on.
    """

    def __init__(
        self,
        store: Store,
        prefix: str,
        decode: Callable[[bytes], T] | None = None,
        *,
        decode_kv: Callable[[str, bytes], T] | None = None,
        on_change: Callable[[ChangeKind, T | None, T | None], None] | None = None,
        name: str | None = None,
        retry_interval: float = 1.0,
        first_retry: float = 0.1,
    ) -> None:
        self.store = store
        self.prefix = prefix
        if decode is not None and decode_kv is None:
            self._decode_fn: Callable[[str, bytes], T] = lambda _key, value: decode(value)
        elif decode_kv is not None and decode is None:
            self._decode_fn = decode_kv
        else:
            raise TypeError("Informer: give exactly one of decode(value) or decode_kv(key, value)")
        self.name = name or f"informer {prefix}"
        # After a failure the informer lists again after first_retry, doubling up to retry_interval:
        # a store that restarts (etcd killed, back in ~0.5 s) is followed again within a few tenths of a
        # second, one that stays away is asked once per retry_interval.
        self.retry_interval = retry_interval
        self.first_retry = min(first_retry, retry_interval)
        self._pause = self.first_retry
        self._handlers: list[Callable[[ChangeKind, T | None, T | None], None]] = []
        if on_change is not None:
            self._handlers.append(on_change)
        self._lock = threading.Lock()
        self._objects: dict[str, T] = {}
        self._mod_revs: dict[str, int] = {}  # key -> mod_revision of the value we last looked at
        self._obj_revs: dict[str, int] = {}  # key -> mod_revision the object in _objects was decoded from
        self._revision = 0
        self._synced = threading.Event()
        self._stop = threading.Event()
        self._watch: Watch | None = None
        self._thread: threading.Thread | None = None
        self.relists = 0  # how many times a gap forced a re-list (observable for tests and metrics)

    # ---- public ---------------------------------------------------------------------------------

    def add_handler(self, handler: Callable[[ChangeKind, T | None, T | None], None]) -> None:
        """Register before start() to see every object; later handlers only see later changes."""
        with self._lock:
            self._handlers.append(handler)

    def start(self) -> Informer[T]:
        if self._thread is not None:
            raise RuntimeError(f"{self.name}: already started")
        self._thread = threading.Thread(target=self._run, name=f"podnet-{self.name}", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        with self._lock:
            watch = self._watch
        if watch is not None:
            watch.close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the first list has been delivered to the handlers (False on timeout)."""
        return self._synced.wait(timeout)

    @property
    def synced(self) -> bool:
        return self._synced.is_set()

    @property
    def revision(self) -> int:
        """The store revision the snapshot reflects."""
        with self._lock:
            return self._revision

    def snapshot(self) -> dict[str, T]:
        """A copy of {key: object} as of revision; safe to use from any thread."""
        with self._lock:
            return dict(self._objects)

    def get(self, key: str) -> T | None:
        with self._lock:
            return self._objects.get(key)

    def get_with_revision(self, key: str) -> tuple[T, int] | None:
        """The object at key and the mod_revision it was decoded from, read together: a writer that
        derives a change from this object makes its write conditional on that revision."""
        with self._lock:
            if key not in self._objects:
                return None
            return self._objects[key], self._obj_revs[key]

    def __enter__(self) -> Informer[T]:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- the loop -------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                listed = self.store.list(self.prefix)
                self._apply_list(listed.items, listed.revision)
                self._synced.set()
                self._pause = self.first_retry
                watch = self.store.watch(self.prefix, listed.revision + 1)
                with self._lock:
                    self._watch = watch
                if self._stop.is_set():  # stop() ran before the watch was visible to it
                    watch.close()
                    break
                for event in watch:
                    if self._stop.is_set():
                        break
                    self._apply_event(event)
                else:
                    if not self._stop.is_set():  # a watch must not end by itself: treat as a gap
                        log.warning("%s: watch ended at revision %d; re-listing", self.name, self.revision)
                        self.relists += 1
            except CompactedError as exc:
                log.info("%s: %s; re-listing", self.name, exc)
                self.relists += 1
            except StoreUnavailable as exc:
                log.warning("%s: store unavailable (%s); re-listing in %.1fs", self.name, exc, self._pause)
                self.relists += 1
                self._back_off()
            except StoreError as exc:
                log.error("%s: store error (%s); re-listing in %.1fs", self.name, exc, self._pause)
                self.relists += 1
                self._back_off()
            except Exception:  # noqa: BLE001 - the informer must outlive surprises; logged with traceback
                log.exception("%s: unexpected error; re-listing in %.1fs", self.name, self._pause)
                self.relists += 1
                self._back_off()
            finally:
                with self._lock:
                    open_watch, self._watch = self._watch, None
                if open_watch is not None:
                    open_watch.close()

    def _back_off(self) -> None:
        self._stop.wait(self._pause)
        self._pause = min(self._pause * 2, self.retry_interval)

    def _decode(self, key: str, value: bytes) -> T | _Skip:
        try:
            return self._decode_fn(key, value)
        except NotSelected:
            return _Skip.ABSENT
        except Exception as exc:  # noqa: BLE001 - any decoder failure is one bad object, not a crash
            log.error("%s: cannot decode %s: %s; skipping it", self.name, key, exc)
            return _Skip.BAD

    def _apply_list(self, items: list[KeyValue], revision: int) -> None:
        """Turn a fresh list into adds/updates/deletes against what handlers saw before."""
        changes: list[tuple[ChangeKind, T | None, T | None]] = []
        seen: set[str] = set()
        with self._lock:
            for kv in items:
                seen.add(kv.key)
                if self._mod_revs.get(kv.key) == kv.mod_revision:
                    continue  # unchanged since we last looked (decoded or not)
                self._mod_revs[kv.key] = kv.mod_revision
                obj = self._decode(kv.key, kv.value)
                if obj is _Skip.BAD:
                    continue  # keep the last good object, if any, rather than inventing a delete
                if obj is _Skip.ABSENT:
                    if kv.key in self._objects:
                        self._obj_revs.pop(kv.key, None)
                        changes.append(("delete", self._objects.pop(kv.key), None))
                    continue
                had = kv.key in self._objects
                old = self._objects.get(kv.key)
                self._objects[kv.key] = obj
                self._obj_revs[kv.key] = kv.mod_revision
                changes.append(("update", old, obj) if had else ("add", None, obj))
            for key in [k for k in self._mod_revs if k not in seen]:
                del self._mod_revs[key]
                if key in self._objects:
                    self._obj_revs.pop(key, None)
                    changes.append(("delete", self._objects.pop(key), None))
            self._revision = revision
            handlers = list(self._handlers)
        self._deliver(handlers, changes)

    def _apply_event(self, event: Event) -> None:
        change: tuple[ChangeKind, T | None, T | None] | None = None
        with self._lock:
            if event.type == "put":
                self._mod_revs[event.key] = event.revision
                obj = self._decode(event.key, event.value or b"")
                if obj is _Skip.ABSENT:
                    if event.key in self._objects:
                        self._obj_revs.pop(event.key, None)
                        change = ("delete", self._objects.pop(event.key), None)
                elif obj is not _Skip.BAD:
                    had = event.key in self._objects
                    old = self._objects.get(event.key)
                    self._objects[event.key] = obj
                    self._obj_revs[event.key] = event.revision
                    change = ("update", old, obj) if had else ("add", None, obj)
            else:
                self._mod_revs.pop(event.key, None)
                if event.key in self._objects:
                    self._obj_revs.pop(event.key, None)
                    change = ("delete", self._objects.pop(event.key), None)
            self._revision = event.revision
            handlers = list(self._handlers)
        if change is not None:
            self._deliver(handlers, [change])

    def _deliver(self, handlers: list[Callable[[ChangeKind, T | None, T | None], None]],
                 changes: list[tuple[ChangeKind, T | None, T | None]]) -> None:
        for kind, old, new in changes:
            for handler in handlers:
                try:
                    handler(kind, old, new)
                except Exception:  # noqa: BLE001 - one failing handler must not starve the others
                    log.exception("%s: handler %r failed on %s", self.name, handler, kind)
