"""The proxy's three informers (Services, EndpointSlices, this Node): decode, hand the change to the tracker, ask
for a sync.

Decoding happens in the informer (a bad object is skipped there, logged with its key, and counted in
podnet_proxy_invalid_objects); the handlers only record what changed, so an event costs the same at 10 or
10,000 services.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from podnet.api.decode import DecodedSlice, decode_endpoint_slice, decode_node
from podnet.api.defaults import HEADLESS_LABEL, IPV4, SERVICE_PROXY_NAME_LABEL
from podnet.proxy.healthcheck import ProxyHealth
from podnet.proxy.metrics import ProxyMetrics
from podnet.proxy.tracker import ChangeTracker, ParsedService, parse_service
from podnet.source.base import Selector, Source
from podnet.store.informer import Informer

log = logging.getLogger(__name__)

TRIGGER_ANNOTATION = "endpoints.kubernetes.io/last-change-trigger-time"
# kube-proxy's informers skip Services (and their EndpointSlices) that another proxy implements, and
# headless ones (the EndpointSlice controller labels their slices): a server-side label selector there,
# the same selector evaluated by the store source here.
PROXY_SELECTOR = Selector(absent=(SERVICE_PROXY_NAME_LABEL, HEADLESS_LABEL))

SliceChange = tuple[str, DecodedSlice, float | None]  # (store key, decoded, last-change-trigger-time)


class ProxyInformers:
    def __init__(self, source: Source | None, node_name: str, tracker: ChangeTracker, metrics: ProxyMetrics,
                 health: ProxyHealth, on_change: Callable[[], None], *, ip_family: str = IPV4) -> None:
        self.source = source
        self.node_name = node_name
        self.tracker = tracker
        self.metrics = metrics
        self.health = health
        self.on_change = on_change
        self.ip_family = ip_family
        self._informers: list[Informer[Any]] = []

    # ---- decoding (in the informer's thread; raising skips the object) ---------------------------------

    def decode_service(self, doc: dict[str, Any]) -> tuple[str, ParsedService]:
        try:
            svc = parse_service(doc, self.ip_family)
            return svc.namespaced_name, svc
        except Exception:
            self.metrics.invalid_objects.labels("Service").inc()
            raise

    def decode_slice(self, doc: dict[str, Any]) -> SliceChange:
        try:
            sl = decode_endpoint_slice(doc)
            return f"{sl.namespace}/{sl.name}", sl, trigger_time(doc)
        except Exception:
            self.metrics.invalid_objects.labels("EndpointSlice").inc()
            raise

    # ---- handlers ----------------------------------------------------------------------------------------

    def _queued(self) -> None:
        self.health.queued(self.ip_family)
        self.metrics.last_queued.set(time.time())
        self.on_change()

    def on_service(self, kind: str, old: tuple[str, ParsedService] | None,
                   new: tuple[str, ParsedService] | None) -> None:
        self.tracker.service_changed(old, new)
        self._queued()

    def on_slice(self, kind: str, old: SliceChange | None, new: SliceChange | None) -> None:
        self.tracker.slice_changed(old, new)
        self._queued()

    def on_node(self, kind: str, old: Any, new: Any) -> None:
        name, zone, cidrs = decode_node(new) if new is not None else ("", "", ())
        if new is not None and name != self.node_name:
            return
        if new is None and old is not None and decode_node(old)[0] != self.node_name:
            return
        self.health.sync_node(new)  # /healthz: is this node being deleted or drained?
        if self.tracker.node_changed(zone, cidrs):
            self.on_change()

    # ---- lifecycle ---------------------------------------------------------------------------------------

    def start(self, stopped: Callable[[], bool]) -> None:
        """Start the three informers and wait for their first lists (or until `stopped()`)."""
        assert self.source is not None, "informers need a source"
        self._informers = start_informers(self.source, self.node_name, self, stopped)

    def stop(self) -> None:
        for inf in self._informers:
            inf.stop()


class Handlers(Protocol):
    """What the three informers of a node's proxy decode with and hand their changes to."""

    def decode_service(self, doc: dict[str, Any]) -> Any: ...
    def on_service(self, kind: str, old: Any, new: Any) -> None: ...
    def decode_slice(self, doc: dict[str, Any]) -> SliceChange: ...
    def on_slice(self, kind: str, old: SliceChange | None, new: SliceChange | None) -> None: ...
    def on_node(self, kind: str, old: Any, new: Any) -> None: ...


def start_informers(src: Source, node_name: str, h: Handlers, stopped: Callable[[], bool]) -> list[Informer[Any]]:
    """Start the Service, EndpointSlice and Node informers of a node's proxy; return once each has its first
    list (or `stopped()`), warning every 5 s of waiting."""
    informers: list[Informer[Any]] = [
        src.informer("Service", h.decode_service, h.on_service, selector=PROXY_SELECTOR, name="proxy services"),
        src.informer("EndpointSlice", h.decode_slice, h.on_slice, selector=PROXY_SELECTOR,
                     name="proxy endpointslices"),
        src.informer("Node", dict, h.on_node, selector=Selector(fields={"metadata.name": node_name}),
                     name="proxy nodes"),
    ]
    for inf in informers:
        inf.start()
    for inf in informers:
        while not inf.wait_synced(5):
            if stopped():
                return informers
            log.warning("%s: waiting for the first list from the %s", inf.name, src.describe())
    return informers


def trigger_time(d: dict[str, Any]) -> float | None:
    """The EndpointSlice's last-change-trigger-time annotation (when the change that made it began)."""
    ann = ((d.get("metadata") or {}).get("annotations") or {}).get(TRIGGER_ANNOTATION)
    if not ann:
        return None
    try:
        return datetime.fromisoformat(str(ann).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None
