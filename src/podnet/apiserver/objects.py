"""Reads and writes of API objects through the store.

Writes go through controllers/apply.py, the same planner `podnet apply` uses (validation was done by the
loader, then defaulting, ClusterIP/NodePort allocation and derived EndpointSlices, all in one commit), so
the API server and the CLI can never disagree about the rules. Reads decode through api/loader.from_json,
the one decoding path for stored objects, and stamp metadata.resourceVersion with the key's mod revision.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

import orjson
import pydantic

from podnet.api.endpointslice import EndpointSlice
from podnet.api.loader import KINDS, from_json
from podnet.apiserver.registry import ResourceType
from podnet.errors import PodnetError
from podnet.store import KeyValue, Store, keys

log = logging.getLogger("podnet.apiserver")

SERVICE_NAME_LABEL = "kubernetes.io/service-name"


# Stored values the model has accepted, by (key, mod revision, hash of the bytes): a value is validated once,
# not once per list (a 10k-object list spent 40 % of its time re-validating unchanged objects).
_VALID: set[tuple[str, int, int]] = set()
_VALID_MAX = 200_000


def decode(kv: KeyValue) -> dict[str, Any] | None:
    """The object of a stored value as the API shows it, or None (logged by key) if it cannot be read."""
    d: dict[str, Any] | None = None
    try:
        # What podnet stored is already in the form the API shows (to_json wrote to_dict()): once the model
        # accepts it, serve the parsed document itself rather than dumping the model again (half the cost).
        data = orjson.loads(kv.value)
        kind = data.get("kind") if isinstance(data, dict) else None
        cls = KINDS.get(kind) if isinstance(kind, str) else None
        if cls is not None and data.get("apiVersion") == cls.API_VERSION:
            seen = (kv.key, kv.mod_revision, hash(kv.value))
            if seen not in _VALID:
                cls.model_validate(data)
                if len(_VALID) >= _VALID_MAX:
                    _VALID.clear()
                _VALID.add(seen)
            d = data
    except (pydantic.ValidationError, TypeError, ValueError, RecursionError):
        d = None
    if d is None:
        try:
            d = from_json(kv.value).to_dict()  # anything else: the loader's full path, naming the bad field
        except (PodnetError, TypeError, ValueError) as e:
            log.warning("skipping %s: cannot decode the stored value: %s", kv.key, e)
            return None
    d.setdefault("metadata", {})["resourceVersion"] = str(kv.mod_revision)
    return d


def prefix(rt: ResourceType, namespace: str | None) -> str:
    kind = "EndpointSlice" if not rt.stored else rt.kind
    return keys.kind_prefix(kind, namespace if rt.namespaced else None)


def list_objects(store: Store, rt: ResourceType, namespace: str | None) -> tuple[list[dict[str, Any]], int]:
    res = store.list(prefix(rt, namespace))
    if not rt.stored:
        return endpoints_from_slices([d for kv in res.items if (d := decode(kv))],
                                     lambda ns, svc: _primary_address_type(store, ns, svc)), res.revision
    return [d for kv in res.items if (d := decode(kv)) is not None], res.revision


def list_page(store: Store, rt: ResourceType, namespace: str | None, match: Callable[[dict[str, Any]], bool],
              *, after: str | None, limit: int | None) -> tuple[list[dict[str, Any]], int, str | None]:
    """One page of a list: objects whose key sorts after `after`, matching, at most limit of them; and the
    key to continue from (None at the end). Only what the page needs is decoded, so paging through a big
    collection (kubectl asks 500 at a time) costs one decode per object, not one per object per page."""
    if not rt.stored:
        items, rev = list_objects(store, rt, namespace)
        return [o for o in items if match(o)], rev, None
    kvs, revision = _sorted_listing(store, prefix(rt, namespace), fresh=after is None)
    out: list[dict[str, Any]] = []
    for i, kv in enumerate(kvs):
        if after is not None and kv.key <= after:
            continue
        d = _decode_shared(kv)
        if d is None or not match(d):
            continue
        out.append(d)
        if limit is not None and len(out) == limit:
            return out, revision, kv.key if i + 1 < len(kvs) else None
    return out, revision, None


# Decoded objects of list pages by key, with the (mod revision, value hash) they were decoded from. A list
# answer only reads them (it is encoded at once), so pages share one decode per stored version; get and the
# writers decode afresh, as they change what they read.
_DECODED: dict[str, tuple[int, int, dict[str, Any]]] = {}
_DECODED_MAX = 50_000


def _decode_shared(kv: KeyValue) -> dict[str, Any] | None:
    h = hash(kv.value)
    hit = _DECODED.get(kv.key)
    if hit is not None and hit[0] == kv.mod_revision and hit[1] == h:
        return hit[2]
    d = decode(kv)
    if d is not None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        _DECODED[kv.key] = (kv.mod_revision, h, d)
    return d


# The last listing of each prefix, for the pages after the first: a client paging through 10k objects 500 at a
# time would otherwise read and sort the whole collection 20 times. It is used only while the store's revision
# has not moved, so a page never shows a state older than the store's.
_LISTINGS: dict[str, tuple[int, list[KeyValue]]] = {}


def _sorted_listing(store: Store, pfx: str, *, fresh: bool) -> tuple[list[KeyValue], int]:
    cached = _LISTINGS.get(pfx)
    if not fresh and cached is not None and cached[0] == store.revision():
        return cached[1], cached[0]
    res = store.list(pfx)
    kvs = sorted(res.items, key=lambda kv: kv.key)
    if len(_LISTINGS) > 32:
        _LISTINGS.clear()
    _LISTINGS[pfx] = (res.revision, kvs)
    return kvs, res.revision


def get_object(store: Store, rt: ResourceType, namespace: str | None, name: str) -> dict[str, Any] | None:
    if not rt.stored:
        items, _ = list_objects(store, rt, namespace)
        return next((e for e in items if e["metadata"]["name"] == name), None)
    kv = store.get(keys.resource(rt.kind, namespace, name))
    return decode(kv) if kv is not None else None


# ---- Endpoints (v1), mirrored from EndpointSlices --------------------------------------------------------


def _primary_address_type(store: Store, namespace: str, service: str) -> str | None:
    """The address type of a Service's first family (ipFamilies[0]), None when it is not stored."""
    kv = store.get(keys.resource("Service", namespace, service))
    d = decode(kv) if kv is not None else None
    if d is None:
        return None
    families = (d.get("spec") or {}).get("ipFamilies") or []
    return str(families[0]) if families else None


