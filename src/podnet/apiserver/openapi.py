"""The OpenAPI v3 documents kubectl reads before it writes.

kubectl 1.32 validates on the server when the server says it can: it looks in `/openapi/v3/<group-version>`
for a PATCH operation tagged with the kind's x-kubernetes-group-version-kind that takes the `fieldValidation`
query parameter (kubectl's query_param_verifier_v3.go). These documents declare exactly that for every
resource, so `kubectl apply` sends `fieldValidation=Strict` and this server's validation (the same as
`podnet apply`'s) answers.

No schemas are published yet. Without one for a kind, kubectl computes a strategic-merge patch from its own
compiled-in types, whose merge keys are Kubernetes' own, so client-side apply stays exact; `kubectl explain`
needs the schemas and is not served yet. /openapi/v2 stays 404, which kubectl only needs when the v3
documents are missing.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from podnet.apiserver import registry

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
            "components": {"schemas": {}}}


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
