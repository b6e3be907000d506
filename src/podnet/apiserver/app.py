"""The aiohttp application: discovery, the verbs of every resource in registry.py, watch streams, auth.

Paths are parsed here rather than by the router, because Kubernetes' paths overlap
(`/api/v1/namespaces/default` is a namespace, `/api/v1/namespaces/default/services` a collection in it).
Store calls block, so they run in the default executor; a watch holds one thread reading the store's watch
and hands events to the response coroutine through a queue.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import secrets
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import yaml
from aiohttp import web

from podnet.api.loader import MAX_OBJECT_BYTES, load
from podnet.api.selectors import parse_selector
from podnet.apiserver import fieldmanager, objects, openapi, patch, protobuf, registry, streams, tables
from podnet.apiserver.registry import ResourceType
from podnet.apiserver.status import ApiError, from_podnet
from podnet.controllers.allocators import AllocatorConfig
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.writeindex import WriteIndex
from podnet.errors import PodnetError
from podnet.store import CompactedError, Store, StoreError, keys

log = logging.getLogger("podnet.apiserver")

MAX_BODY = MAX_OBJECT_BYTES  # kube-apiserver's request body limit, the loader's object limit
GIT_VERSION = "v1.32.0-podnet"
BUILTIN_NAMESPACES = ("default", "kube-system", "kube-public", "kube-node-lease")
BOOKMARK_EVERY = 5.0


@dataclass
class Settings:
    store: Store
    config: AllocatorConfig = field(default_factory=AllocatorConfig)
    tokens: set[str] = field(default_factory=set)
    require_auth: bool = True
    # Where a pod's output is, for pods/log: (namespace, name) -> file. None: this server runs no pods.
    pod_log: Callable[[str, str], Path | None] | None = None
    # The network namespace of a running pod, for pods/exec: (namespace, name) -> netns name.
    pod_netns: Callable[[str, str], str | None] | None = None
    # The write path's watch cache (controllers/writeindex.py): serve.run starts one, so that one apply
    # costs the same in a store of 1k or 10k objects. None: applies read the store itself.
    write_index: WriteIndex | None = None


@dataclass
class Target:
    """What a request path names."""

    rt: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None


# ---- helpers ---------------------------------------------------------------------------------------------


def _as_scale(obj: dict[str, Any]) -> dict[str, Any]:
    meta = obj.get("metadata") or {}
    spec = obj.get("spec") or {}
    selector = ",".join(f"{k}={v}" for k, v in sorted(((spec.get("selector") or {}).get("matchLabels") or {}).items()))
    replicas = spec.get("replicas", 1)
    return {"kind": "Scale", "apiVersion": "autoscaling/v1",
            "metadata": {k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp")
                         if k in meta},
            "spec": {"replicas": replicas},
            "status": {"replicas": (obj.get("status") or {}).get("replicas", 0), "selector": selector}}


def _json(doc: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.Response(body=orjson.dumps(doc), status=status, content_type="application/json", headers=headers)


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    first = accept.split(",")[0]
    return "as=Table" in first


async def _blocking(fn: Any, *args: Any, **kw: Any) -> Any:
    return await asyncio.get_running_loop().run_in_executor(None, lambda: fn(*args, **kw))


def _parse(request: web.Request) -> Target | None:
    """None for a discovery path; raises ApiError 404 for paths naming nothing."""
    parts = [p for p in request.path.split("/") if p]
    if parts[0] == "api":
        if len(parts) < 2 or parts[1] != "v1":
            raise ApiError(404, "the server could not find the requested resource")
        group, version, rest = "", "v1", parts[2:]
    else:
        if len(parts) < 3:
            raise ApiError(404, "the server could not find the requested resource")
        group, version, rest = parts[1], parts[2], parts[3:]
    if not rest:
        return None
    ns: str | None = None
    if rest[0] == "namespaces" and len(rest) >= 3:
        ns, rest = rest[1], rest[2:]
    plural, name, sub = rest[0], rest[1] if len(rest) > 1 else None, rest[2] if len(rest) > 2 else None
    rt = registry.lookup(group, version, plural)
    if rt is None or len(rest) > 3:
        raise ApiError(404, "the server could not find the requested resource")
    if ns is not None and not rt.namespaced:
        raise ApiError(404, "the server could not find the requested resource")
    if sub is not None and sub not in rt.subresources:
        raise ApiError(404, "the server could not find the requested resource")
    return Target(rt, ns if rt.namespaced else None, name, sub)


def _status_metadata(t: Target, live: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """The metadata a status write keeps: the live object's, except that Nodes take new labels and
    annotations too, as kube-apiserver's node status strategy allows (flanneld annotates its Node through
    nodes/status, the only verb its RBAC grants on nodes)."""
    meta = dict(live.get("metadata") or {})
    got = new.get("metadata")
    if t.rt.kind == "Node" and isinstance(got, dict):
        for k in ("labels", "annotations"):
            if k in got:
                meta[k] = got[k]
    return meta


def _api_ref(t: Target, name: str) -> dict[str, Any]:
    return {"kind": t.rt.kind, "plural": t.rt.plural, "name": name, "group": t.rt.group}


def _manager(request: web.Request) -> str:
    """fieldManager, or as kube-apiserver defaults it: the User-Agent up to its first '/'."""
    m = request.query.get("fieldManager")
    if m:
        if len(m) > 128:
            raise ApiError(400, f"fieldManager: {m[:20]!r}...: must be at most 128 characters")
        return m
    return request.headers.get("User-Agent", "unknown").split("/", 1)[0] or "unknown"


def _conflict(t: Target, name: str, err: fieldmanager.ApplyConflict) -> ApiError:
    causes = [{"reason": "FieldManagerConflict", "message": f'conflict with "{m}"', "field": f}
              for m, f in err.conflicts]
    return ApiError(409, str(err), reason="Conflict", details={**_api_ref(t, name), "causes": causes})


def _podnet_error(t: Target, name: str, err: PodnetError) -> ApiError:
    return from_podnet(err, kind=t.rt.kind, plural=t.rt.plural, name=name, group=t.rt.group)


async def _body(request: web.Request) -> Any:
    if request.content_length is not None and request.content_length > MAX_BODY:
        raise ApiError(413, f"the request body is {request.content_length} bytes, over the limit of {MAX_BODY}")
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"the request body is over the limit of {MAX_BODY} bytes") from None
    ctype = request.content_type
    if ctype == "application/vnd.kubernetes.protobuf":
        try:
            return protobuf.decode_body(raw)
        except protobuf.ProtobufError as e:
            raise ApiError(400, f"the protobuf request body cannot be decoded: {e}") from None
    if "protobuf" in ctype or "cbor" in ctype:
        raise ApiError(415, f"the body's content type {ctype!r} is not supported; send application/json")
    try:
        if "yaml" in ctype:
            return yaml.safe_load(raw.decode())
        return json.loads(raw)
    except (ValueError, yaml.YAMLError, UnicodeDecodeError) as e:
        raise ApiError(400, f"the request body is not valid {'YAML' if 'yaml' in ctype else 'JSON'}: {e}") from None


def _matchers(request: web.Request) -> tuple[Any, Any]:
    q = request.query
    try:
        label = parse_selector(q["labelSelector"], "labelSelector") if q.get("labelSelector") else None
    except PodnetError as e:
        raise ApiError(400, f"unable to parse requirement: {e}") from None
    try:
        fields = objects.field_matcher(q["fieldSelector"]) if q.get("fieldSelector") else None
    except ValueError as e:
        raise ApiError(400, str(e)) from None

    def match(o: dict[str, Any] | None) -> bool:
        if o is None:
            return False
        if label is not None and not label(o.get("metadata", {}).get("labels", {}) or {}):
            return False
        return fields is None or fields(o)

    return match, (label, fields)


# ---- the handlers ----------------------------------------------------------------------------------------


class Server:
    def __init__(self, settings: Settings) -> None:
        self.s = settings

    # discovery ------------------------------------------------------------------------------------------
    async def version(self, request: web.Request) -> web.Response:
        return _json({"major": "1", "minor": "32", "gitVersion": GIT_VERSION, "gitCommit": "", "gitTreeState": "",
                      "buildDate": "", "goVersion": "", "compiler": "podnet", "platform": "linux/amd64"})

    async def health(self, request: web.Request) -> web.Response:
        return web.Response(text="ok")

    async def core_versions(self, request: web.Request) -> web.Response:
        return _json({"kind": "APIVersions", "versions": ["v1"], "serverAddressByClientCIDRs": [
            {"clientCIDR": "0.0.0.0/0", "serverAddress": request.host}]})

    async def groups(self, request: web.Request) -> web.Response:
        return _json(registry.group_list())

    async def group(self, request: web.Request) -> web.Response:
        g = request.match_info["group"]
        for grp in registry.groups():
            if grp["name"] == g:
                return _json({"kind": "APIGroup", "apiVersion": "v1", **grp})
        raise ApiError(404, "the server could not find the requested resource")

    async def openapi_v3(self, request: web.Request) -> web.Response:
        tail = request.match_info.get("tail", "").strip("/")
        if not tail:
            return _json(openapi.index())
        parts = tail.split("/")
        doc = None
        if parts[0] == "api" and len(parts) == 2:
            doc = openapi.document("", parts[1])
        elif parts[0] == "apis" and len(parts) == 3:
            doc = openapi.document(parts[1], parts[2])
        if doc is None:
            raise ApiError(404, "the server could not find the requested resource")
        return _json(doc)

    async def openapi_missing(self, request: web.Request) -> web.Response:
        raise ApiError(404, "the server could not find the requested resource")

    # resources ------------------------------------------------------------------------------------------
    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        t = _parse(request)
        if t is None:
            parts = [p for p in request.path.split("/") if p]
            group, version = ("", "v1") if parts[0] == "api" else (parts[1], parts[2])
            doc = registry.resource_list(group, version)
            if doc is None:
                raise ApiError(404, "the server could not find the requested resource")
            return _json(doc)
        m = request.method
        if t.sub == "exec" and m in ("GET", "POST"):
            return await self.pod_exec(request, t)
        verb = {"GET": "get", "POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}.get(m)
        if t.name is None:
            verb = {"get": "watch" if request.query.get("watch") in ("true", "1") else "list",
                    "delete": "deletecollection", "create": "create"}.get(verb or "", None)
        elif verb == "create":
            verb = None
        if verb is None or verb not in (t.rt.verbs if t.sub is None else t.rt.subresources.get(t.sub, [])):
            raise ApiError(405, f"the server does not allow this method on the requested resource ({m})")
        if t.sub == "scale":
            return await self.scale(request, t, verb)
        return await getattr(self, f"do_{verb}")(request, t)

    async def do_get(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None
        obj = await _blocking(objects.get_object, self.s.store, t.rt, t.namespace, t.name)
        if obj is None:
            raise ApiError(404, f'{t.rt.plural} "{t.name}" not found', details=_api_ref(t, t.name))
        if t.sub == "log":
            return await self.pod_log(request, t, obj)
        if _wants_table(request):
            return _json(tables.table(t.rt.kind, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                                      include=request.query.get("includeObject", "Metadata")))
        return _json(obj)

    async def pod_exec(self, request: web.Request, t: Target) -> web.StreamResponse:
        assert t.name is not None and t.namespace is not None
        pod = await _blocking(objects.get_object, self.s.store, t.rt, t.namespace, t.name)
        if pod is None:
            raise ApiError(404, f'pods "{t.name}" not found', details=_api_ref(t, t.name))
        where = self.s.pod_netns(t.namespace, t.name) if self.s.pod_netns else None
        if where is None or (pod.get("status") or {}).get("phase") != "Running":
            raise ApiError(400, f'pod "{t.name}" is not running here: cannot exec into it')
        if request.headers.get("Upgrade", "").lower() != "websocket":
            raise ApiError(400, "exec needs a WebSocket upgrade (v5.channel.k8s.io or v4.channel.k8s.io)")
        return await streams.pod_exec(request, where)

    async def pod_log(self, request: web.Request, t: Target, pod: dict[str, Any]) -> web.StreamResponse:
        """`kubectl logs [-f] [--tail N]`: the pod process's output, as the lab's agent captures it."""
        assert t.name is not None and t.namespace is not None
        path = self.s.pod_log(t.namespace, t.name) if self.s.pod_log else None
        if path is None or not path.exists():
            raise ApiError(400, f'container of pod "{t.name}" is not running: no output to show')
        q = request.query
        try:
            tail = int(q["tailLines"]) if "tailLines" in q else None
        except ValueError:
            raise ApiError(400, f"tailLines: {q['tailLines']!r}: not an integer") from None
        follow = q.get("follow") in ("true", "1")
        resp = web.StreamResponse(headers={"Content-Type": "text/plain"})
        await resp.prepare(request)
        with path.open("rb") as f:
            data = f.read()
            if tail is not None:
                lines = data.splitlines(keepends=True)
                data = b"".join(lines[-tail:]) if tail > 0 else b""
            await resp.write(data)
            while follow:
                chunk = f.read()
                if chunk:
                    await resp.write(chunk)
                    continue
                live = await _blocking(objects.get_object, self.s.store, t.rt, t.namespace, t.name)
                if live is None or live.get("metadata", {}).get("uid") != pod["metadata"].get("uid"):
                    break  # the pod is gone: so is its log stream, as with a real kubelet
                await asyncio.sleep(0.2)
        return resp

    async def do_list(self, request: web.Request, t: Target) -> web.Response:
        match, _ = _matchers(request)
        q = request.query
        after: str | None = None
        rev_pinned: int | None = None
        if q.get("continue"):
            try:
                token = json.loads(base64.urlsafe_b64decode(q["continue"].encode()))
                after, rev_pinned = str(token["start"]), int(token["rv"])
            except (ValueError, KeyError, TypeError):
                raise ApiError(400, f"continue: {q['continue']!r}: not a continue token this server gave") from None
        limit: int | None = None
        if q.get("limit"):
            try:
                limit = int(q["limit"])
            except ValueError:
                raise ApiError(400, f"limit: {q['limit']!r}: not an integer") from None
            limit = limit if limit > 0 else None
        items, rev, next_key = await _blocking(objects.list_page, self.s.store, t.rt, t.namespace, match,
                                               after=after, limit=limit)
        # Pages after the first are read at the current revision (the store keeps no snapshots to page
        # through); the continue token keeps the first page's version, as clients expect one version per list.
        if rev_pinned is not None:
            rev = rev_pinned
        cont = (base64.urlsafe_b64encode(json.dumps({"start": next_key, "rv": rev}).encode()).decode()
                if next_key is not None else None)
        if _wants_table(request):
            return _json(tables.table(t.rt.kind, items, resource_version=str(rev), cont=cont,
                                      include=request.query.get("includeObject", "Metadata")))
        meta: dict[str, Any] = {"resourceVersion": str(rev)}
        if cont:
            meta["continue"] = cont
        api_version = t.rt.group_version
        return _json({"kind": f"{t.rt.kind}List", "apiVersion": api_version, "metadata": meta, "items": [
            {"apiVersion": api_version, "kind": t.rt.kind, **o} for o in items]})

    # writes -------------------------------------------------------------------------------------------------
    def _decode_body(self, request: web.Request, t: Target, body: Any) -> tuple[Any, list[str]]:
        """The typed object of a request body, validated as `podnet apply` validates; the warnings."""
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        # Typed clients may leave apiVersion/kind empty: the path says what the body is, as for the real server.
        kind = body.setdefault("kind", t.rt.kind) or t.rt.kind
        api_version = body.setdefault("apiVersion", t.rt.group_version) or t.rt.group_version
        body["kind"], body["apiVersion"] = kind, api_version
        if kind != t.rt.kind or api_version != t.rt.group_version:
            raise ApiError(400, f"the body is {api_version}/{kind}, the request path is for "
                                f"{t.rt.group_version}/{t.rt.kind}")
        meta = body.setdefault("metadata", {})
        if not isinstance(meta, dict):
            raise ApiError(400, "metadata: must be an object")
        if t.rt.namespaced:
            if meta.get("namespace") and meta["namespace"] != t.namespace:
                raise ApiError(400, "the namespace of the provided object does not match the namespace sent on "
                                    "the request")
            meta["namespace"] = t.namespace
        if not meta.get("name") and meta.get("generateName") and request.method == "POST":
            meta["name"] = f"{meta['generateName']}{secrets.token_hex(3)[:5]}"
        if t.name is not None and meta.get("name") and meta["name"] != t.name:
            raise ApiError(400, f'the name of the object ({meta["name"]}) does not match the name on the URL '
                                f"({t.name})")
        if t.name is not None and not meta.get("name"):
            meta["name"] = t.name
        loaded = load(json.dumps(body).encode(), check=True)
        name = str(meta.get("name") or "")
        if loaded.problems:
            from podnet.errors import ValidationError

            raise _podnet_error(t, name, ValidationError(loaded.problems))
        unknown = [w.split(": unknown field ", 1)[-1] for w in loaded.warnings]
        mode = request.query.get("fieldValidation", "Warn")
        if mode == "Strict" and unknown:
            raise ApiError(400, "strict decoding error: " + ", ".join(f"unknown field {u}" for u in unknown))
        warnings = [] if mode == "Ignore" else [f"unknown field {u}" for u in unknown]
        return loaded.objects[0], warnings

    def _dry_run(self, request: web.Request) -> bool:
        dr = request.query.getall("dryRun", [])
        for v in dr:
            if v != "All":
                raise ApiError(400, f'dryRun: Unsupported value: "{v}": supported values: "All"')
        return bool(dr)

    async def _write(self, request: web.Request, t: Target, obj: Any, must: str,
                     warnings: list[str]) -> web.Response:
        dry = self._dry_run(request)
        try:
            results = await _blocking(apply_objects, self.s.store, [obj], self.s.config, dry_run=dry, must=must,
                                      index=self.s.write_index)
        except PodnetError as e:
            raise _podnet_error(t, obj.name, e) from None
        out = None if dry else await _blocking(objects.get_object, self.s.store, t.rt, obj.namespace, obj.name)
        if out is None:
            out = results[0].obj.to_dict() if results else obj.to_dict()
        headers = {"Warning": ", ".join(f'299 - "{w}"' for w in warnings)} if warnings else None
        return _json(out, status=201 if must == "create" else 200, headers=headers)

    async def do_create(self, request: web.Request, t: Target) -> web.Response:
        body = await _body(request)
        if isinstance(body, dict):
            body.setdefault("kind", t.rt.kind)
            body.setdefault("apiVersion", t.rt.group_version)
            fieldmanager.track_update(None, body, manager=_manager(request), kind=t.rt.kind)
        obj, warnings = self._decode_body(request, t, body)
        obj.metadata.resource_version = None
        return await self._write(request, t, obj, "create", warnings)

    async def do_update(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        body = await _body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        live = await self._live(t)
        if t.sub == "status":
            body = {**live, "status": body.get("status", {}),
                    "metadata": {**live["metadata"],
                                 "resourceVersion": (body.get("metadata") or {}).get("resourceVersion")}}
        else:
            body.setdefault("metadata", {})["managedFields"] = live["metadata"].get("managedFields", [])
            fieldmanager.track_update(live, body, manager=_manager(request), kind=t.rt.kind)
        obj, warnings = self._decode_body(request, t, body)
        return await self._write(request, t, obj, "update", warnings)

    async def scale(self, request: web.Request, t: Target, verb: str) -> web.Response:
        """The autoscaling/v1 Scale of a Deployment (`kubectl scale`): spec.replicas read and written alone."""
        assert t.name is not None
        live = await self._live(t)
        cur = _as_scale(live)
        if verb == "get":
            return _json(cur)
        body = await _body(request)
        if not isinstance(body, dict):
            raise ApiError(400, "the request body must be a JSON object")
        ctype = request.content_type
        try:
            if verb == "update":
                rv = (body.get("metadata") or {}).get("resourceVersion")
                if rv and rv != live["metadata"].get("resourceVersion"):
                    raise ApiError(409, f'Operation cannot be fulfilled on {t.rt.plural}.{t.rt.group} "{t.name}": '
                                        "the object has been modified; please apply your changes to the latest "
                                        "version and try again", reason="Conflict", details=_api_ref(t, t.name))
                new = body
            elif ctype == "application/json-patch+json":
                new = patch.json_patch(cur, body)
            elif ctype in ("application/merge-patch+json", "application/strategic-merge-patch+json"):
                new = patch.merge_patch(cur, body)
            else:
                raise ApiError(415, f"the patch content type {ctype!r} is not supported on scale")
        except patch.PatchError as e:
            raise ApiError(422, str(e)) from None
        replicas = (new.get("spec") or {}).get("replicas") if isinstance(new.get("spec"), dict) else None
        if type(replicas) is not int or replicas < 0:
            cause = {"reason": "FieldValueInvalid", "field": "spec.replicas",
                     "message": f"Invalid value: {replicas!r}: must be greater than or equal to 0"}
            raise ApiError(422, f'Scale.autoscaling "{t.name}" is invalid: spec.replicas: Invalid value: '
                                f"{replicas!r}: must be greater than or equal to 0", reason="Invalid",
                           details={**_api_ref(t, t.name), "kind": "Scale", "causes": [cause]})
        live.setdefault("spec", {})["replicas"] = replicas
        live["metadata"]["managedFields"] = live["metadata"].get("managedFields", [])
        obj, _warnings = self._decode_body(request, t, live)
        resp = await self._write(request, t, obj, "update", [])
        # _json() gave the response bytes; aiohttp types a Response's body as bytes | Payload | None
        return _json(_as_scale(json.loads(resp.body)))  # type: ignore[arg-type]

    async def _live(self, t: Target) -> dict[str, Any]:
        assert t.name is not None
        live = await _blocking(objects.get_object, self.s.store, t.rt, t.namespace, t.name)
        if live is None:
            raise ApiError(404, f'{t.rt.plural} "{t.name}" not found', details=_api_ref(t, t.name))
        live.setdefault("apiVersion", t.rt.group_version)
        live.setdefault("kind", t.rt.kind)
        return live

    async def do_patch(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        ctype = request.content_type
        body = await _body(request)
        for _attempt in range(5):
            try:
                live = await self._live(t)
            except ApiError as e:
                if e.code == 404 and ctype == "application/apply-patch+yaml" and t.sub is None:
                    return await self._apply_create(request, t, body)
                raise
            try:
                if ctype == "application/json-patch+json":
                    new = patch.json_patch(live, body)
                elif ctype == "application/merge-patch+json":
                    new = patch.merge_patch(live, body)
                elif ctype == "application/strategic-merge-patch+json":
                    new = patch.strategic_merge_patch(live, body, t.rt.kind)
                elif ctype == "application/apply-patch+yaml":
                    new = self._apply(request, t, live, body)
                else:
                    raise ApiError(415, f"the patch content type {ctype!r} is not supported")
            except patch.PatchError as e:
                raise ApiError(422, str(e)) from None
            if t.sub == "status":
                new = {**live, "status": new.get("status", {}), "metadata": _status_metadata(t, live, new)}
            if not isinstance(new.get("metadata"), dict):
                raise ApiError(422, "metadata: must be an object")
            new["metadata"]["resourceVersion"] = live["metadata"].get("resourceVersion")
            if ctype != "application/apply-patch+yaml" and t.sub is None:
                new["metadata"]["managedFields"] = live["metadata"].get("managedFields", [])
                fieldmanager.track_update(live, new, manager=_manager(request), kind=t.rt.kind)
            obj, warnings = self._decode_body(request, t, new)
            try:
                return await self._write(request, t, obj, "update", warnings)
            except ApiError as e:
                if e.code == 409 and e.reason == "Conflict":
                    continue  # someone wrote in between: patch the newer object
                raise
        raise ApiError(409, f'{t.rt.plural} "{t.name}": the object kept changing while being patched')

    def _apply(self, request: web.Request, t: Target, live: dict[str, Any] | None, body: Any) -> dict[str, Any]:
        """Server-side apply: field ownership, conflicts and removals (fieldmanager.py)."""
        if not request.query.get("fieldManager"):
            raise ApiError(400, "PATCH with application/apply-patch+yaml requires a fieldManager")
        if not isinstance(body, dict):
            raise ApiError(400, "the applied configuration must be an object")
        body.setdefault("kind", t.rt.kind)
        body.setdefault("apiVersion", t.rt.group_version)
        force = request.query.get("force") in ("true", "1")
        try:
            return fieldmanager.apply(live, body, manager=request.query["fieldManager"], force=force, kind=t.rt.kind)
        except fieldmanager.ApplyConflict as e:
            name = str((live or body).get("metadata", {}).get("name", t.name))
            raise _conflict(t, name, e) from None

    async def _apply_create(self, request: web.Request, t: Target, body: Any) -> web.Response:
        new = self._apply(request, t, None, body)
        obj, warnings = self._decode_body(request, t, new)
        return await self._write(request, t, obj, "create", warnings)

    async def do_delete(self, request: web.Request, t: Target) -> web.Response:
        assert t.name is not None
        live = await self._live(t)
        dry = self._dry_run(request)
        try:
            await _blocking(delete_objects, self.s.store, [(t.rt.kind, t.namespace, t.name)], config=self.s.config,
                            dry_run=dry, index=self.s.write_index)
        except PodnetError as e:
            raise _podnet_error(t, t.name, e) from None
        return _json(live)

    async def do_deletecollection(self, request: web.Request, t: Target) -> web.Response:
        match, _ = _matchers(request)
        items, _rev = await _blocking(objects.list_objects, self.s.store, t.rt, t.namespace)
        refs = [(t.rt.kind, o["metadata"].get("namespace"), o["metadata"]["name"]) for o in items if match(o)]
        dry = self._dry_run(request)
        if refs:
            try:
                await _blocking(delete_objects, self.s.store, refs, ignore_not_found=True, config=self.s.config,
                                dry_run=dry, index=self.s.write_index)
            except StoreError:
                raise  # the middleware answers 503
            except PodnetError as e:
                raise ApiError(500, str(e)) from None
        return _json({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success"})

    # watch --------------------------------------------------------------------------------------------------
    async def do_watch(self, request: web.Request, t: Target) -> web.StreamResponse:
        match, _ = _matchers(request)
        q = request.query
        as_table = _wants_table(request)
        try:
            timeout = float(q.get("timeoutSeconds", "1800"))
        except ValueError:
            raise ApiError(400, f"timeoutSeconds: {q['timeoutSeconds']!r}: not a number") from None
        bookmarks = q.get("allowWatchBookmarks") in ("true", "1")
        rv_text = q.get("resourceVersion", "")
        try:
            since = int(rv_text) if rv_text not in ("", "0") else None
        except ValueError:
            raise ApiError(400, f"resourceVersion: {rv_text!r}: not a resource version") from None

        initial: list[dict[str, Any]] = []
        if since is None:
            initial, since = await _blocking(objects.list_objects, self.s.store, t.rt, t.namespace)
            initial = [o for o in initial if match(o)]
        store = self.s.store
        watch_prefix = objects.prefix(t.rt, t.namespace)
        try:
            w = await _blocking(store.watch, watch_prefix, since + 1)
        except CompactedError as e:
            w = None
            gone = e
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()
        resp = web.StreamResponse(headers={"Content-Type": "application/json", "Cache-Control": "no-cache"})
        await resp.prepare(request)
        first = [True]
        api_version = t.rt.group_version

        async def send(typ: str, obj: dict[str, Any]) -> None:
            obj = {"apiVersion": api_version, "kind": t.rt.kind, **obj}
            if as_table and typ != "BOOKMARK":
                obj = tables.table(t.rt.kind, [obj], resource_version=obj["metadata"].get("resourceVersion", ""),
                                   include=q.get("includeObject", "Metadata"), with_columns=first[0])
                first[0] = False
            await resp.write(json.dumps({"type": typ, "object": obj}, separators=(",", ":")).encode() + b"\n")

        if w is None:
            await resp.write(json.dumps({"type": "ERROR", "object": ApiError(
                410, f"too old resource version: {since} ({gone.compact_revision})").status()}).encode() + b"\n")
            return resp

        pump_done = loop.create_future()

        def pump_finished() -> None:
            if not pump_done.done():
                pump_done.set_result(None)

        def pump() -> None:
            try:
                for ev in w:
                    loop.call_soon_threadsafe(queue.put_nowait, ev)
            except CompactedError as e:
                loop.call_soon_threadsafe(queue.put_nowait, e)
            except StoreError as e:
                loop.call_soon_threadsafe(queue.put_nowait, e)
            finally:
                try:
                    loop.call_soon_threadsafe(queue.put_nowait, None)
                    loop.call_soon_threadsafe(pump_finished)
                except RuntimeError:  # the loop is gone (server shutting down)
                    pass

        # Its own thread, not the default executor: a watch blocks its reader for its whole life, and a
        # few idle watches (three per node proxy, one per overlay) would otherwise take every executor
        # thread and stall every other request.
        threading.Thread(target=pump, name="apiserver-watch", daemon=True).start()
        deadline = time.monotonic() + timeout
        last_rev = since
        try:
            for o in initial:
                await send("ADDED", o)
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                try:
                    ev = await asyncio.wait_for(queue.get(), timeout=min(left, BOOKMARK_EVERY))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break  # the client went away (aiohttp does not cancel the handler): free the watch
                    if bookmarks:
                        await send("BOOKMARK", {"metadata": {"resourceVersion": str(last_rev)}})
                    continue
                if ev is None:
                    break
                if isinstance(ev, CompactedError):
                    await resp.write(json.dumps({"type": "ERROR", "object": ApiError(
                        410, f"too old resource version: {since}").status()}).encode() + b"\n")
                    break
                if isinstance(ev, StoreError):
                    break
                last_rev = ev.revision
                for typ, obj in await _blocking(self._events_of, t, ev, match):
                    await send(typ, obj)
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            w.close()
            try:
                await asyncio.wait_for(asyncio.shield(pump_done), 5.0)
            except TimeoutError:
                log.warning("watch of %s: the store watch did not end within 5 s of close()", watch_prefix)
        return resp

    def _events_of(self, t: Target, ev: Any, match: Any) -> list[tuple[str, dict[str, Any]]]:
        """The watch events one store event makes for a client (filtered by its selectors)."""
        if not t.rt.stored:
            return self._endpoints_events(t, ev, match)
        from podnet.store import KeyValue

        new = objects.decode(KeyValue(ev.key, ev.value, 0, ev.revision)) if ev.type == "put" else None
        old = (objects.decode(KeyValue(ev.key, ev.prev_value, 0, ev.revision))
               if ev.prev_value is not None else None)
        if old is not None:
            old["metadata"]["resourceVersion"] = str(ev.revision)
        was, now = match(old), match(new)
        if now and new is not None:
            return [("ADDED" if not was else "MODIFIED", new)]
        if was and old is not None:
            return [("DELETED", old)]
        return []

    def _endpoints_events(self, t: Target, ev: Any, match: Any) -> list[tuple[str, dict[str, Any]]]:
        from podnet.store import KeyValue

        svc = None
        for value in (ev.value, ev.prev_value):
            if value is not None and (d := objects.decode(KeyValue(ev.key, value, 0, ev.revision))):
                svc = (d["metadata"].get("namespace"), d["metadata"].get("labels", {}).get(objects.SERVICE_NAME_LABEL))
        if svc is None or svc[1] is None:
            return []
        ns, name = svc
        items, _ = objects.list_objects(self.s.store, t.rt, ns)
        ep = next((e for e in items if e["metadata"]["name"] == name), None)
        if ep is not None:
            ep["metadata"]["resourceVersion"] = str(ev.revision)
            return [("MODIFIED", ep)] if match(ep) else []
        gone = {"metadata": {"name": name, "namespace": ns, "resourceVersion": str(ev.revision)}}
        return [("DELETED", gone)] if match(gone) else []


# ---- the application -------------------------------------------------------------------------------------


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiError as e:
        return _json(e.status(), status=e.code)
    except web.HTTPException as e:
        if e.status == 413:
            return _json(ApiError(413, "request entity too large").status(), status=413)
        if e.status >= 400:
            return _json(ApiError(e.status, e.reason or "error").status(), status=e.status)
        raise
    except StoreError as e:
        return _json(ApiError(503, f"the store is unavailable: {e}").status(), status=503)


def _auth(settings: Settings) -> Any:
    @web.middleware
    async def auth(request: web.Request, handler: Any) -> web.StreamResponse:
        if settings.require_auth:
            peer = request.transport.get_extra_info("peercert") if request.transport else None
            header = request.headers.get("Authorization", "")
            token = header[7:].strip() if header.startswith("Bearer ") else None
            if not peer and not (token and any(secrets.compare_digest(token, t) for t in settings.tokens)):
                raise ApiError(401, "Unauthorized")
        return await handler(request)

    return auth


def make_app(settings: Settings) -> web.Application:
    srv = Server(settings)
    app = web.Application(middlewares=[_errors, _auth(settings)], client_max_size=MAX_BODY + 1)
    app["server"] = srv
    r = app.router
    r.add_get("/version", srv.version)
    for path in ("/healthz", "/livez", "/readyz"):
        r.add_get(path, srv.health)
    r.add_get("/api", srv.core_versions)
    r.add_get("/apis", srv.groups)
    r.add_get("/apis/{group}", srv.group)
    r.add_get("/openapi/v3", srv.openapi_v3)
    r.add_get("/openapi/v3/{tail:.*}", srv.openapi_v3)
    r.add_get("/openapi/{tail:.*}", srv.openapi_missing)
    r.add_route("*", "/api/{tail:.+}", srv.dispatch)
    r.add_route("*", "/apis/{group}/{version}{tail:.*}", srv.dispatch)
    return app


def ensure_namespaces(store: Store) -> None:
    """The namespaces every cluster has, made once (kube-apiserver's system namespaces controller)."""
    from podnet.api.cluster import Namespace

    missing = [Namespace.model_validate({"metadata": {"name": n}, "status": {"phase": "Active"}})
               for n in BUILTIN_NAMESPACES if store.get(keys.resource("Namespace", None, n)) is None]
    if missing:
        apply_objects(store, missing)


def tls_context(cert: str, key: str, ca: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(ca)
    ctx.verify_mode = ssl.CERT_OPTIONAL  # a certificate authenticates; without one a token must
    return ctx
