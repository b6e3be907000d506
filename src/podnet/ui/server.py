"""The page's server: aiohttp (the API server's HTTP stack), loopback only unless told otherwise.

    GET  /                the page            GET /static/NAME   its script and styles (from the package)
    GET  /api/scene       the current scene (layout.scene + status + the trace form's suggestions)
    GET  /api/events      server-sent events: "scene" with the whole scene, at once and after every change
    POST /api/trace       {"from", "to", "proto"?, "sport"?, "verify"?} -> {"trace": <podnet trace -o json>,
                          "overlay": <shapes of its path on the current scene>}
    POST /api/overlay     {"trace", "outcome"?} -> {"overlay"}: the path again, on the scene as it is now

Changes come from the API's watches (feed.py) and the store's lease informer (facts.py); bursts are
collapsed (DEBOUNCE) and the scene is built once per burst for every page that listens. POSTs must carry
the X-Podnet-UI header and a Host naming the address served: a page of another site in the same browser
can neither start traces nor read the lab by rebinding a name to 127.0.0.1.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import mimetypes
import signal
from importlib import resources
from pathlib import Path
from typing import Any

from aiohttp import web

from podnet.lab.state import LabState
from podnet.ui import facts as facts_mod
from podnet.ui import feed as feed_mod
from podnet.ui import layout, model, svg, tracing
from podnet.ui.errors import UiError

log = logging.getLogger(__name__)

DEBOUNCE = 0.03  # seconds a burst of changes is collected before the scene is rebuilt
KEEPALIVE = 15.0
HEADER = "X-Podnet-UI"
STATIC = ("index.html", "app.js", "app.css", "scene.css")


def parse_listen(text: str, *, allow_non_loopback: bool = False) -> tuple[str, int]:
    host, sep, port_text = text.rpartition(":")
    if not sep or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise UiError(f"--listen: {text!r}: give HOST:PORT, e.g. 127.0.0.1:8480 (port 0: any free port)")
    host = host.strip("[]")
    if host == "localhost":
        host = "127.0.0.1"
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise UiError(f"--listen: {text!r}: {host!r} is not an IP address") from None
    if not ip.is_loopback and not allow_non_loopback:
        raise UiError(f"--listen: {text!r}: not a loopback address; the page shows the lab's objects and runs "
                      "traces for whoever reaches it: give --allow-non-loopback to serve it there anyway")
    return str(ip), int(port_text)


def _static(name: str) -> bytes:
    return resources.files("podnet.ui").joinpath(f"static/{name}").read_bytes()


class UiServer:
    """feed and watch default to the lab's API server and store; tests give their own."""

    def __init__(self, st: LabState, *, allow_any_host: bool = False, feed: Any = None, watch: Any = None) -> None:
        self.st = st
        self.allow_any_host = allow_any_host
        self.hosts: set[str] = set()  # Host header values that name this server (set once listening)
        self.version = 0
        self.scene: dict[str, Any] = {}
        self._cond = asyncio.Condition()
        self._dirty = asyncio.Event()
        self._trace_lock = asyncio.Lock()
        self.feed = feed if feed is not None else feed_mod.ApiFeed(feed_mod.lab_target(st), self.changed)
        self.watch: facts_mod.LabWatch | None = watch
        self._tasks: list[asyncio.Task[None]] = []
        self.closing = False

    # lifecycle ------------------------------------------------------------------------------------------
    async def start(self) -> None:
        loop = asyncio.get_running_loop()
        if self.watch is None:
            self.watch = await loop.run_in_executor(
                None, lambda: facts_mod.LabWatch(self.st, lambda: loop.call_soon_threadsafe(self.changed)).start())
        self._rebuild()
        self._tasks = [asyncio.create_task(self.feed.run(), name="ui feed"),
                       asyncio.create_task(self._rebuilder(), name="ui rebuild")]

    async def stop(self) -> None:
        for t in self._tasks:
            t.cancel()
        for t in self._tasks:
            try:
                await t
            except (asyncio.CancelledError, Exception):
                pass
        if self.watch is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.watch.close)

    def changed(self, *_: object) -> None:
        """Something the picture shows changed (called on the event loop)."""
        self._dirty.set()

    async def _rebuilder(self) -> None:
        while True:
            await self._dirty.wait()
            await asyncio.sleep(DEBOUNCE)
            self._dirty.clear()
            try:
                # read on the loop (the feed changes there), lay out in a thread: a big lab's picture takes
                # a few hundred ms (benchmarks/ui.py), and the loop keeps serving meanwhile
                inputs = self._inputs()
                self._publish(await asyncio.get_running_loop().run_in_executor(None, self._build, *inputs))
            except Exception:  # a picture that cannot be built must not end the page's updates
                log.exception("building the scene")
                continue
            async with self._cond:
                self._cond.notify_all()

    def _inputs(self) -> tuple[model.LabFacts, dict[str, list[dict[str, Any]]], dict[str, Any]]:
        assert self.watch is not None
        status = {"api": "connected" if self.feed.connected else "connecting", "errors": dict(self.feed.errors)}
        return self.watch.facts(), self.feed.snapshot(), status

    @staticmethod
    def _build(facts: model.LabFacts, objects: dict[str, list[dict[str, Any]]],
               status: dict[str, Any]) -> dict[str, Any]:
        v = model.build(facts, objects)
        sc = layout.scene(v)
        sc["lab"] = v.name
        sc["status"] = {**status, "warnings": list(v.warnings),
                        "counts": {"nodes": len(v.nodes), "pods": len(v.pods()), "services": len(v.services)}}
        sc["choices"] = tracing.choices(v)
        return sc

    def _publish(self, sc: dict[str, Any]) -> None:
        self.version += 1
        sc["version"] = self.version
        self.scene = sc

    def _rebuild(self) -> None:
        self._publish(self._build(*self._inputs()))

    # handlers -------------------------------------------------------------------------------------------
    async def index(self, request: web.Request) -> web.Response:
        return web.Response(body=_static("index.html"), content_type="text/html", charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def static(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        if name not in STATIC:
            raise web.HTTPNotFound(text=f"no asset {name!r}")
        ctype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return web.Response(body=_static(name), content_type=ctype, headers={"Cache-Control": "no-cache"})

    async def get_scene(self, request: web.Request) -> web.Response:
        return web.json_response(self.scene)

    async def events(self, request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
        await resp.prepare(request)
        sent = -1
        try:
            while not self.closing:
                if self.version != sent:
                    sent = self.version
                    data = json.dumps(self.scene, separators=(",", ":"))
                    await resp.write(f"event: scene\nid: {sent}\ndata: {data}\n\n".encode())
                    continue
                try:
                    async with self._cond:
                        await asyncio.wait_for(self._cond.wait_for(self._newer_than(sent)), KEEPALIVE)
                except TimeoutError:
                    await resp.write(b": keepalive\n\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        return resp

    def _newer_than(self, version: int) -> Any:
        return lambda: self.version != version or self.closing

    async def close_streams(self) -> None:
        """End every event stream (a server that stops must not wait for browsers to hang up)."""
        self.closing = True
        async with self._cond:
            self._cond.notify_all()

    async def trace(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        src, dst = str(body.get("from") or "").strip(), str(body.get("to") or "").strip()
        proto = str(body.get("proto") or "tcp")
        problems = []
        if not src:
            problems.append("from: a pod, a node or an IP in the lab is needed")
        if not dst:
            problems.append("to: IP:PORT, svc/NAME[:PORT] or [ns/]pod[:PORT] is needed")
        if proto not in tracing.PROTOS:
            problems.append(f"proto: {proto!r}: one of {', '.join(tracing.PROTOS)}")
        sport = body.get("sport")
        if sport in ("", None):
            sport = None
        elif not str(sport).isdigit() or not 1 <= int(sport) <= 65535:
            problems.append(f"sport: {sport!r}: a port from 1 to 65535")
        if problems:
            return web.json_response({"error": "; ".join(problems)}, status=400)
        verify = bool(body.get("verify"))
        from podnet.errors import PodnetError
        from podnet.store import StoreError
        from podnet.trace.errors import TraceError

        loop = asyncio.get_running_loop()
        port = int(sport) if sport is not None else None
        async with self._trace_lock:
            try:
                if verify:
                    doc = await tracing.run_verified(self.st.spec.name, src, dst, proto, port)
                else:
                    doc = await loop.run_in_executor(None, tracing.run, self.st.spec.name, src, dst, proto, port)
            except Exception as e:  # the page says what broke instead of an HTML 500
                if isinstance(e, TraceError | PodnetError) and not isinstance(e, StoreError):
                    return web.json_response({"error": str(e)}, status=400)  # the request's fault
                log.exception("trace %s -> %s", src, dst)
                return web.json_response({"error": f"{type(e).__name__}: {e}"}, status=500)
        return web.json_response({"trace": doc, "overlay": layout.trace_overlay(self.scene, doc, 0),
                                  "version": self.version})

    async def overlay(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        doc = body.get("trace")
        if not isinstance(doc, dict):
            return web.json_response({"error": "trace: the object /api/trace answered is needed"}, status=400)
        try:
            outcome = int(body.get("outcome") or 0)
        except (TypeError, ValueError):
            return web.json_response({"error": f"outcome: {body.get('outcome')!r}: not a number"}, status=400)
        return web.json_response({"overlay": layout.trace_overlay(self.scene, doc, outcome),
                                  "version": self.version})

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        if request.headers.get(HEADER) != "1":
            raise web.HTTPForbidden(text=f"the {HEADER} header is required")
        try:
            body = await request.json()
        except ValueError:
            raise web.HTTPBadRequest(text="body: not JSON") from None
        if not isinstance(body, dict):
            raise web.HTTPBadRequest(text="body: a JSON object is needed")
        return body

    @web.middleware
    async def _host_check(self, request: web.Request, handler: Any) -> web.StreamResponse:
        if not self.allow_any_host and request.host not in self.hosts:
            raise web.HTTPMisdirectedRequest(text=f"Host {request.host!r} is not this server")
        return await handler(request)

    def app(self) -> web.Application:
        app = web.Application(middlewares=[self._host_check], client_max_size=4 << 20)
        r = app.router
        r.add_get("/", self.index)
        r.add_get("/static/{name}", self.static)
        r.add_get("/api/scene", self.get_scene)
        r.add_get("/api/events", self.events)
        r.add_post("/api/trace", self.trace)
        r.add_post("/api/overlay", self.overlay)
        return app


async def serve(st: LabState, host: str, port: int, *, allow_non_loopback: bool = False,
                ready: Any = None) -> None:
    """Serve until SIGINT/SIGTERM. ready(url) is called once listening (the CLI prints the URL)."""
    srv = UiServer(st, allow_any_host=allow_non_loopback)
    runner = web.AppRunner(srv.app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()  # bind first: a taken port fails before any watch starts
        bound = int(runner.addresses[0][1])
        names = [host, "localhost"] if host == "127.0.0.1" else [host]
        srv.hosts = {f"{h}:{bound}" for h in names} | ({f"[{host}]:{bound}"} if ":" in host else set())
        url = f"http://{('[' + host + ']') if ':' in host else host}:{bound}/"
        await srv.start()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        if ready is not None:
            ready(url)
        await stop.wait()
    finally:
        await srv.close_streams()
        await runner.cleanup()
        await srv.stop()


def snapshot(st: LabState, out: Path, *, trace_from: str = "", trace_to: str = "") -> model.LabView:
    """Write the picture as one SVG file (with a trace's path if both ends are given); returns the view."""
    import aiohttp

    target = feed_mod.lab_target(st)
    try:
        objects = asyncio.run(feed_mod.list_all(target))
    except (aiohttp.ClientError, OSError, TimeoutError) as e:
        raise UiError(f"lab {st.spec.name}: its API server at {target.url} does not answer: {e}") from None
    view = model.build(facts_mod.read_facts(st), objects)
    sc = layout.scene(view)
    overlay = None
    if trace_from or trace_to:
        if not (trace_from and trace_to):
            raise UiError("--trace-from and --trace-to: give both ends of the trace, or neither")
        overlay = layout.trace_overlay(sc, tracing.run(st.spec.name, trace_from, trace_to))
    text = svg.render(sc, overlay)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(out)
    return view
