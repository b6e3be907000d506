"""kube-proxy's health servers (pkg/proxy/healthcheck): the proxy's own /healthz and /livez, and one HTTP
listener per healthCheckNodePort, which is how a cloud load balancer learns which nodes have endpoints of
an externalTrafficPolicy=Local Service.

Formats are kube-proxy's (v1.33+, the dual-stack health schema), so probes and scripts written against it
keep working:

- /healthz and /livez on healthzBindAddress: JSON `{"lastUpdated", "currentTime", "nodeEligible"
  (/healthz only), "healthy", "status": {"IPv4": {"lastUpdated", "healthy"}}}`, times in RFC 3339 with
  nanoseconds (Go's time.Time). 503 when a change has waited longer than 2 x syncPeriod for a sync;
  /healthz also when the node is being deleted (deletionTimestamp, or the cluster autoscaler's
  ToBeDeletedByClusterAutoscaler taint). Healthy while starting up, as kube-proxy: the first sync has a
  timeout like any other. While healthy, lastUpdated is the current time (kube-proxy keeps that for
  compatibility with older releases).
- healthCheckNodePort, any path: 200 when this node has at least one ready local endpoint of the service
  and the proxy is healthy, else 503. The body is kube-proxy's tab-indented JSON
  `{"service": {"namespace", "name"}, "localEndpoints": N, "serviceProxyHealthy": bool}`, with headers
  Content-Type application/json, X-Content-Type-Options nosniff, X-Load-Balancing-Endpoint-Weight N.
  N counts distinct IPs (a pod serving two ports of the service is one endpoint), ready ones only: a
  node with only terminating endpoints fails the check, so the load balancer drains it.

Listeners are reconciled like NodePort sockets (nodeports.py): the proxier hands over the whole wanted set
after every successful sync; ports that change or vanish are closed, a port that cannot be opened is
reported and tried again at the next sync. They listen where NodePorts do: every address when
nodePortAddresses is unset, else on each node address it matches.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol

log = logging.getLogger(__name__)

TO_BE_DELETED_TAINT = "ToBeDeletedByClusterAutoscaler"
JSON_HEADERS = (("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff"))
Response = tuple[int, list[tuple[str, str]], bytes]


def go_time(t: float | None) -> str:
    """A Unix time as Go's json.Marshal writes a time.Time (RFC 3339, nanoseconds, trailing zeros cut)."""
    if t is None:
        return "0001-01-01T00:00:00Z"  # Go's zero time
    whole = int(t)
    nanos = int(round((t - whole) * 1e9))
    if nanos >= 1_000_000_000:
        whole, nanos = whole + 1, nanos - 1_000_000_000
    text = datetime.fromtimestamp(whole, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    frac = f"{nanos:09d}".rstrip("0")
    return f"{text}.{frac}Z" if frac else f"{text}Z"


# ---- the proxy's own health ----------------------------------------------------------------------------


class ProxyHealth:
    """kube-proxy's ProxyHealthServer state: when changes were queued and rules last updated, per family."""

    def __init__(self, sync_period: float, *, clock: Callable[[], float] = time.time, family: str = "IPv4") -> None:
        self.timeout = 2 * sync_period  # kube-proxy: healthTimeout = 2 x syncPeriod
        self.clock = clock
        self.family = family  # the family of callers that name none (a single-stack proxy)
        self._lock = threading.Lock()
        # per IP family: a dual-stack node's proxiers share one server, and it is healthy only when each is
        self._last_updated: dict[str, float] = {}
        self._oldest_pending: dict[str, float] = {}
        self._node_eligible = True  # until a node event says otherwise, as kube-proxy while it starts

    def queued(self, family: str | None = None) -> None:
        """A Service/EndpointSlice change arrived that this family's rules do not show yet."""
        with self._lock:
            self._oldest_pending.setdefault(family or self.family, self.clock())

    def updated(self, family: str | None = None) -> None:
        """This family's rules now show every change queued so far."""
        with self._lock:
            fam = family or self.family
            self._oldest_pending.pop(fam, None)
            self._last_updated[fam] = self.clock()

    def sync_node(self, node: dict[str, Any] | None) -> None:
        """The node object as last seen (None: deleted): eligible unless being deleted or drained."""
        with self._lock:
            self._node_eligible = node is not None and _node_eligible(node)

    @property
    def healthy(self) -> bool:
        return self.status()["healthy"] is True

    @property
    def node_eligible(self) -> bool:
        with self._lock:
            return self._node_eligible

    def status(self) -> dict[str, Any]:
        """kube-proxy's ProxyHealth (Health()), in its JSON field order."""
        with self._lock:
            now = self.clock()
            healthy = True
            per_family: dict[str, Any] = {}
            for fam in sorted(self._last_updated):  # Go marshals the map with its keys sorted
                pending = self._oldest_pending.get(fam)
                ok = pending is None or now - pending < self.timeout
                healthy = healthy and ok
                per_family[fam] = {"lastUpdated": go_time(self._last_updated[fam]), "healthy": ok}
            last = max(self._last_updated.values()) if self._last_updated else None
            out: dict[str, Any] = {"lastUpdated": go_time(last), "currentTime": go_time(now),
                                   "healthy": healthy}
            if per_family:
                out["status"] = per_family
            return out

    def healthz(self) -> Response:
        body = self.status()
        eligible = self.node_eligible
        ok = body["healthy"] and eligible
        if ok:
            body["lastUpdated"] = body["currentTime"]
        body = {"lastUpdated": body["lastUpdated"], "currentTime": body["currentTime"], "nodeEligible": eligible,
                **{k: v for k, v in body.items() if k not in ("lastUpdated", "currentTime")}}
        return (200 if ok else 503), list(JSON_HEADERS), json.dumps(body, separators=(",", ":")).encode()

    def livez(self) -> Response:
        body = self.status()
        if body["healthy"]:
            body["lastUpdated"] = body["currentTime"]
        return (200 if body["healthy"] else 503), list(JSON_HEADERS), json.dumps(body, separators=(",", ":")).encode()


def _node_eligible(node: dict[str, Any]) -> bool:
    if (node.get("metadata") or {}).get("deletionTimestamp"):
        return False
    taints = (node.get("spec") or {}).get("taints") or []
    return not any(isinstance(t, dict) and t.get("key") == TO_BE_DELETED_TAINT for t in taints)


# ---- HTTP plumbing ---------------------------------------------------------------------------------------


class Listener(Protocol):
    def close(self) -> None: ...


def _handler(respond: Callable[[str], Response]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self, with_body: bool) -> None:
            code, headers, body = respond(self.path.split("?", 1)[0])
            self.send_response_only(code)
            self.send_header("Date", self.date_time_string())
            for k, v in headers:
                self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            self._answer(True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._answer(False)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


class HTTPListener:
    """One listening address served from its own thread; close() frees the port before it returns."""

    def __init__(self, addr: tuple[str, int], respond: Callable[[str], Response]) -> None:
        self.server = ThreadingHTTPServer(addr, _handler(respond), bind_and_activate=False)
        self.server.daemon_threads = True
        self.server.allow_reuse_address = True
        try:
            self.server.server_bind()
            self.server.server_activate()
        except OSError:
            self.server.server_close()
            raise
        self.thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.1},
                                       name=f"health-{addr[1]}", daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def serve_proxy_health(addr: tuple[str, int], health: ProxyHealth,
                       on_answer: Callable[[str, int], None] | None = None) -> HTTPListener:
    """/healthz and /livez on addr (kube-proxy's healthzBindAddress); other paths 404."""
    def respond(path: str) -> Response:
        if path == "/healthz":
            r = health.healthz()
        elif path == "/livez":
            r = health.livez()
        else:
            return 404, [("Content-Type", "text/plain; charset=utf-8")], b"404 page not found\n"
        if on_answer is not None:
            on_answer(path, r[0])
        return r

    return HTTPListener(addr, respond)


# ---- healthCheckNodePort ----------------------------------------------------------------------------------


@dataclass
class _Instance:
    port: int
    listeners: list[Listener]
    endpoints: int = 0


Opener = Callable[[tuple[str, int], Callable[[str], Response]], Listener]


class ServiceHealthServer:
    """kube-proxy's ServiceHealthServer: SyncServices opens/closes listeners, SyncEndpoints sets the counts."""

    def __init__(self, health: ProxyHealth, opener: Opener = HTTPListener) -> None:
        self.health = health
        self._open = opener
        self._lock = threading.Lock()
        self._services: dict[str, _Instance] = {}  # "ns/name" -> its listeners

    @property
    def ports(self) -> dict[str, int]:
        with self._lock:
            return {nsn: inst.port for nsn, inst in self._services.items()}

    def sync_services(self, wanted: dict[str, int], ips: Iterable[str]) -> dict[str, OSError]:
        """Listen on exactly the wanted {"ns/name": port} on each of ips. Returns the ones that failed."""
        addrs = sorted(set(ips))
        with self._lock:
            for nsn in sorted(self._services):
                inst = self._services[nsn]
                if wanted.get(nsn) != inst.port:
                    log.info("closing healthcheck %s on port %d", nsn, inst.port)
                    _close_all(inst.listeners)
                    del self._services[nsn]
            new = {nsn: port for nsn, port in wanted.items() if nsn not in self._services}
        failed: dict[str, OSError] = {}
        for nsn, port in sorted(new.items()):
            opened: list[Listener] = []
            try:
                for ip in addrs:
                    opened.append(self._open((ip, port), self._responder(nsn)))
            except OSError as e:
                _close_all(opened)  # all or nothing, so a retry (or another owner of the port) starts clean
                failed[nsn] = e
                log.error("failed to start healthcheck %s on port %d: %s", nsn, port, e)
                continue
            log.info("opening healthcheck %s on port %d", nsn, port)
            with self._lock:
                self._services[nsn] = _Instance(port, opened)
        return failed

    def sync_endpoints(self, counts: dict[str, int]) -> None:
        """Local ready endpoints per service; services not named have none."""
        with self._lock:
            for nsn, inst in self._services.items():
                inst.endpoints = counts.get(nsn, 0)

    def _responder(self, nsn: str) -> Callable[[str], Response]:
        """What a listener of nsn answers, whatever the path."""
        return lambda _path: self.response(nsn)

    def response(self, nsn: str) -> Response:
        with self._lock:
            inst = self._services.get(nsn)
            count = inst.endpoints if inst is not None else 0
        healthy = self.health.healthy
        ns, _, name = nsn.partition("/")
        # kube-proxy prints this with fmt and tabs; json.dumps with a tab indent writes the same bytes.
        body = json.dumps({"service": {"namespace": ns, "name": name}, "localEndpoints": count,
                           "serviceProxyHealthy": healthy}, indent="\t")
        headers = [*JSON_HEADERS, ("X-Load-Balancing-Endpoint-Weight", str(count))]
        return (200 if count and healthy else 503), headers, body.encode()

    def close(self) -> None:
        with self._lock:
            for inst in self._services.values():
                _close_all(inst.listeners)
            self._services.clear()


def _close_all(listeners: list[Listener]) -> None:
    # shutdown() of each waits for its serve loop to notice (one poll interval): close them side by side.
    threads = [threading.Thread(target=lt.close, daemon=True) for lt in listeners]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def local_ready_endpoints(ports: Iterable[Any]) -> dict[str, int]:
    """kube-proxy's LocalReadyEndpoints: per "ns/name", the distinct IPs of ready endpoints on this node."""
    ips: dict[str, set[str]] = {}
    for sp in ports:
        for ep in sp.endpoints:
            if ep.ready and ep.local:
                ips.setdefault(sp.name.namespaced_name, set()).add(ep.ip)
    return {nsn: len(v) for nsn, v in ips.items()}


def health_check_ports(ports: Iterable[Any]) -> dict[str, int]:
    """kube-proxy's HealthCheckNodePorts: "ns/name" -> healthCheckNodePort of LoadBalancer eTP=Local services."""
    return {sp.name.namespaced_name: sp.health_check_node_port for sp in ports if sp.health_check_node_port}


class HealthCheckNodePorts:
    """After each sync: a healthCheckNodePort listener per eTP=Local LoadBalancer service, where NodePorts
    listen (every address, or nodePortAddresses' IPs), answering with the local ready endpoints.

    A listener that cannot open is reported once per (service, port) through `on_failure` (kube-proxy's
    FailedToStartServiceHealthcheck event) and retried at every sync.
    """

    def __init__(self, server: ServiceHealthServer, on_failure: Callable[[str, int, OSError], None]) -> None:
        self.server = server
        self.on_failure = on_failure
        self._failed: dict[str, int] = {}  # listeners that could not open -> their port

    def sync(self, settings: Any, ports: Iterable[Any]) -> None:
        ports = list(ports)
        ips = ("0.0.0.0",) if settings.node_ports_match_all else settings.node_port_ips()
        wanted = health_check_ports(ports)
        failed = self.server.sync_services(wanted, ips)
        for nsn, err in failed.items():
            if self._failed.get(nsn) != wanted[nsn]:  # one event per failure, not one per sync
                self.on_failure(nsn, wanted[nsn], err)
        self._failed = {nsn: wanted[nsn] for nsn in failed}
        self.server.sync_endpoints(local_ready_endpoints(ports))

    def close(self) -> None:
        self.server.close()
