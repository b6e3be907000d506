"""The OpenAPI v3 documents kubectl reads before it writes.

kubectl 1.32 validates on the server when the server says it can: it looks in `/openapi/v3/<group-version>`
for a PATCH operation tagged with the kind's x-kubernetes-group-version-kind that takes the `fieldValidation`
query parameter (kubectl's query_param_verifier_v3.go). These documents declare exactly that for every
resource, so `kubectl apply` sends `fieldValidation=Strict` and this server's validation (the same as
`podnet apply`'s) answers.

The schemas come from podnet's own models (one source), with x-kubernetes-patch-merge-key on the lists that
merge by key: kubectl builds client-side apply's strategic-merge patch from them, and `kubectl explain` reads
them. /openapi/v2 stays 404, which kubectl only needs when the v3 documents are missing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from podnet.apiserver import patch, registry

_QUERY = [{"name": n, "in": "query", "schema": {"type": "string"}, "uniqueItems": True}
          for n in ("dryRun", "fieldManager", "fieldValidation", "pretty")]


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def document(group: str, version: str) -> dict[str, Any] | None:
    """The OpenAPI 3.0 document of one group version, or None if the server has no such group version."""
    paths: dict[str, Any] = {}
    for r in registry.RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        gvk = {"group": r.group, "version": r.version, "kind": r.kind}
        base = "/" + _gv_path(group, version)
        coll = f"{base}/namespaces/{{namespace}}/{r.plural}" if r.namespaced else f"{base}/{r.plural}"
        item: dict[str, Any] = {}
        for verb, method in (("get", "get"), ("update", "put"), ("patch", "patch"), ("delete", "delete")):
            if verb in r.verbs:
                item[method] = {"operationId": f"{verb}{r.kind}", "x-kubernetes-action": verb,
                                "x-kubernetes-group-version-kind": gvk, "parameters": _QUERY,
                                "responses": {"200": {"description": "OK"}}}
        collection: dict[str, Any] = {}
        if "list" in r.verbs:
            collection["get"] = {"operationId": f"list{r.kind}", "x-kubernetes-action": "list",
                                 "x-kubernetes-group-version-kind": gvk, "responses": {"200": {"description": "OK"}}}
        if "create" in r.verbs:
            collection["post"] = {"operationId": f"create{r.kind}", "x-kubernetes-action": "post",
                                  "x-kubernetes-group-version-kind": gvk, "parameters": _QUERY,
                                  "responses": {"201": {"description": "Created"}}}
        paths[coll] = collection
        paths[f"{coll}/{{name}}"] = item
    if not paths:
        return None
    return {"openapi": "3.0.0", "info": {"title": "Kubernetes (podnet)", "version": "v1.32.0"}, "paths": paths,
            "components": {"schemas": _schemas(group, version)}}


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


def index() -> dict[str, Any]:
    """/openapi/v3: every group version's document, with a hash clients cache by."""
    gvs = sorted({(r.group, r.version) for r in registry.RESOURCES})
    out: dict[str, Any] = {}
    for g, v in gvs:
        doc = document(g, v)
        if doc is not None:
            path = _gv_path(g, v)
            out[path] = {"serverRelativeURL": f"/openapi/v3/{path}?hash={_hash(doc)}"}
    return {"paths": out}


# ---- schemas ----------------------------------------------------------------------------------------------

def _clean(node: Any, kind: str, dotted: str) -> Any:
    """pydantic's JSON schema in the dialect Kubernetes clients read: nullable branches dropped, int-or-string
    marked as Kubernetes marks it, and the strategic-merge keys on the lists that have them (the same table
    patch.py merges with, so client and server merge alike)."""
    if isinstance(node, list):
        return [_clean(x, kind, dotted) for x in node]
    if not isinstance(node, dict):
        return node
    node = dict(node)
    for union in ("anyOf", "oneOf"):
        if union in node:
            branches = [b for b in node.pop(union) if b != {"type": "null"}]
            types = {b.get("type") for b in branches}
            if types == {"integer", "string"}:
                node.update({"type": "string", "format": "int-or-string", "x-kubernetes-int-or-string": True})
            elif len(branches) == 1:
                node.update(branches[0])
            elif branches:
                node[union] = branches
    node.pop("default", None)
    node.pop("title", None)
    out: dict[str, Any] = {}
    for k, v in node.items():
        if k == "properties" and isinstance(v, dict):
            out[k] = {name: _clean(sub, kind, f"{dotted}.{name}" if dotted else name) for name, sub in v.items()}
        elif k == "items":
            out[k] = _clean(v, kind, f"{dotted}[]")
        else:
            out[k] = _clean(v, kind, dotted)
    if out.get("type") == "array" and (key := patch.merge_key(kind, dotted)):
        out["x-kubernetes-patch-merge-key"] = key
        out["x-kubernetes-patch-strategy"] = "merge"
    return out


def _inline(node: Any, defs: dict[str, Any], depth: int = 0) -> Any:
    if isinstance(node, list):
        return [_inline(x, defs, depth) for x in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node and depth < 12:
        return _inline(defs.get(node["$ref"].rsplit(".", 1)[-1], {}), defs, depth + 1)
    return {k: _inline(v, defs, depth) for k, v in node.items()}


def _schemas(group: str, version: str) -> dict[str, Any]:
    """components.schemas for the kinds of one group version, from podnet's own models (the one schema)."""
    out: dict[str, Any] = {}
    for r in registry.RESOURCES:
        if (r.group, r.version) != (group, version) or r.model is None:
            continue
        prefix = f"io.k8s.api.{r.group.split('.')[0] or 'core'}.{r.version}.{r.kind}"
        raw = r.model.model_json_schema(by_alias=True, ref_template=prefix + ".{model}")
        defs = raw.pop("$defs", {})
        # nested models are inlined per kind: merge keys depend on where a list sits, not on its type
        schema = _clean(_inline(raw, defs), r.kind, "")
        schema["description"] = schema.get("description") or f"{r.kind} ({r.group_version}), as podnet serves it."
        schema["x-kubernetes-group-version-kind"] = [{"group": r.group, "version": r.version, "kind": r.kind}]
        out[prefix] = schema
    return out
