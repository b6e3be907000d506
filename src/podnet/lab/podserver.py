"""The built-in pod program: an HTTP server that answers with the pod's name and IP.

It stands in for the tutorial's webapp1 image, so load balancing is visible in the responses.
"""

from __future__ import annotations

import socket
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(pod: str, ports: list[int]) -> None:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
            ip = self.connection.getsockname()[0]
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
        address_family = socket.AF_INET
        request_queue_size = 128

    servers = [Server(("0.0.0.0", p), Handler) for p in ports]
    for s in servers[1:]:
        threading.Thread(target=s.serve_forever, daemon=True).start()
    servers[0].serve_forever()
