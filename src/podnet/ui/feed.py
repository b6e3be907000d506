"""What the API knows, kept current: Nodes, Pods, Services and EndpointSlices from the lab's API server.

The page reads the cluster the way a Kubernetes client does (client-go's reflector): list each kind, then
watch from the list's resourceVersion with bookmarks; a watch that ends is resumed from the last version
seen, and one answered 410 Gone (history compacted) starts over with a fresh list that replaces what was
held. The connection is HTTPS with the lab's CA and the admin client certificate the kubeconfig carries.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from podnet.errors import PodnetError
from podnet.lab import apiserver as lab_apiserver
from podnet.lab.state import LabState
from podnet.ui.errors import UiError

log = logging.getLogger(__name__)

# kind -> collection path (every namespace)
RESOURCES: dict[str, str] = {
    "Node": "/api/v1/nodes",
    "Pod": "/api/v1/pods",
    "Service": "/api/v1/services",
    "EndpointSlice": "/apis/discovery.k8s.io/v1/endpointslices",
}
WATCH_SECONDS = 300  # a watch is renewed this often (the server ends it; we resume from the last version)
READ_TIMEOUT = 30.0  # bookmarks arrive every few seconds; silence this long means the connection is dead
MAX_BACKOFF = 5.0
READ_BUFSIZE = 4 << 20  # one watch event is one line: room for the API's largest object (3 MiB)


@dataclass(frozen=True)
class ApiTarget:
    url: str  # https://127.0.0.1:PORT
    ssl: ssl.SSLContext


def lab_target(st: LabState) -> ApiTarget:
    """The lab's API server as its kubeconfig reaches it: loopback, the lab's CA, the admin certificate."""
    pki = lab_apiserver.pki_dir(st)
    try:
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ApiTarget(f"https://127.0.0.1:{lab_apiserver.port(st)}", ctx)
    except (OSError, ValueError, ssl.SSLError) as e:
        raise UiError(f"lab {st.spec.name}: no API server to watch ({pki}: {e}); is the lab up?") from None


def object_key(obj: Mapping[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name')}" if ns else str(meta.get("name"))


class WatchGone(PodnetError):
    """The server no longer has the history the watch asked for (410): list again."""


def session(target: ApiTarget) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(target.url, connector=aiohttp.TCPConnector(ssl=target.ssl),
                                 read_bufsize=READ_BUFSIZE, headers={"Accept": "application/json"})


async def list_kind(http: aiohttp.ClientSession, kind: str) -> tuple[list[dict[str, Any]], str]:
    async with http.get(RESOURCES[kind], timeout=aiohttp.ClientTimeout(total=30)) as r:
        if r.status != 200:
            raise aiohttp.ClientResponseError(r.request_info, r.history, status=r.status,
                                              message=(await r.text())[:200])
        body = await r.json(loads=json.loads)
    return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion") or "")


async def list_all(target: ApiTarget) -> dict[str, list[dict[str, Any]]]:
    """Every kind once (what `--snapshot` draws)."""
    async with session(target) as http:
        out = {}
        for kind in RESOURCES:
            out[kind], _ = await list_kind(http, kind)
        return out


class ApiFeed:
    """The objects of every kind in RESOURCES, followed; on_change(kind) runs on the event loop after each
    change (a whole re-list counts as one)."""

    def __init__(self, target: ApiTarget, on_change: Callable[[str], None]) -> None:
        self.target = target
        self.on_change = on_change
        self.objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in RESOURCES}
        self.synced: dict[str, bool] = dict.fromkeys(RESOURCES, False)
        self.errors: dict[str, str] = {}
        self.relists = 0

    def snapshot(self) -> dict[str, list[dict[str, Any]]]:
        return {k: list(v.values()) for k, v in self.objects.items()}

    @property
    def connected(self) -> bool:
        return all(self.synced.values()) and not self.errors

    async def run(self) -> None:
        async with session(self.target) as http:
            await asyncio.gather(*(self._follow(http, kind) for kind in RESOURCES))

    async def _follow(self, http: aiohttp.ClientSession, kind: str) -> None:
        rv = ""
        backoff = 0.2
        while True:
            try:
                if not rv:
                    items, rv = await list_kind(http, kind)
                    self.objects[kind] = {object_key(o): o for o in items}
                    self.synced[kind] = True
                    self.relists += 1
                    self._changed(kind)
                rv = await self._watch(http, kind, rv)
                backoff = 0.2
            except WatchGone:
                rv = ""
            except (aiohttp.ClientError, OSError, TimeoutError, ValueError) as e:
                self.errors[kind] = f"{type(e).__name__}: {e}"
                self._changed(kind)
                log.info("%s watch: %s; again in %.1f s", kind, e, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)

    async def _watch(self, http: aiohttp.ClientSession, kind: str, rv: str) -> str:
        """Apply events until the server ends the watch; returns the last version seen."""
        params = {"watch": "1", "resourceVersion": rv, "allowWatchBookmarks": "true",
                  "timeoutSeconds": str(WATCH_SECONDS)}
        timeout = aiohttp.ClientTimeout(total=None, sock_connect=5, sock_read=READ_TIMEOUT)
        async with http.get(RESOURCES[kind], params=params, timeout=timeout) as r:
            if r.status == 410:
                raise WatchGone()
            if r.status != 200:
                raise aiohttp.ClientResponseError(r.request_info, r.history, status=r.status,
                                                  message=(await r.text())[:200])
            if self.errors.pop(kind, None) is not None:
                self._changed(kind)
            async for line in r.content:
                if not line.strip():
                    continue
                ev = json.loads(line)
                typ, obj = ev.get("type"), ev.get("object") or {}
                if typ == "ERROR":
                    if obj.get("code") == 410:
                        raise WatchGone()
                    raise ValueError(f"watch error: {obj.get('message')}")
                rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                if typ == "BOOKMARK":
                    continue
                key = object_key(obj)
                if typ == "DELETED":
                    self.objects[kind].pop(key, None)
                else:
                    self.objects[kind][key] = obj
                self._changed(kind)
        return rv

    def _changed(self, kind: str) -> None:
        try:
            self.on_change(kind)
        except Exception:  # a broken listener must not stop the watch
            log.exception("on_change(%s)", kind)
