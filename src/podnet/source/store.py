"""The store source: what the daemons have always read, podnet's store (sqlite or etcd) behind the contract.

Each informer is the store Informer over `keys.kind_prefix(kind)`; a value is parsed as JSON and handed to
the caller's decode, exactly as the daemons decoded it before sources existed. Selectors are evaluated
here (the store has no server-side selectors): an object outside the selector is absent to handlers.
"""

from __future__ import annotations

import json
import logging
from typing import Any, TypeVar

from podnet.errors import NotFound, PodnetError
from podnet.source.base import Decode, Handler, Selector
from podnet.store import ConflictError, Store, keys
from podnet.store.informer import Informer, NotSelected

T = TypeVar("T")

log = logging.getLogger(__name__)


class StoreSource:
    def __init__(self, store: Store) -> None:
        self.store = store

    def describe(self) -> str:
        return f"store {self.store.url}"

    def informer(self, kind: str, decode: Decode[T], on_change: Handler | None = None, *,
                 selector: Selector | None = None, name: str | None = None) -> Informer[T]:
        def decode_kv(_key: str, value: bytes) -> T:
            doc = json.loads(value)
            # Anything but an object is for decode to refuse (and log by key), not for the selector to hide.
            if selector and isinstance(doc, dict) and not selector.matches(doc):
                raise NotSelected
            return decode(doc)

        return Informer(self.store, keys.kind_prefix(kind), decode_kv=decode_kv, on_change=on_change,
                        name=name or f"{kind} informer")

    def patch_node_status(self, node: str, patch: dict[str, Any]) -> dict[str, Any]:
        """The same strategic-merge patch the API server applies to nodes/NAME/status, on the stored Node
        (annotations and status only, as the subresource allows), written only if nobody wrote meanwhile."""
        from podnet.apiserver.patch import strategic_merge_patch

        key = keys.resource("Node", None, node)
        for _ in range(10):
            kv = self.store.get(key)
            if kv is None:
                raise NotFound(f"node {node!r} not found")
            live = json.loads(kv.value)
            new = strategic_merge_patch(live, patch, "Node")
            out = {**live, "status": new.get("status", {}),
                   "metadata": {**live.get("metadata", {}),
                                "annotations": (new.get("metadata") or {}).get("annotations", {})}}
            if out == live:
                return live
            try:
                self.store.put(key, json.dumps(out).encode(), if_revision=kv.mod_revision)
                return out
            except ConflictError:
                continue
        raise PodnetError(f"node {node!r}: it kept changing while its status was patched")

    def record_event(self, event: dict[str, Any]) -> None:
        meta = event.get("metadata") or {}
        key = keys.resource("Event", meta.get("namespace") or "default", str(meta.get("name", "")))
        try:
            self.store.put(key, json.dumps(event, separators=(",", ":")).encode(), if_absent=True)
        except Exception as e:  # noqa: BLE001 - an event lost is no reason to fail the work it describes
            log.warning("could not record event %s: %s", event.get("reason"), e)

    def close(self) -> None:
        self.store.close()
