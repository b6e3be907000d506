"""The DNS server's picture of the cluster, kept current by one watch on the store.

One Informer follows every resource (the way the lab's controller reads); its decoder reduces Services,
EndpointSlices, Pods and Namespaces to records.py's small records and skips every other kind without
decoding it. A change marks the view dirty; a builder thread waits DEBOUNCE for the rest of a burst,
builds a new View and swaps it in (one reference assignment), so the answer to a query reflects every
change that reached the store at least about DEBOUNCE + the store's watch delay earlier, far inside a
second.

Until the first list has arrived the view is not synced: names that do not exist then get SERVFAIL,
not NXDOMAIN (CoreDNS's HasSynced), so a client retries instead of caching a negative answer.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from podnet.api.loader import from_json
from podnet.dns.records import Record, View, reduce
from podnet.store import Store, keys
from podnet.store.informer import Informer

log = logging.getLogger("podnet.dns")
DEBOUNCE = 0.02
_KINDS = tuple(keys.kind_prefix(k) for k in ("Service", "EndpointSlice", "Pod", "Namespace"))


def _decode(key: str, value: bytes) -> Record | None:
    if not key.startswith(_KINDS):
        return None  # Deployments, Events, ...: nothing DNS answers from
    return reduce(from_json(value))


class ClusterCache:
    """view() is the current View; start() follows the store, stop() ends it."""

    def __init__(self, store: Store, *, on_view: Callable[[View], None] | None = None) -> None:
        self._view = View()
        self._dirty = threading.Event()
        self._stop = threading.Event()
        self._generation = 0
        self._serial = int(time.time())
        self._on_view = on_view
        self.informer: Informer[Record | None] = Informer(
            store, keys.RESOURCES_PREFIX, decode_kv=_decode, on_change=self._changed, name="dns")
        self._thread = threading.Thread(target=self._build_loop, name="podnet-dns-view", daemon=True)

    def view(self) -> View:
        return self._view

    def start(self) -> ClusterCache:
        self.informer.start()
        self._thread.start()
        return self

    def wait_synced(self, timeout: float | None = None) -> bool:
        """True once the first full view is in place."""
        deadline = None if timeout is None else time.monotonic() + timeout
        if not self.informer.wait_synced(timeout):
            return False
        while not self._view.synced:
            if deadline is not None and time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True

    def stop(self) -> None:
        self._stop.set()
        self._dirty.set()
        self.informer.stop()

    def _changed(self, kind: str, old: Record | None, new: Record | None) -> None:
        if old is not None or new is not None:
            self._dirty.set()

    def _build_loop(self) -> None:
        self.informer.wait_synced()
        self._dirty.set()
        while not self._stop.is_set():
            self._dirty.wait()
            if self._stop.is_set():
                return
            self._stop.wait(DEBOUNCE)  # let the rest of a burst arrive
            self._dirty.clear()
            try:
                self._rebuild()
            except Exception:  # noqa: BLE001 - keep serving the last good view
                log.exception("building the DNS view")

    def _rebuild(self) -> None:
        records = [r for r in self.informer.snapshot().values() if r is not None]
        self._generation += 1
        self._serial = int(time.time())  # the SOA serial: when the cluster last changed, as CoreDNS
        view = View.build(records, synced=True, serial=self._serial, generation=self._generation)
        self._view = view
        if self._on_view is not None:
            self._on_view(view)
