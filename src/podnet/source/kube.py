"""The Kubernetes source: the daemons' objects from an API server (kube-proxy's and flanneld's way).

Client library: lightkube. Chosen over the official `kubernetes` client because a node daemon starts and
lives with it: it imports in 0.26 s against 1.31 s, installs 4 MB against 126 MB, and decodes an
EndpointSlice in 25 us against 85 us (shared/reference/dependencies.md, measured). It also does what a
daemon needs and we would otherwise write: kubeconfig and in-cluster config, client certificates, bearer
tokens re-read from their file on 401 (rotated service account tokens), typed patches of subresources.
It is maintained (1.0.1, 2026). We use its generic (dict) resources for list and watch, so objects reach
the daemons' own decoders as the same JSON documents the store holds: one decoding path per kind,
whichever the source.

The informer loop is the store Informer's (podnet.store.informer, which does the re-list diff), driven by
the API instead of the store:

    list (all namespaces, selectors on the server) at resourceVersion R
    watch from R; ADDED/MODIFIED/DELETED become puts and deletes
    410 Gone (R compacted)                 -> list again at once, hand handlers the difference
    connection lost, server down, 5xx      -> list again after a short backoff (0.2 s doubling to 2 s)
    401/403 (expired or wrong credentials) -> an error naming the cause, the credentials re-read, retry

Nothing in this loop ever stops the daemon: while the API is away the handlers keep what they had, so
the kernel keeps its rules and routes, and after the API returns one re-list converges them.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
from typing import Any, TypeVar

from podnet.errors import PodnetError
from podnet.source.base import KINDS, Decode, Handler, Selector
from podnet.source.kubeconfig import KubeOptions
from podnet.store.base import Event, KeyValue
from podnet.store.informer import Informer

log = logging.getLogger(__name__)
logging.getLogger("httpx2").setLevel(logging.WARNING)  # one INFO line per request would drown the daemons' logs

T = TypeVar("T")

WATCH_TIMEOUT = 300  # seconds a watch request lasts on the server before lightkube re-opens it
BACKOFF_MIN, BACKOFF_MAX = 0.2, 2.0
AUTH_BACKOFF_MAX = 5.0
REQUEST_TIMEOUT = 10.0
PAGE = 500  # objects per list page, as client-go's reflector asks


class SourceError(PodnetError):
    """A request to the API server failed (its status and message, or the connection error)."""


def _resource(kind: str) -> type:
    """A lightkube generic (dict-backed) resource class for kind, not registered globally so it never
    shadows lightkube's typed classes for other users in the process."""
    from lightkube.generic_resource import GenericGlobalResource, GenericNamespacedResource, create_api_info

    if kind in _RESOURCES:
        return _RESOURCES[kind]
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: a source serves {', '.join(sorted(KINDS))}")
    group, version, plural, namespaced = KINDS[kind]
    base = GenericNamespacedResource if namespaced else GenericGlobalResource
    cls = type(kind, (base,), {"_api_info": create_api_info(group, version, kind, plural)})
    _RESOURCES[kind] = cls
    return cls


_RESOURCES: dict[str, type] = {}


def _key(doc: dict[str, Any]) -> str:
    meta = doc.get("metadata") or {}
    ns = meta.get("namespace")
    return f"{ns}/{meta.get('name', '')}" if ns else str(meta.get("name", ""))


def _doc(obj: Any) -> dict[str, Any]:
    return obj.to_dict() if hasattr(obj, "to_dict") else dict(obj)


