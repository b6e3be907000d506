"""What the node lifecycle controller and the pod garbage collector do when a lab's nodes go or come back.

A lab's store may outlive the lab (the default sqlite store does), so the Pods in it must say what is
true once the nodes they were bound to are gone: nothing runs them and nobody holds their addresses.

- `lab down` (the lab's nodes stop; a lab with the same nodes may come back on this store): each pod
  bound to one of them becomes `Pending` with no podIP, podIPs or hostIP, Ready and ContainersReady
  False with reason NodeLost, PodScheduled kept True (it is still bound). Kubernetes keeps a pod of an
  unreachable node in the store with Ready False until it is evicted; we also clear the addresses and
  leave `Running`, because here we know for certain the node is gone and its addresses are free, and
  Pending is the phase of a bound pod whose containers have not started (which is what the next lab up
  with that node does: its agent starts the pod and writes Running with the new address).
- `lab up` (reconcile the store with the nodes that exist):
  - pods bound to this lab's nodes were started by no one yet: same Pending status as above, so a
    crashed lab's stale addresses never reach an EndpointSlice;
  - pods bound to a node that no Node object names any more (a node the new lab does not have):
    a Deployment's or a StatefulSet's pods are deleted, so their controller creates replacements that the
    scheduler places on existing nodes (what eviction + the ReplicaSet controller do); a bare pod can
    run nowhere else (nodeName is fixed), so it is marked `Failed`, reason NodeLost, as the pod GC
    marks pods of deleted nodes, with a DisruptionTarget condition and no addresses. It stays in the
    store for the user to see and delete.

Every write is conditional on the revision read, so a concurrent `podnet apply` wins and is not undone.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from podnet.lab.labels import OWNER_LABEL
from podnet.store import ConflictError, Delete, Put, Store, keys

log = logging.getLogger("podnet.lab.lifecycle")


def _condition(type_: str, status: str, reason: str | None = None, message: str | None = None) -> dict[str, str]:
    c = {"type": type_, "status": status}
    if reason:
        c["reason"] = reason
    if message:
        c["message"] = message
    return c


def node_gone_status(node: str, why: str) -> dict[str, Any]:
    """A bound pod whose node is gone for now (may come back): Pending, no addresses, not ready."""
    msg = f"node {node} {why}"
    return {
        "phase": "Pending", "reason": "NodeLost", "message": msg,
        "conditions": [_condition("PodScheduled", "True"), _condition("Ready", "False", "NodeLost", msg),
                       _condition("ContainersReady", "False", "NodeLost", msg)],
    }


def node_deleted_status(node: str) -> dict[str, Any]:
    """A pod bound to a node that no longer exists: Failed, as the pod garbage collector marks it."""
    msg = f"node {node} no longer exists"
    return {
        "phase": "Failed", "reason": "NodeLost", "message": msg,
        "conditions": [_condition("DisruptionTarget", "True", "DeletionByPodGC", msg),
                       _condition("Ready", "False", "NodeLost", msg),
                       _condition("ContainersReady", "False", "NodeLost", msg)],
    }


def _pods(store: Store) -> list[tuple[str, dict[str, Any], int]]:
    out = []
    for kv in store.list(keys.kind_prefix("Pod")).items:
        try:
            obj = json.loads(kv.value)
            if isinstance(obj, dict) and isinstance(obj.get("spec") or {}, dict):
                out.append((kv.key, obj, kv.mod_revision))
        except ValueError:
            log.warning("%s: not JSON; skipped", kv.key)
    return out


def _set_status(store: Store, key: str, obj: dict[str, Any], rev: int, status: dict[str, Any]) -> bool:
    if obj.get("status") == status:
        return False
    obj = {**obj, "status": status}
    try:
        store.commit([Put(key, json.dumps(obj).encode(), if_revision=rev)])
        return True
    except ConflictError:  # changed meanwhile (apply, delete): the newer object stands
        return False


def nodes_gone(store: Store, nodes: set[str], why: str) -> list[str]:
    """Pods bound to `nodes` no longer run anywhere: Pending, no addresses. Returns their keys."""
    changed = []
    for key, obj, rev in _pods(store):
        node = (obj.get("spec") or {}).get("nodeName")
        if node in nodes and not _terminal(obj) and _set_status(store, key, obj, rev, node_gone_status(node, why)):
            changed.append(key)
    return changed


def reconcile(store: Store, lab_nodes: set[str]) -> list[str]:
    """At `lab up`, once the lab's Node objects are written: see the module docstring. Returns what changed."""
    existing = {json.loads(kv.value).get("metadata", {}).get("name")
                for kv in store.list(keys.kind_prefix("Node")).items if _is_json(kv.value)}
    done = []
    for key, obj, rev in _pods(store):
        node = (obj.get("spec") or {}).get("nodeName")
        if not node or _terminal(obj):
            continue
        if node in lab_nodes:
            if _set_status(store, key, obj, rev, node_gone_status(node, "was restarted (a new lab came up)")):
                done.append(f"{key}: Pending")
        elif node not in existing:
            if _has_controller(obj):
                try:
                    store.commit([Delete(key, if_revision=rev)])
                    done.append(f"{key}: deleted (its controller replaces it)")
                except ConflictError:
                    continue
            elif _set_status(store, key, obj, rev, node_deleted_status(node)):
                done.append(f"{key}: Failed")
    for line in done:
        log.info("node lifecycle: %s", line)
    return done


def _has_controller(obj: dict[str, Any]) -> bool:
    """A Deployment's pod (the lab's owner label) or a StatefulSet's (a controller ownerReference)."""
    meta = obj.get("metadata") or {}
    if OWNER_LABEL in (meta.get("labels") or {}):
        return True
    refs = meta.get("ownerReferences") or []
    return any(isinstance(r, dict) and r.get("controller") is True and r.get("kind") == "StatefulSet" for r in refs)


def _terminal(obj: dict[str, Any]) -> bool:
    return (obj.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def _is_json(value: bytes) -> bool:
    try:
        return isinstance(json.loads(value), dict)
    except ValueError:
        return False
