"""The overlay daemon's HTTP endpoint: flanneld's /healthz and /readyz, plus Prometheus /metrics.

flanneld serves /healthz (always 200 while the process runs) and /readyz (200 once rules and subnet.env
are in place) on --healthz-ip:--healthz-port, off by default; we keep those names and semantics so probes
written for flannel work. flannel has no metrics; ours are the overlay's vital signs: when our lease
expires, how many peers we route to, and how often something had to be repaired.
"""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST


class OverlayMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.lease_expiration = Gauge(
            "podnet_overlay_lease_expiration_timestamp_seconds",
            "When this node's subnet lease expires unless renewed (0: a reservation, never)", registry=r)
        self.peers = Gauge("podnet_overlay_peers", "Other nodes' leases this node routes to", registry=r)
        self.peer_events = Counter(
            "podnet_overlay_peer_events", "Peer lease events handed to the backend", ["type"], registry=r)
        self.renewals = Counter("podnet_overlay_lease_renewals", "Successful renewals of our lease", registry=r)
        self.rules_restored = Counter(
            "podnet_overlay_rules_restored", "Times FLANNEL-POSTRTG/FLANNEL-FWD had drifted and were reloaded",
            registry=r)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class HealthServer:
    """Serves /healthz, /readyz and /metrics from a daemon thread."""

    def __init__(self, host: str, port: int, metrics: OverlayMetrics) -> None:
        self.ready = threading.Event()
        self.metrics = metrics
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 (http.server's name)
                path = self.path.split("?", 1)[0]
                if path == "/healthz":
                    self._reply(200, b"ok\n", "text/plain")
                elif path == "/readyz":
                    ok = outer.ready.is_set()
                    self._reply(200 if ok else 503, b"ok\n" if ok else b"not ready\n", "text/plain")
                elif path == "/metrics":
                    self._reply(200, outer.metrics.render(), CONTENT_TYPE_LATEST)
                else:
                    self._reply(404, b"not found\n", "text/plain")

            def _reply(self, code: int, body: bytes, ctype: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:  # probes every few seconds: stay quiet
                pass

        self.server = ThreadingHTTPServer((host, port), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self._thread = threading.Thread(target=self.server.serve_forever, name="overlay-healthz", daemon=True)

    def start(self) -> HealthServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


__all__ = ["HealthServer", "OverlayMetrics"]
