"""The page's server without a lab: its routes, the scene pushed over server-sent events when the feed
changes, the guards on its POSTs, and what --listen accepts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from podnet.lab import topology
from podnet.lab.state import LabState
from podnet.ui import server, tracing
from podnet.ui.errors import UiError

from .ui_fixtures import facts, pod, three_node_objects


class FakeFeed:
    def __init__(self) -> None:
        self.objects = three_node_objects()
        self.errors: dict[str, str] = {}
        self.connected = True
        self.on_change: Callable[[str], None] = lambda kind: None

    def snapshot(self) -> dict[str, list[dict]]:
        return {k: list(v) for k, v in self.objects.items()}

    async def run(self) -> None:
        await asyncio.Event().wait()


class FakeWatch:
    def facts(self) -> Any:
        return facts()

    def close(self) -> None:
        pass


def _run(test: Callable[[server.UiServer, FakeFeed, str], Awaitable[None]]) -> None:
    async def main() -> None:
        feed = FakeFeed()
        st = LabState(topology.build("t1", 3), "sqlite:////nonexistent/state.db")
        srv = server.UiServer(st, feed=feed, watch=FakeWatch())
        feed.on_change = srv.changed
        await srv.start()
        ts = TestServer(srv.app(), host="127.0.0.1", port=0)
        await ts.start_server()
        srv.hosts = {f"127.0.0.1:{ts.port}"}
        try:
            await asyncio.wait_for(test(srv, feed, f"http://127.0.0.1:{ts.port}"), 30)
        finally:
            await ts.close()
            await srv.stop()

    asyncio.run(main())


async def _events(http: ClientSession, url: str) -> AsyncIterator[dict[str, Any]]:
    async with http.get(url + "/api/events") as r:
        assert r.headers["Content-Type"].startswith("text/event-stream")
        event: dict[str, str] = {}
        async for raw in r.content:
            line = raw.decode().rstrip("\n")
            if not line:
                if event.get("event") == "scene":
                    yield json.loads(event["data"])
                event = {}
            elif not line.startswith(":"):
                k, _, v = line.partition(": ")
                event[k] = v


def _ids(sc: dict, kind: str) -> set[str]:
    out = set()

    def walk(shapes: list[dict]) -> None:
        for s in shapes:
            if s["t"] == "g":
                if s["kind"] == kind:
                    out.add(s["id"])
                walk(s["items"])

    walk(sc["shapes"])
    return out


def test_page_assets_and_scene() -> None:
    async def check(srv: server.UiServer, feed: FakeFeed, url: str) -> None:
        async with ClientSession() as http:
            async with http.get(url + "/") as r:
                page = await r.text()
                assert r.status == 200 and '<script src="/static/app.js">' in page
            for name in ("app.js", "app.css", "scene.css"):
                async with http.get(f"{url}/static/{name}") as r:
                    assert r.status == 200 and len(await r.read()) > 100
            async with http.get(url + "/static/layout.py") as r:
                assert r.status == 404
            async with http.get(url + "/api/scene") as r:
                sc = await r.json()
            assert _ids(sc, "node") == {"node1", "node2", "node3"}
            assert sc["status"]["counts"] == {"nodes": 3, "pods": 5, "services": 3}
            assert "svc/web" in sc["choices"]["to"] and "client" in sc["choices"]["from"]
            assert "192.168.77.12:30080" in sc["choices"]["to"]

    _run(check)


def test_changes_are_pushed_to_the_page() -> None:
    async def check(srv: server.UiServer, feed: FakeFeed, url: str) -> None:
        async with ClientSession() as http:
            events = _events(http, url)
            first = await anext(events)
            assert "default/web-a" in _ids(first, "pod")
            feed.objects["Pod"] = [p for p in feed.objects["Pod"] if p["metadata"]["name"] != "web-a"]
            feed.objects["Pod"].append(pod("new-one", "node3", "10.244.3.9"))
            feed.on_change("Pod")
            second = await anext(events)
            assert second["version"] > first["version"]
            assert "default/web-a" not in _ids(second, "pod") and "default/new-one" in _ids(second, "pod")
            await events.aclose()

    _run(check)


def test_posts_need_the_header_and_the_right_host() -> None:
    async def check(srv: server.UiServer, feed: FakeFeed, url: str) -> None:
        async with ClientSession() as http:
            async with http.post(url + "/api/trace", json={"from": "client", "to": "svc/web"}) as r:
                assert r.status == 403
            hdr = {server.HEADER: "1"}
            async with http.post(url + "/api/trace", json={"from": "", "to": "x", "proto": "sctp", "sport": "0"},
                                 headers=hdr) as r:
                assert r.status == 400
                err = (await r.json())["error"]
                assert "from:" in err and "proto: 'sctp'" in err and "sport: '0'" in err
            async with http.post(url + "/api/trace", data="[1]", headers=hdr) as r:
                assert r.status == 400
            async with http.get(url + "/api/scene", headers={"Host": "attacker.example"}) as r:
                assert r.status == 421

    _run(check)


def test_a_trace_comes_back_with_its_path_on_the_scene(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    hops = [{"node": "default/client", "step": "source"}, {"node": "node1", "step": "veth"},
            {"node": "default/web-a", "step": "deliver"}]
    doc = {"flow": {"src": "10.244.1.3", "dst": "10.96.0.10", "proto": "tcp", "dport": 80}, "verdict": "delivered",
           "outcomes": [{"verdict": "delivered", "probability": 1.0, "endpoint": "10.244.1.2:80",
                         "where": "pod default/web-a", "reason": "", "hops": hops}], "hops": hops}

    def fake_run(*args: Any) -> dict:
        calls.append(args)
        return doc

    async def fake_verified(*args: Any) -> dict:
        calls.append(("verified", *args))
        return {**doc, "verify": {"agree": True, "summary": "ok"}}

    monkeypatch.setattr(tracing, "run", fake_run)
    monkeypatch.setattr(tracing, "run_verified", fake_verified)

    async def check(srv: server.UiServer, feed: FakeFeed, url: str) -> None:
        async with ClientSession() as http:
            async with http.post(url + "/api/trace", json={"from": "client", "to": "svc/web"},
                                 headers={server.HEADER: "1"}) as r:
                assert r.status == 200
                body = await r.json()
            async with http.post(url + "/api/trace", json={"from": "web-a", "to": "svc/web", "proto": "udp",
                                                           "sport": 4000, "verify": True},
                                 headers={server.HEADER: "1"}) as r:
                assert (await r.json())["trace"]["verify"]["agree"] is True
            assert calls == [("t1", "client", "svc/web", "tcp", None), ("verified", "t1", "web-a", "svc/web", "udp", 4000)]
            assert body["trace"] == doc and body["overlay"]["kind"] == "trace"
            async with http.post(url + "/api/overlay", json={"trace": doc, "outcome": 0},
                                 headers={server.HEADER: "1"}) as r:
                assert (await r.json())["overlay"] == body["overlay"]

    _run(check)


@pytest.mark.parametrize(("text", "want"), [("127.0.0.1:8480", ("127.0.0.1", 8480)), ("localhost:0", ("127.0.0.1", 0)),
                                            ("[::1]:9000", ("::1", 9000)), ("127.1.2.3:1", ("127.1.2.3", 1))])
def test_listen_accepts_loopback(text: str, want: tuple[str, int]) -> None:
    assert server.parse_listen(text) == want


@pytest.mark.parametrize(("text", "says"), [("0.0.0.0:8480", "not a loopback address"),
                                            ("192.168.1.5:80", "--allow-non-loopback"),
                                            ("127.0.0.1", "HOST:PORT"), ("127.0.0.1:99999", "HOST:PORT"),
                                            ("example.com:80", "not an IP address")])
def test_listen_refuses_the_rest(text: str, says: str) -> None:
    with pytest.raises(UiError, match="--listen") as e:
        server.parse_listen(text)
    assert says in str(e.value)
    if "loopback" in says or "allow" in says:
        assert server.parse_listen(text, allow_non_loopback=True)[1] == int(text.rsplit(":", 1)[1])
