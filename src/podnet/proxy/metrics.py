"""kube-proxy's metrics (same names and buckets, so dashboards carry over), served on /metrics.

A small HTTP server in a daemon thread, bound inside the node's namespace because the proxy runs there, on
the metrics address (kube-proxy's default 127.0.0.1:10249). /healthz and /livez are healthcheck.py's.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


def _exp_buckets(start: float, factor: float, count: int) -> list[float]:
    return [start * factor**i for i in range(count)]


def _lin(start: float, width: float, count: int) -> list[float]:
    return [start + width * i for i in range(count)]


SYNC_BUCKETS = _exp_buckets(0.001, 2, 15)
# kube-proxy: 0.25, 0.5, 1..59 s, 60..115 s, 120..300 s
PROGRAMMING_BUCKETS = _lin(0.25, 0.25, 2) + _lin(1, 1, 59) + _lin(60, 5, 12) + _lin(120, 30, 7)


# A route answers GET with (status code, content type, body).
Route = Callable[[], tuple[int, str, bytes]]


class ProxyMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.sync_duration = Histogram(
            "kubeproxy_sync_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds",
            buckets=SYNC_BUCKETS, registry=r)
        self.sync_full_duration = Histogram(
            "kubeproxy_sync_full_proxy_rules_duration_seconds", "SyncProxyRules latency in seconds for full resyncs",
            buckets=SYNC_BUCKETS, registry=r)
        self.sync_partial_duration = Histogram(
            "kubeproxy_sync_partial_proxy_rules_duration_seconds",
            "SyncProxyRules latency in seconds for partial resyncs", buckets=SYNC_BUCKETS, registry=r)
        self.last_sync = Gauge(
            "kubeproxy_sync_proxy_rules_last_timestamp_seconds", "The last time proxy rules were successfully synced",
            registry=r)
        self.last_queued = Gauge(
            "kubeproxy_sync_proxy_rules_last_queued_timestamp_seconds",
            "The last time a sync of proxy rules was queued", registry=r)
        self.programming = Histogram(
            "kubeproxy_network_programming_duration_seconds", "In Cluster Network Programming Latency in seconds",
            buckets=PROGRAMMING_BUCKETS, registry=r)
        self.iptables_total = Gauge(
            "kubeproxy_sync_proxy_rules_iptables_total", "Total number of iptables rules owned by kube-proxy",
            ["table"], registry=r)
        self.iptables_last = Gauge(
            "kubeproxy_sync_proxy_rules_iptables_last",
            "Number of iptables rules written by kube-proxy in last sync", ["table"], registry=r)
        self.restore_failures = Counter(
            "kubeproxy_sync_proxy_rules_iptables_restore_failures", "Cumulative proxy iptables restore failures",
            registry=r)
        self.partial_restore_failures = Counter(
            "kubeproxy_sync_proxy_rules_iptables_partial_restore_failures",
            "Cumulative proxy iptables partial restore failures", registry=r)
        self.conntrack_duration = Histogram(
            "kubeproxy_reconcile_conntrack_flows_duration_seconds", "Reconcile conntrack flows latency in seconds",
            buckets=SYNC_BUCKETS, registry=r)
        self.healthz_total = Counter(
            "kubeproxy_proxy_healthz", "Cumulative proxy healthz HTTP status", ["code"], registry=r)
        self.livez_total = Counter(
            "kubeproxy_proxy_livez", "Cumulative proxy livez HTTP status", ["code"], registry=r)
        self.drift_checks = Counter(
            "podnet_proxy_drift_checks", "Periodic reads of the kernel's rules (iptables mode), by outcome: "
            "ok (no drift found), drift, error (the kernel could not be read)", ["result"], registry=r)
        self.invalid_objects = Counter(
            "podnet_proxy_invalid_objects", "Store objects skipped because they failed validation", ["kind"],
            registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def synced(self, *, full: bool, elapsed: float, now: float, rules_total: Mapping[str, int],
               change_times: Iterable[float]) -> None:
        """A sync succeeded: its duration, when, the rules owned now, and how long each change took to show."""
        self.sync_duration.observe(elapsed)
        (self.sync_full_duration if full else self.sync_partial_duration).observe(elapsed)
        self.last_sync.set(now)
        for table, n in rules_total.items():
            self.iptables_total.labels(table).set(n)
        for t in change_times:
            self.programming.observe(max(0.0, now - t))


def _handler(routes: Mapping[str, Route]) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (http.server API)
            fn = routes.get(self.path.split("?", 1)[0])
            if fn is None:
                self.send_error(404)
                return
            code, ctype, body = fn()
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    return Handler


def split_hostport(addr: str, default_port: int) -> tuple[str, int]:
    """'127.0.0.1:10249', ':10249', '0.0.0.0', '[::1]:10249' -> (host, port)."""
    if addr.startswith("["):
        host, _, rest = addr[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    if addr.count(":") == 1:
        host, _, port = addr.partition(":")
        return host or "0.0.0.0", int(port)
    return addr or "0.0.0.0", default_port


def serve(addr: tuple[str, int], routes: Mapping[str, Route]) -> ThreadingHTTPServer:
    srv = ThreadingHTTPServer(addr, _handler(routes))
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, name=f"http-{addr[1]}", daemon=True).start()
    return srv


def metrics_routes(m: ProxyMetrics) -> dict[str, Route]:
    return {"/metrics": lambda: (200, CONTENT_TYPE_LATEST, m.render())}