class KubeSource:
    """Objects from a Kubernetes API server. `options` says where it is and who we are (kubeconfig.py)."""

    def __init__(self, options: KubeOptions, *, config: Any = None) -> None:
        from podnet.source import kubeconfig

        self.options = options
        self._config = config if config is not None else kubeconfig.load(options)  # refuses bad flags now
        self._lock = threading.Lock()
        self._client: Any = None

    def describe(self) -> str:
        return f"Kubernetes API ({self.options.describe()}, server {self.server})"

    @property
    def server(self) -> str:
        single = self._config.get()
        return str(single.cluster.server) if single is not None else "?"

    def new_client(self) -> Any:
        """A fresh client (each informer has its own connection; a watch holds one for minutes)."""
        import httpx2
        from lightkube import Client

        return Client(config=self._config, field_manager="podnet", timeout=httpx2.Timeout(REQUEST_TIMEOUT))

    def new_async_client(self) -> Any:
        """The informers' client: lightkube's async one, so a watch can be cancelled (KubeInformer.stop)."""
        import httpx2
        from lightkube import AsyncClient

        with self._lock:
            config = self._config
        return AsyncClient(config=config, field_manager="podnet", timeout=httpx2.Timeout(REQUEST_TIMEOUT))

    def reload(self) -> None:
        """Read the credentials again (after a 401: an operator may have fixed the kubeconfig)."""
        from podnet.source import kubeconfig

        try:
            config = kubeconfig.load(self.options)
        except PodnetError as e:
            log.error("cannot reload the API credentials: %s", e)
            return
        with self._lock:
            self._config = config
            old, self._client = self._client, None
        if old is not None:
            old.close()

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                self._client = self.new_client()
            return self._client

    def informer(self, kind: str, decode: Decode[T], on_change: Handler | None = None, *,
                 selector: Selector | None = None, name: str | None = None) -> Informer[T]:
        return KubeInformer(self, kind, decode, on_change, selector=selector or Selector(),
                            name=name or f"{kind} informer")

    def get(self, kind: str, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        from lightkube.core.exceptions import ApiError

        try:
            return _doc(self.client().get(_resource(kind), name, namespace=namespace))
        except ApiError as e:
            if e.status.code == 404:
                return None
            raise SourceError(f"get {kind} {name}: {e.status.code} {e.status.message}") from e
        except Exception as e:  # httpx transport errors: the server is not reachable
            raise SourceError(f"get {kind} {name}: {type(e).__name__}: {e}") from e

    def patch_node_status(self, node: str, patch: dict[str, Any]) -> dict[str, Any]:
        """nodes/NODE/status with a strategic-merge patch, as flanneld patches its annotations (its RBAC
        grants only `nodes/status patch`, which the apiserver lets change metadata.annotations too)."""
        from lightkube.core.exceptions import ApiError
        from lightkube.resources.core_v1 import Node
        from lightkube.types import PatchType

        try:
            out = self.client().patch(Node.Status, node, patch, patch_type=PatchType.STRATEGIC)
        except ApiError as e:
            raise SourceError(f"patch nodes/{node}/status: {e.status.code} {e.status.reason}: "
                              f"{e.status.message}") from e
        except Exception as e:
            raise SourceError(f"patch nodes/{node}/status: {type(e).__name__}: {e}") from e
        return _doc(out)

    def record_event(self, event: dict[str, Any]) -> None:
        from lightkube.resources.core_v1 import Event as KubeEvent

        meta = event.get("metadata") or {}
        try:
            self.client().create(KubeEvent.from_dict(event), namespace=meta.get("namespace") or "default")
        except Exception as e:  # noqa: BLE001 - an event lost is no reason to fail the work it describes
            log.warning("could not record event %s on %s: %s", event.get("reason"), self.server, e)

    def close(self) -> None:
        with self._lock:
            old, self._client = self._client, None
        if old is not None:
            old.close()


class KubeInformer(Informer[T]):
    """The store Informer's cache and diff, fed by list + watch of one kind on an API server.

    Keys are "namespace/name" ("name" for cluster-scoped kinds); versions are resourceVersions (compared
    for equality only, as Kubernetes wants them treated). `revision` is the last list's or event's version.
    lightkube's async client runs on an event loop in a thread of its own, so stop() can cancel a watch
    blocked on a quiet stream at once (a sync read cannot be interrupted). It hands lists and events to
    the informer's thread through a queue: handlers run in a plain thread, as with the store, never inside
    a running event loop (where pyroute2's sync API, which the overlay's backends use, refuses to work).
    """

    def __init__(self, source: KubeSource, kind: str, decode: Decode[T], on_change: Handler | None, *,
                 selector: Selector, name: str) -> None:
        super().__init__(None, kind, decode_kv=lambda _k, doc: decode(doc), on_change=on_change, name=name)  # type: ignore[arg-type]
        self.source = source
        self.kind = kind
        self.selector = selector
        self.resource = _resource(kind)
        self.namespaced = KINDS[kind][3]
        self.resource_version = ""
        self.last_error: str | None = None  # what the last failure was (None once a list succeeded again)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._q: queue.Queue[tuple[Any, ...] | None] = queue.Queue()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        loop, task = self._loop, self._task
        if loop is not None and task is not None:
            try:
                loop.call_soon_threadsafe(task.cancel)
            except RuntimeError:  # the loop already ended
                pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout)

    def _selectors(self) -> dict[str, Any]:
        from lightkube import operators

        labels: dict[str, Any] = {k: operators.not_exists() for k in self.selector.absent}
        labels.update(self.selector.equal)
        out: dict[str, Any] = {}
        if labels:
            out["labels"] = labels
        if self.selector.fields:
            out["fields"] = dict(self.selector.fields)
        if self.namespaced:
            out["namespace"] = "*"
        return out

    def _set_version(self, rv: str) -> None:
        self.resource_version = rv
        with self._lock:
            self._revision = int(rv) if rv.isdigit() else self._revision

    async def _list(self, client: Any) -> str:
        it = client.list(self.resource, chunk_size=PAGE, **self._selectors())
        items = []
        async for obj in it:
            doc = _doc(obj)
            items.append(KeyValue(_key(doc), doc, 0, (doc.get("metadata") or {}).get("resourceVersion", "")))  # type: ignore[arg-type]
        try:
            rv = it.resourceVersion
        except Exception:  # noqa: BLE001 - an empty list before lightkube saw a page: no version to keep
            rv = ""
        self._q.put(("list", items, rv))
        return rv

    async def _follow(self, client: Any, rv: str) -> None:
        async for typ, obj in client.watch(self.resource, resource_version=rv or None, server_timeout=WATCH_TIMEOUT,
                                           **self._selectors()):
            if self._stop.is_set():
                return
            doc = _doc(obj)
            version = (doc.get("metadata") or {}).get("resourceVersion", "")
            if typ in ("ADDED", "MODIFIED"):
                self._q.put(("event", Event("put", _key(doc), doc, 0), str(version)))  # type: ignore[arg-type]
            elif typ == "DELETED":
                self._q.put(("event", Event("delete", _key(doc), None, 0), str(version)))
            else:
                self._q.put(("version", str(version)))

    def _run(self) -> None:
        """The informer's thread: applies what the client's loop thread lists and watches, in order."""
        threading.Thread(target=self._client_loop, name=f"podnet-{self.name}-client", daemon=True).start()
        while True:
            item = self._q.get()
            if item is None:
                return
            if item[0] == "list":
                self._apply_list(item[1], 0)
                self._set_version(item[2])
                self._synced.set()
            elif item[0] == "event":
                self._apply_event(item[1])
                self._set_version(item[2])
            else:
                self._set_version(item[1])

    def _client_loop(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._arun())
            if self._stop.is_set():
                self._task.cancel()
            try:
                loop.run_until_complete(self._task)
            except asyncio.CancelledError:
                pass
        finally:
            loop.close()
            self._q.put(None)

    async def _sleep(self, delay: float) -> None:
        await asyncio.sleep(delay)

    async def _arun(self) -> None:
        import httpx2
        from lightkube.core.exceptions import ApiError

        delay = BACKOFF_MIN
        while not self._stop.is_set():
            client = self.source.new_async_client()
            try:
                rv = await self._list(client)
                if self.last_error is not None:
                    log.info("%s: listed again from %s after: %s", self.name, self.source.server, self.last_error)
                self.last_error = None
                delay = BACKOFF_MIN
                await self._follow(client, rv)
                if not self._stop.is_set():  # lightkube re-opens ended watches itself; an end here is a gap
                    self.relists += 1
            except ApiError as e:
                if self._stop.is_set():
                    break
                code = e.status.code
                self.relists += 1
                if code == 410:
                    log.info("%s: watch from resourceVersion %s answered 410 Gone (%s); listing again",
                             self.name, self.resource_version, e.status.message)
                    self.last_error = f"410 Gone at resourceVersion {self.resource_version}"
                    continue
                if code in (401, 403):
                    self.last_error = (f"the API server refused our credentials ({code} {e.status.reason}: "
                                       f"{e.status.message})")
                    log.error("%s: %s; check %s (expired token or certificate?); reloading them and retrying "
                              "in %.1fs", self.name, self.last_error, self.source.options.describe(), delay)
                    self.source.reload()
                    await self._sleep(delay)
                    delay = min(delay * 2, AUTH_BACKOFF_MAX)
                    continue
                self.last_error = f"{code} {e.status.reason}: {e.status.message}"
                log.warning("%s: API error %s; listing again in %.1fs", self.name, self.last_error, delay)
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # noqa: BLE001 - transport errors (refused, reset, TLS): the server is away
                if self._stop.is_set():
                    break
                if not isinstance(e, httpx2.HTTPError | OSError):
                    log.exception("%s: unexpected error", self.name)  # a bug: keep its traceback
                self.relists += 1
                self.last_error = f"{type(e).__name__}: {e}"
                log.warning("%s: %s unreachable (%s); keeping what we have, listing again in %.1fs",
                            self.name, self.source.server, self.last_error, delay)
                await self._sleep(delay)
                delay = min(delay * 2, BACKOFF_MAX)
            finally:
                try:
                    await asyncio.shield(client.close())
                except BaseException:  # noqa: BLE001 - closing a half-open client during cancellation
                    pass


__all__ = ["KubeInformer", "KubeSource", "SourceError"]