def endpoints_from_slices(slices: list[dict[str, Any]],
                          primary_of: Callable[[str, str], str | None] | None = None) -> list[dict[str, Any]]:
    """One v1 Endpoints per Service that has slices: the union of its slices' endpoints, ready ones in
    addresses and the rest in notReadyAddresses, as the endpoints controller writes them (one subset per
    distinct port list). A dual-stack Service's Endpoints hold only its first family's addresses, as
    upstream's (v1 Endpoints predate dual-stack): primary_of(namespace, service) names that family."""
    by_svc: dict[tuple[str, str], list[EndpointSlice]] = {}
    rv: dict[tuple[str, str], int] = {}
    created: dict[tuple[str, str], str] = {}
    for d in slices:
        es = EndpointSlice.model_validate(d)
        svc = es.metadata.labels.get(SERVICE_NAME_LABEL)
        if not svc:
            continue
        k = (es.namespace or "default", svc)
        by_svc.setdefault(k, []).append(es)
        rv[k] = max(rv.get(k, 0), int(d["metadata"].get("resourceVersion") or 0))
        ts = es.metadata.creation_timestamp or ""
        if ts and (k not in created or ts < created[k]):
            created[k] = ts
    out = []
    for (ns, svc), group in sorted(by_svc.items()):
        if len({es.address_type for es in group}) > 1 and primary_of is not None:
            primary = primary_of(ns, svc)
            group = [es for es in group if primary is None or es.address_type == primary]
        subsets: dict[str, dict[str, Any]] = {}
        for es in group:
            ports = [{k: v for k, v in (("name", p.name), ("port", p.port), ("protocol", p.protocol or "TCP"))
                      if v is not None} for p in es.ports]
            sig = json.dumps(ports, sort_keys=True)
            sub = subsets.setdefault(sig, {"addresses": [], "notReadyAddresses": [], "ports": ports})
            for ep in es.endpoints:
                for addr in ep.addresses:
                    a: dict[str, Any] = {"ip": addr}
                    if ep.node_name:
                        a["nodeName"] = ep.node_name
                    if ep.hostname:
                        a["hostname"] = ep.hostname
                    if ep.target_ref is not None:
                        a["targetRef"] = {k: v for k, v in ep.target_ref.to_dict().items() if v}
                    sub["addresses" if ep.is_ready else "notReadyAddresses"].append(a)
        subs = []
        for sub in subsets.values():
            for field in ("addresses", "notReadyAddresses"):
                sub[field].sort(key=lambda a: a["ip"])
                if not sub[field]:
                    del sub[field]
            if not sub["ports"]:
                del sub["ports"]
            if "addresses" in sub or "notReadyAddresses" in sub:
                subs.append(sub)
        meta: dict[str, Any] = {"name": svc, "namespace": ns, "resourceVersion": str(rv[(ns, svc)]),
                                "labels": {"endpointslice.kubernetes.io/skip-mirror": "true"}}
        if created.get((ns, svc)):
            meta["creationTimestamp"] = created[(ns, svc)]
        doc: dict[str, Any] = {"apiVersion": "v1", "kind": "Endpoints", "metadata": meta}
        if subs:
            doc["subsets"] = subs
        out.append(doc)
    return out


# ---- selectors ------------------------------------------------------------------------------------------


def field_value(obj: dict[str, Any], path: str) -> str:
    cur: Any = obj
    for part in path.split("."):
        if not isinstance(cur, dict):
            return ""
        cur = cur.get(part)
    if cur is None:
        return ""
    return str(cur).lower() if isinstance(cur, bool) else str(cur)


def field_matcher(text: str) -> Callable[[dict[str, Any]], bool]:
    """A fieldSelector (`a=b,c!=d`, `==` too) over dotted paths: metadata.name, spec.nodeName,
    status.phase, involvedObject.name... Raises ValueError naming a requirement it cannot parse."""
    reqs: list[tuple[str, bool, str]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        if "!=" in part:
            k, v = part.split("!=", 1)
            reqs.append((k.strip(), False, v.strip()))
        elif "==" in part:
            k, v = part.split("==", 1)
            reqs.append((k.strip(), True, v.strip()))
        elif "=" in part:
            k, v = part.split("=", 1)
            reqs.append((k.strip(), True, v.strip()))
        else:
            raise ValueError(f"invalid field selector requirement {part!r}: use field=value or field!=value")

    def match(obj: dict[str, Any]) -> bool:
        return all((field_value(obj, k) == v) == eq for k, eq, v in reqs)

    return match
