"""core/v1 Events, as kube-scheduler and the kubelet write them, so `kubectl describe pod` tells the story.

One helper for every writer: event_put() gives the store write (for a caller that commits it with its own
change), record() writes it alone and never raises (an event lost is no reason to fail the work it
describes).
"""

from __future__ import annotations

import logging
import secrets
from datetime import UTC, datetime

from podnet.api.cluster import Event
from podnet.api.loader import to_json
from podnet.api.meta import Resource
from podnet.store import Put, Store, keys

log = logging.getLogger("podnet.events")


def make_event(obj: Resource, reason: str, message: str, *, type: str = "Normal", component: str,
               host: str | None = None) -> Event:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    ns = obj.namespace or "default"
    # name as client-go's recorder makes it: <object>.<unique suffix>
    name = f"{obj.name}.{secrets.token_hex(8)}"
    return Event.model_validate({
        "metadata": {"name": name, "namespace": ns, "creationTimestamp": now},
        "involvedObject": {"kind": obj.KIND, "namespace": obj.namespace, "name": obj.name,
                           "uid": obj.metadata.uid, "apiVersion": obj.API_VERSION},
        "reason": reason, "message": message, "type": type, "count": 1, "firstTimestamp": now,
        "lastTimestamp": now, "source": {"component": component, **({"host": host} if host else {})},
        "reportingComponent": component, "reportingInstance": host or "",
    })


def event_put(obj: Resource, reason: str, message: str, *, type: str = "Normal", component: str,
              host: str | None = None) -> Put:
    ev = make_event(obj, reason, message, type=type, component=component, host=host)
    return Put(keys.resource("Event", ev.namespace, ev.name), to_json(ev), if_absent=True)


def record(store: Store, obj: Resource, reason: str, message: str, *, type: str = "Normal", component: str,
           host: str | None = None) -> None:
    try:
        store.commit([event_put(obj, reason, message, type=type, component=component, host=host)])
    except Exception as e:  # noqa: BLE001 - see the module docstring
        log.warning("could not record event %s for %s: %s", reason, obj.ref, e)
