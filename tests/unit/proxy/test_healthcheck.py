"""kube-proxy's health servers (proxy/healthcheck.py), case by case after pkg/proxy/healthcheck's tests:
/healthz and /livez over a fake clock, healthCheckNodePort listeners over a fake opener (TestServer), the
exact bytes and headers, and one real listener on loopback."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from podnet.proxy.healthcheck import (
    HTTPListener,
    ProxyHealth,
    ServiceHealthServer,
    go_time,
    health_check_ports,
    local_ready_endpoints,
    serve_proxy_health,
)
from podnet.proxy.model import Endpoint, ServicePort, ServicePortName


class Clock:
    def __init__(self, t: float = 1_700_000_000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t

    def step(self, s: float) -> None:
        self.t += s


def code_and_body(r: tuple[int, list[tuple[str, str]], bytes]) -> tuple[int, dict[str, Any]]:
    return r[0], json.loads(r[2])


# ---- /healthz and /livez ------------------------------------------------------------------------------


def test_healthy_while_starting_then_late_updates_make_it_503() -> None:
    clock = Clock()
    h = ProxyHealth(sync_period=5, clock=clock)  # timeout 10 s
    code, body = code_and_body(h.healthz())
    assert code == 200 and body["healthy"] is True and body["nodeEligible"] is True and "status" not in body
    assert list(body) == ["lastUpdated", "currentTime", "nodeEligible", "healthy"]
    h.queued()  # the first change: not late yet
    clock.step(5)
    assert h.healthz()[0] == 200
    h.updated()
    synced_at = clock.t
    clock.step(25)  # nothing queued: healthy however long ago the last sync was
    code, body = code_and_body(h.healthz())
    assert code == 200 and body["status"] == {"IPv4": {"lastUpdated": go_time(synced_at), "healthy": True}}
    assert body["lastUpdated"] == body["currentTime"] == go_time(clock.t)  # "recent" while healthy
    h.queued()
    clock.step(9.9)
    assert h.healthz()[0] == 200 and h.livez()[0] == 200
    clock.step(0.2)  # queued more than 2 x syncPeriod ago, never synced
    code, body = code_and_body(h.healthz())
    assert code == 503 and body["healthy"] is False and body["status"]["IPv4"]["healthy"] is False
    assert body["lastUpdated"] == go_time(synced_at)  # the real last update when unhealthy
    code, live = code_and_body(h.livez())
    assert code == 503 and "nodeEligible" not in live
    h.updated()
    assert h.healthz()[0] == 200 and h.livez()[0] == 200


@pytest.mark.parametrize(("node", "eligible"), [
    ({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "other", "effect": "NoSchedule"}]}}, True),
    ({"metadata": {"name": "n1"}, "spec": {"taints": [{"key": "ToBeDeletedByClusterAutoscaler"}]}}, False),
    ({"metadata": {"name": "n1", "deletionTimestamp": "2026-01-01T00:00:00Z"}}, False),
    (None, False),  # the node object is gone
])
def test_node_being_deleted_fails_healthz_but_not_livez(node: dict[str, Any] | None, eligible: bool) -> None:
    h = ProxyHealth(sync_period=30, clock=Clock())
    h.sync_node(node)
    code, body = code_and_body(h.healthz())
    assert (code == 200) is eligible and body["nodeEligible"] is eligible
    assert h.livez()[0] == 200


def test_go_time_is_rfc3339_with_nanoseconds_like_go() -> None:
    assert go_time(None) == "0001-01-01T00:00:00Z"
    assert go_time(0) == "1970-01-01T00:00:00Z"
    assert go_time(1.5) == "1970-01-01T00:00:01.5Z"
    assert go_time(1_700_000_000.25) == "2023-11-14T22:13:20.25Z"


# ---- healthCheckNodePort -------------------------------------------------------------------------------


class FakeListener:
    def __init__(self, parent: FakeOpener, addr: tuple[str, int], respond: Any) -> None:
        self.parent, self.addr, self.respond = parent, addr, respond

    def close(self) -> None:
        self.parent.open.pop(self.addr, None)


class FakeOpener:
    """kube-proxy's fakeListener: remembers which addresses are open; can refuse some."""

    def __init__(self) -> None:
        self.open: dict[tuple[str, int], FakeListener] = {}
        self.refuse: set[tuple[str, int]] = set()

    def __call__(self, addr: tuple[str, int], respond: Any) -> FakeListener:
        if addr in self.refuse:
            raise OSError(98, "Address already in use")
        lt = FakeListener(self, addr, respond)
        self.open[addr] = lt
        return lt

    def get(self, addr: tuple[str, int]) -> tuple[int, dict[str, str], dict[str, Any]]:
        code, headers, body = self.open[addr].respond("/healthz")
        return code, dict(headers), json.loads(body)


