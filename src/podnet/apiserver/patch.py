"""The PATCH bodies a Kubernetes server takes: JSON patch (RFC 6902), JSON merge patch (RFC 7386) and
strategic-merge patch, the one `kubectl apply` and `kubectl patch` send by default.

A strategic-merge patch is a merge patch in which some lists merge element by element on a key (Service
ports on `port`, containers on `name`, ...) instead of being replaced, with directives in the patch:
`$patch: delete|replace|merge` on a map or list element, `$retainKeys`, `$setElementOrder/<field>` and
`$deleteFromPrimitiveList/<field>`. The merge keys are those kube-apiserver's types declare
(`patchMergeKey` tags); a list not named here is replaced, as for any list without a merge key.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from podnet.errors import PodnetError

# (kind or "*", path of the list field, with [] for list elements) -> merge key
MERGE_KEYS: dict[tuple[str, str], str] = {
    ("Service", "spec.ports"): "port",
    ("*", "metadata.ownerReferences"): "uid",
    ("*", "spec.containers"): "name",
    ("*", "spec.initContainers"): "name",
    ("*", "spec.containers[].ports"): "containerPort",
    ("*", "spec.containers[].env"): "name",
    ("*", "spec.containers[].volumeMounts"): "mountPath",
    ("*", "spec.volumes"): "name",
    ("*", "spec.template.spec.containers"): "name",
    ("*", "spec.template.spec.initContainers"): "name",
    ("*", "spec.template.spec.containers[].ports"): "containerPort",
    ("*", "spec.template.spec.containers[].env"): "name",
    ("*", "spec.template.spec.containers[].volumeMounts"): "mountPath",
    ("*", "spec.template.spec.volumes"): "name",
    ("*", "status.conditions"): "type",
    ("Node", "status.addresses"): "type",
    ("*", "spec.taints"): "key",
    ("*", "status.podIPs"): "ip",
}
# lists of scalars that merge as sets (patchStrategy:"merge" on a []string)
MERGE_SCALAR_LISTS: set[tuple[str, str]] = {("*", "metadata.finalizers")}


class PatchError(PodnetError):
    """A patch that cannot be applied (malformed, or a test operation failed): the API's 422/400."""


def merge_key(kind: str, path: str) -> str | None:
    return MERGE_KEYS.get((kind, path)) or MERGE_KEYS.get(("*", path))


def json_patch(doc: dict[str, Any], ops: Any) -> dict[str, Any]:
    if not isinstance(ops, list):
        raise PatchError("json patch: the body must be a list of operations")
    try:
        out = jsonpatch.JsonPatch(ops).apply(doc)
    except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException, TypeError, KeyError) as e:
        raise PatchError(f"json patch: {e}") from None
    if not isinstance(out, dict):
        raise PatchError("json patch: the result is not an object")
    return out


def merge_patch(doc: Any, patch: Any) -> Any:
    """RFC 7386: maps merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    out = dict(doc) if isinstance(doc, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


def strategic_merge_patch(doc: dict[str, Any], patch: Any, kind: str) -> dict[str, Any]:
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch: the body must be a JSON object")
    out = _smp_map(doc, patch, kind, "")
    return out if isinstance(out, dict) else {}


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _smp_map(doc: Any, patch: dict[str, Any], kind: str, path: str) -> Any:
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != "$patch"}
    if directive not in (None, "merge"):
        raise PatchError(f"{path or '(root)'}: unknown $patch directive {directive!r}")
    out = dict(doc) if isinstance(doc, dict) else {}
    retain = patch.get("$retainKeys")
    for k, v in patch.items():
        if k in ("$patch", "$retainKeys") or k.startswith("$setElementOrder/"):
            continue
        if k.startswith("$deleteFromPrimitiveList/"):
            field = k.split("/", 1)[1]
            if isinstance(out.get(field), list) and isinstance(v, list):
                out[field] = [x for x in out[field] if x not in v]
            continue
        sub = _join(path, k)
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict):
            merged = _smp_map(out.get(k), v, kind, sub)
            if merged is None:
                out.pop(k, None)
            else:
                out[k] = merged
        elif isinstance(v, list):
            out[k] = _smp_list(out.get(k), v, kind, sub, patch.get(f"$setElementOrder/{k}"))
        else:
            out[k] = copy.deepcopy(v)
    if isinstance(retain, list):
        out = {k: v for k, v in out.items() if k in retain}
    return out


def _smp_list(doc: Any, patch: list[Any], kind: str, path: str, order: Any) -> list[Any]:
    key = merge_key(kind, path)
    if (kind, path) in MERGE_SCALAR_LISTS or ("*", path) in MERGE_SCALAR_LISTS:
        cur = list(doc) if isinstance(doc, list) else []
        return cur + [x for x in patch if x not in cur]
    if key is None:
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and x.get("$patch"))]
    if any(isinstance(x, dict) and x.get("$patch") == "replace" for x in patch):
        return [copy.deepcopy(x) for x in patch if not (isinstance(x, dict) and "$patch" in x)]
    cur = [x for x in doc if isinstance(x, dict)] if isinstance(doc, list) else []
    index = {x.get(key): i for i, x in enumerate(cur)}
    result = [copy.deepcopy(x) for x in cur]
    deleted: set[Any] = set()
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"{path}: elements must be objects (the list merges on {key!r})")
        if key not in item:
            raise PatchError(f"{path}: an element lacks its merge key {key!r}")
        k = item[key]
        if item.get("$patch") == "delete":
            deleted.add(k)
            continue
        if k in index:
            result[index[k]] = _smp_map(result[index[k]], item, kind, f"{path}[]")
        else:
            index[k] = len(result)
            result.append(_smp_map({}, item, kind, f"{path}[]"))
    result = [x for x in result if x.get(key) not in deleted]
    if isinstance(order, list):
        rank = {(o.get(key) if isinstance(o, dict) else o): i for i, o in enumerate(order)}
        result.sort(key=lambda x: rank.get(x.get(key), len(rank)))
    return result
