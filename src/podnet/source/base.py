"""The source contract: where a daemon's objects come from, podnet's store or a Kubernetes API server.

A daemon (the proxy, the overlay) asks its source for one informer per kind it follows:

    inf = source.informer("Service", decode, on_change, labels=Selector(absent=(...)), name="proxy services")
    inf.start(); inf.wait_synced(); inf.snapshot(); inf.stop()

The contract is the store Informer's (podnet.store.informer): list everything at a version, watch from
that version, and after a gap (a 410 Gone, compacted history, a lost connection) list again and hand the
handlers only the difference. Handlers receive what `decode(document)` returns, a typed object, from a
Kubernetes-shaped dict (the JSON of the object, as stored or as served); they never see keys' formats,
bytes or the transport. A document `decode` refuses is logged with its key and skipped.

Selectors are applied where the source can: by the API server for a Kubernetes source (labelSelector,
fieldSelector on list and watch), by the informer itself for the store. An object that stops matching
reaches handlers as a delete in both.

Writes are not part of an informer. The daemons make two: `Source.patch_node_status` (flannel's node
annotations, nodes/status) and `Source.record_event` (kube-proxy's Events, such as a healthCheckNodePort
that could not be opened).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from podnet.store.informer import ChangeKind, Informer

T = TypeVar("T")

Decode = Callable[[dict[str, Any]], T]
Handler = Callable[[ChangeKind, Any, Any], None]

# The kinds a daemon may follow, with what the API's paths need (group, version, plural, namespaced).
KINDS: dict[str, tuple[str, str, str, bool]] = {
    "Service": ("", "v1", "services", True),
    "EndpointSlice": ("discovery.k8s.io", "v1", "endpointslices", True),
    "Node": ("", "v1", "nodes", False),
    "Pod": ("", "v1", "pods", True),
}


@dataclass(frozen=True)
class Selector:
    """The label and field selectors daemons use: labels that must be absent or equal, fields that must equal.

    kube-proxy follows Services and EndpointSlices without `service.kubernetes.io/service-proxy-name`
    and `service.kubernetes.io/headless`, and its own Node by `metadata.name`; nothing needs more.
    """

    absent: tuple[str, ...] = ()
    equal: Mapping[str, str] = field(default_factory=dict)
    fields: Mapping[str, str] = field(default_factory=dict)

    def matches(self, doc: Mapping[str, Any]) -> bool:
        meta = doc.get("metadata") or {}
        labels = (meta.get("labels") or {}) if isinstance(meta, Mapping) else {}
        if not isinstance(labels, Mapping):
            labels = {}  # a malformed object: the decoder names it; the selector only looks at labels
        if any(k in labels for k in self.absent):
            return False
        if any(labels.get(k) != v for k, v in self.equal.items()):
            return False
        return all(_field(doc, path) == want for path, want in self.fields.items())

    def __bool__(self) -> bool:
        return bool(self.absent or self.equal or self.fields)


def _field(doc: Mapping[str, Any], path: str) -> str:
    cur: Any = doc
    for part in path.split("."):
        if not isinstance(cur, Mapping):
            return ""
        cur = cur.get(part)
    return "" if cur is None else str(cur)


class Source(Protocol):
    """Where a daemon reads its objects (store.py, kube.py). `describe` says which, for logs."""

    def describe(self) -> str: ...

    def informer(self, kind: str, decode: Decode[T], on_change: Handler | None = None, *,
                 selector: Selector | None = None, name: str | None = None) -> Informer[T]:
        """An unstarted informer over every object of `kind` (all namespaces) the selector admits."""
        ...

    def patch_node_status(self, node: str, patch: dict[str, Any]) -> dict[str, Any]:
        """A strategic-merge patch of nodes/NODE/status (metadata.annotations, status.conditions); the
        node as written. Raises SourceError."""
        ...

    def record_event(self, event: dict[str, Any]) -> None:
        """Create a core/v1 Event (a Kubernetes-shaped dict, controllers/events.make_event's). Never raises:
        an event that cannot be written is logged, as client-go's recorder drops it."""
        ...

    def close(self) -> None: ...


__all__ = ["KINDS", "Decode", "Handler", "Selector", "Source"]
