"""The built-in pod program: an HTTP server that answers with the pod's name and IP.

It stands in for the tutorial's webapp1 image, so load balancing is visible in the responses.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def _unmapped(ip: str) -> str:
    """An IPv4 client's address as IPv4, not as the v4-mapped IPv6 address a dual-stack socket reports."""
    return ip.removeprefix("::ffff:") if ip.startswith("::ffff:") and "." in ip else ip


def serve(pod: str, ports: list[int]) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            ip = _unmapped(self.connection.getsockname()[0])
            body = f"This request was processed by host: {pod} ({ip})\n".encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            # an access log on stdout, as a web server image writes one: it is what `kubectl logs` shows
            sys.stdout.write(f"{self.address_string()} - [{self.log_date_time_string()}] {format % args}\n")
            sys.stdout.flush()

    class Server(ThreadingHTTPServer):
        daemon_threads = True
        allow_reuse_address = True
        address_family = socket.AF_INET6
        request_queue_size = 128

        def server_bind(self) -> None:
            # one socket for both families (a container listening on [::]): IPv4 clients arrive v4-mapped
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            super().server_bind()

    class Server4(Server):
        address_family = socket.AF_INET

        def server_bind(self) -> None:
            ThreadingHTTPServer.server_bind(self)

    def listen(port: int) -> ThreadingHTTPServer:
        try:
            return Server(("::", port), Handler)
        except OSError:  # a namespace without IPv6
            return Server4(("0.0.0.0", port), Handler)

    servers = [listen(p) for p in ports]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()
