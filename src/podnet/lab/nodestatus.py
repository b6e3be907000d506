"""Node status as a kubelet posts it and as the node lifecycle controller judges it, for a lab's nodes.

- The agent of each node posts a heartbeat every HEARTBEAT seconds (the kubelet's
  nodeStatusUpdateFrequency, 10 s): the Ready condition True (reason KubeletReady) with
  lastHeartbeatTime now, lastTransitionTime when the status last changed, status.nodeInfo (kubeletVersion
  is podnet's version, so `get nodes` shows it under VERSION) and a creationTimestamp if the Node has none.
- The control plane looks every MONITOR_PERIOD (nodeMonitorPeriod, 5 s) at the lab's Nodes. One whose
  last heartbeat is older than GRACE (node-monitor-grace-period, 40 s) gets Ready Unknown, reason
  NodeStatusUnknown, "Kubelet stopped posting node status."; one that never posted, STARTUP_GRACE
  (node-startup-grace-period, 60 s) after it was created, gets NodeStatusNeverUpdated. Its
  lastHeartbeatTime is left as it was, as upstream does. kubectl prints any Ready that is not True as
  NotReady.

Both work on the stored JSON (not the model) and write only if the revision they read is still current,
so the fields they do not own (labels, addresses, a user's annotations) pass through untouched.
"""

from __future__ import annotations

import json
import logging
import os
import platform
from datetime import UTC, datetime
from typing import Any

from podnet.lab.labels import LAB_LABEL
from podnet.store import ConflictError, Put, Store, keys

log = logging.getLogger("podnet.lab.nodestatus")

HEARTBEAT = 10.0
MONITOR_PERIOD = 5.0
GRACE = 40.0
STARTUP_GRACE = 60.0
TIME_FORMAT = "%Y-%m-%dT%H:%M:%SZ"


def stamp(t: datetime) -> str:
    return t.astimezone(UTC).strftime(TIME_FORMAT)


def _parse(ts: object) -> datetime | None:
    try:
        return datetime.strptime(str(ts), TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None


def node_info() -> dict[str, str]:
    """status.nodeInfo of a lab node: this machine's kernel and OS, podnet's version as the kubelet's."""
    from podnet import __version__

    os_image = ""
    try:
        for line in open("/etc/os-release").read().splitlines():
            if line.startswith("PRETTY_NAME="):
                os_image = line.split("=", 1)[1].strip().strip('"')
    except OSError:
        pass
    arch = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(), platform.machine())
    return {"kernelVersion": os.uname().release, "osImage": os_image or "Linux",
            "containerRuntimeVersion": f"podnet-lab://{__version__}", "kubeletVersion": f"podnet-v{__version__}",
            "kubeProxyVersion": f"podnet-v{__version__}", "operatingSystem": "linux", "architecture": arch}


def _ready(status: dict[str, Any]) -> dict[str, Any] | None:
    return next((c for c in status.get("conditions") or [] if isinstance(c, dict) and c.get("type") == "Ready"), None)


def _with_ready(status: dict[str, Any], cond: dict[str, Any]) -> list[dict[str, Any]]:
    others = [c for c in status.get("conditions") or [] if not (isinstance(c, dict) and c.get("type") == "Ready")]
    return [cond, *others]


def heartbeat(obj: dict[str, Any], now: datetime, info: dict[str, str]) -> dict[str, Any]:
    """The Node `obj` as its agent posts it at `now`: Ready True, heartbeat now, nodeInfo, a creation time."""
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    if not meta.get("creationTimestamp"):
        meta["creationTimestamp"] = stamp(now)
    out["metadata"] = meta
    status = dict(out.get("status") or {})
    previous = _ready(status)
    since = previous.get("lastTransitionTime") if previous and previous.get("status") == "True" else None
    status["conditions"] = _with_ready(status, {
        "type": "Ready", "status": "True", "lastHeartbeatTime": stamp(now), "lastTransitionTime": since or stamp(now),
        "reason": "KubeletReady", "message": "kubelet is posting ready status",
    })
    status["nodeInfo"] = {**(status.get("nodeInfo") or {}), **info}
    out["status"] = status
    return out


def judged(obj: dict[str, Any], now: datetime, grace: float = GRACE,
           startup_grace: float = STARTUP_GRACE) -> dict[str, Any] | None:
    """The Node as the control plane marks it when its agent fell silent; None if nothing to change."""
    status = dict(obj.get("status") or {})
    ready = _ready(status)
    if ready is not None and ready.get("status") == "Unknown":
        return None  # already marked; the next heartbeat makes it Ready again
    created = _parse((obj.get("metadata") or {}).get("creationTimestamp"))
    beat = _parse(ready.get("lastHeartbeatTime")) if ready is not None else None
    if ready is None or beat is None:
        if created is None or (now - created).total_seconds() <= startup_grace:
            return None
        cond = {"type": "Ready", "status": "Unknown", "lastHeartbeatTime": stamp(created),
                "lastTransitionTime": stamp(now), "reason": "NodeStatusNeverUpdated",
                "message": "Kubelet never posted node status."}
    elif (now - beat).total_seconds() <= grace:
        return None
    else:
        cond = {**ready, "status": "Unknown", "lastTransitionTime": stamp(now), "reason": "NodeStatusUnknown",
                "message": "Kubelet stopped posting node status."}
    status["conditions"] = _with_ready(status, cond)
    return {**obj, "status": status}


def post(store: Store, node: str, info: dict[str, str], now: datetime | None = None) -> bool:
    """The agent's heartbeat for `node` (conditional write, retried on a race). False if no such Node."""
    key = keys.resource("Node", None, node)
    for _ in range(10):
        kv = store.get(key)
        if kv is None:
            return False
        try:
            obj = json.loads(kv.value)
        except ValueError:
            log.error("%s: not JSON; no heartbeat", key)
            return False
        try:
            store.commit([Put(key, json.dumps(heartbeat(obj, now or datetime.now(UTC), info)).encode(),
                              if_revision=kv.mod_revision)])
            return True
        except ConflictError:
            continue
    return False


def monitor(store: Store, lab: str, now: datetime | None = None, *, grace: float = GRACE,
            startup_grace: float = STARTUP_GRACE) -> list[str]:
    """Mark the lab's silent Nodes Ready Unknown. Returns their names. A lost race waits for the next turn."""
    marked = []
    now = now or datetime.now(UTC)
    for kv in store.list(keys.kind_prefix("Node")).items:
        try:
            obj = json.loads(kv.value)
        except ValueError:
            continue
        if not isinstance(obj, dict) or ((obj.get("metadata") or {}).get("labels") or {}).get(LAB_LABEL) != lab:
            continue
        new = judged(obj, now, grace, startup_grace)
        if new is None:
            continue
        try:
            store.commit([Put(kv.key, json.dumps(new).encode(), if_revision=kv.mod_revision)])
        except ConflictError:  # a heartbeat got in first: it is alive after all
            continue
        name = str((obj.get("metadata") or {}).get("name"))
        log.warning("node %s: no status posted for over %.0f s; Ready is Unknown", name, grace)
        marked.append(name)
    return marked
