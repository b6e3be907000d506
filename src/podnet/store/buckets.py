"""Buckets: which stored objects one write of the planner can touch, for the indexes that answer that.

The planner (controllers/apply.py) derives EndpointSlices from Services and Pods. To apply one object it
must find "the services selecting this pod", "the pods this service selects" and "this service's slices";
without an index that means listing whole namespaces. Both indexes answer those questions with the
same buckets, computed here and only here:

- ("pod", namespace, label, value) -> pod keys, for every label of every pod;
- ("selector", namespace, label, value) -> service keys, under the smallest (label, value) pair of the
  service's selector: a service can only select a pod that carries that pair;
- ("slice", namespace, service name) -> slice keys, by the kubernetes.io/service-name label, and
  ("stem", namespace, name[:-6]) by the name the controller derives (`<service[:57]>-<5 hex>`);
- ("node",) -> node keys.

The long-running writer's watch cache (controllers/writeindex.py) keeps them in memory; the SQLite store
keeps them in a table it writes in the same transaction as the object (store/sqlite.py), so a one-shot
`podnet apply` reads them too. Buckets are hints: the planner reads the objects and decides on their
bytes. An object whose JSON does not parse is in no bucket.
"""

from __future__ import annotations

import json

from podnet.api.defaults import SERVICE_NAME_LABEL
from podnet.store import keys

Bucket = tuple[str, ...]

_PODS = keys.kind_prefix("Pod")
_SERVICES = keys.kind_prefix("Service")
_SLICES = keys.kind_prefix("EndpointSlice")
_NODES = keys.kind_prefix("Node")


def _str_dict(data: object, *path: str) -> dict[str, str]:
    for p in path:
        data = data.get(p) if isinstance(data, dict) else None
    if not isinstance(data, dict):
        return {}
    return {k: v for k, v in data.items() if isinstance(k, str) and isinstance(v, str)}


def buckets_of(key: str, value: bytes) -> tuple[Bucket, ...]:
    """The buckets a stored object belongs to (none for a key outside the indexed kinds or bad JSON)."""
    if key.startswith(_NODES):
        return (("node",),)
    for prefix in (_PODS, _SERVICES, _SLICES):
        if key.startswith(prefix):
            break
    else:
        return ()
    ns, _, name = key[len(prefix):].partition("/")
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return ()
    if prefix is _PODS:
        return tuple(("pod", ns, k, v) for k, v in sorted(_str_dict(data, "metadata", "labels").items()))
    if prefix is _SERVICES:
        selector = _str_dict(data, "spec", "selector")
        return (("selector", ns, *min(selector.items())),) if selector else ()
    out: list[Bucket] = [("stem", ns, name[:-6])]
    service = _str_dict(data, "metadata", "labels").get(SERVICE_NAME_LABEL)
    if service is not None:
        out.append(("slice", ns, service))
    return tuple(out)


def indexed(key: str) -> bool:
    """Whether key is of a kind that has buckets (its object may be in some)."""
    return key.startswith((_PODS, _SERVICES, _SLICES, _NODES))


def encode(bucket: Bucket) -> str:
    """A bucket as one string (a column of the SQLite store's table): its JSON array."""
    return json.dumps(bucket, separators=(",", ":"))