def test_service_health_follows_services_and_local_endpoint_counts() -> None:
    h = ProxyHealth(sync_period=30, clock=Clock())
    op = FakeOpener()
    s = ServiceHealthServer(h, op)
    s.sync_services({}, ["0.0.0.0"])
    s.sync_endpoints({"a/b": 93})  # endpoints of unknown services are dropped
    assert op.open == {}
    s.sync_services({"a/b": 9376}, ["0.0.0.0"])
    assert list(op.open) == [("0.0.0.0", 9376)]
    code, headers, body = op.get(("0.0.0.0", 9376))
    assert code == 503 and body == {"service": {"namespace": "a", "name": "b"}, "localEndpoints": 0,
                                    "serviceProxyHealthy": True}
    assert headers == {"Content-Type": "application/json", "X-Content-Type-Options": "nosniff",
                       "X-Load-Balancing-Endpoint-Weight": "0"}
    s.sync_endpoints({"a/b": 18})
    code, headers, body = op.get(("0.0.0.0", 9376))
    assert code == 200 and body["localEndpoints"] == 18 and headers["X-Load-Balancing-Endpoint-Weight"] == "18"
    s.sync_endpoints({})  # not named: none
    assert op.get(("0.0.0.0", 9376))[0] == 503
    s.sync_endpoints({"a/b": 3})
    # several services: one kept, one whose port changed (reopened, count reset), one new, one gone
    s.sync_services({"a/b": 9376, "c/d": 12909, "e/f": 11113}, ["0.0.0.0"])
    s.sync_endpoints({"a/b": 3, "c/d": 2, "e/f": 7})
    s.sync_services({"c/d": 12909, "e/f": 11114, "g/h": 11878}, ["0.0.0.0"])
    assert sorted(p for _, p in op.open) == [11114, 11878, 12909]
    assert op.get(("0.0.0.0", 12909))[2]["localEndpoints"] == 2
    assert op.get(("0.0.0.0", 11114))[2]["localEndpoints"] == 0
    s.sync_services({}, ["0.0.0.0"])
    assert op.open == {}


def test_an_unhealthy_proxy_fails_every_service_check() -> None:
    clock = Clock()
    h = ProxyHealth(sync_period=1, clock=clock)
    op = FakeOpener()
    s = ServiceHealthServer(h, op)
    s.sync_services({"a/b": 9376}, ["0.0.0.0"])
    s.sync_endpoints({"a/b": 7})
    h.updated()
    h.queued()
    clock.step(3)
    code, _, body = op.get(("0.0.0.0", 9376))
    assert code == 503 and body["localEndpoints"] == 7 and body["serviceProxyHealthy"] is False


def test_listens_on_each_node_address_and_a_refused_one_is_all_or_nothing_and_retried() -> None:
    op = FakeOpener()
    s = ServiceHealthServer(ProxyHealth(30), op)
    op.refuse = {("192.168.0.2", 30100)}
    failed = s.sync_services({"a/b": 30100}, ["127.0.0.1", "192.168.0.2"])
    assert list(failed) == ["a/b"] and op.open == {}  # the loopback one was closed again
    op.refuse = set()
    assert s.sync_services({"a/b": 30100}, ["127.0.0.1", "192.168.0.2"]) == {}
    assert sorted(op.open) == [("127.0.0.1", 30100), ("192.168.0.2", 30100)]


def test_the_body_is_kube_proxys_bytes() -> None:
    s = ServiceHealthServer(ProxyHealth(30), FakeOpener())
    s.sync_services({"ns1/svc1": 30000}, ["0.0.0.0"])
    s.sync_endpoints({"ns1/svc1": 2})
    # kube-proxy: dedent of a tab-indented fmt template, trimmed of newlines
    want = ('{\n\t"service": {\n\t\t"namespace": "ns1",\n\t\t"name": "svc1"\n\t},\n'
            '\t"localEndpoints": 2,\n\t"serviceProxyHealthy": true\n}')
    assert s.response("ns1/svc1")[2].decode() == want


def sp(name: str, eps: list[Endpoint], hc: int = 0) -> ServicePort:
    ns, _, rest = name.partition("/")
    svc, _, port = rest.partition(":")
    return ServicePort(name=ServicePortName(ns, svc, port), cluster_ip="10.96.0.1", port=80, endpoints=tuple(eps),
                       health_check_node_port=hc, external_policy_local=bool(hc))


def test_local_ready_endpoints_count_distinct_ips_of_ready_local_endpoints() -> None:
    ports = [
        sp("ns/web:http", [Endpoint("10.0.1.2", 80, local=True), Endpoint("10.0.1.3", 80, ready=False, local=True),
                           Endpoint("10.0.2.2", 80)], hc=30500),
        sp("ns/web:https", [Endpoint("10.0.1.2", 443, local=True), Endpoint("10.0.1.4", 443, local=True)], hc=30500),
        sp("ns/db", [Endpoint("10.0.2.9", 5432)]),
    ]
    assert local_ready_endpoints(ports) == {"ns/web": 2}  # 10.0.1.2 twice counts once; not ready: not at all
    assert health_check_ports(ports) == {"ns/web": 30500}


# ---- real listeners on loopback ------------------------------------------------------------------------


def _get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_a_real_listener_answers_any_path_and_frees_its_port_on_close() -> None:
    s = ServiceHealthServer(ProxyHealth(30))
    lt = HTTPListener(("127.0.0.1", 0), lambda _p: s.response("a/b"))
    port = lt.server.server_address[1]
    try:
        code, headers, body = _get(f"http://127.0.0.1:{port}/anything?x=1")
        assert code == 503 and json.loads(body)["localEndpoints"] == 0
        assert headers["Content-Type"] == "application/json" and "Server" not in headers
    finally:
        lt.close()
    again = HTTPListener(("127.0.0.1", port), lambda _p: s.response("a/b"))  # the port is free again
    again.close()


def test_proxy_health_server_paths_and_counters() -> None:
    h = ProxyHealth(30)
    seen: list[tuple[str, int]] = []
    lt = serve_proxy_health(("127.0.0.1", 0), h, on_answer=lambda path, code: seen.append((path, code)))
    port = lt.server.server_address[1]
    try:
        assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
        assert json.loads(_get(f"http://127.0.0.1:{port}/livez")[2])["healthy"] is True
        assert _get(f"http://127.0.0.1:{port}/metrics")[0] == 404
    finally:
        lt.close()
    assert seen == [("/healthz", 200), ("/livez", 200)]
