"""`podnet dns run`: the cache, the answerer and the sockets put together, in CoreDNS's start order.

1. follow the store and wait (at most startup_timeout, CoreDNS's 5 s) for the first full view;
2. bind UDP and TCP and serve;
3. report ready (/ready 200, like the ready plugin) and, if asked, publish this server's EndpointSlice;
4. on SIGTERM: withdraw the endpoint first (no new queries are sent here), then close the sockets.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from podnet.dns.answer import Answerer, Config
from podnet.dns.cache import ClusterCache
from podnet.dns.publish import Publisher, endpoint_slice
from podnet.dns.server import DNSServer
from podnet.dns.wire import Responder
from podnet.store import Store

log = logging.getLogger("podnet.dns")
STARTUP_TIMEOUT = 5.0


@dataclass(frozen=True)
class Publish:
    namespace: str
    service: str
    node: str
    ip: str


@dataclass(frozen=True)
class Options:
    host: str
    port: int
    config: Config
    publish: Publish | None = None
    health: tuple[str, int] | None = None
    startup_timeout: float = STARTUP_TIMEOUT


def run(store: Store, opts: Options, stop: threading.Event) -> None:
    cache = ClusterCache(store).start()
    started = time.monotonic()
    if not cache.wait_synced(opts.startup_timeout):
        log.warning("starting with an unsynced view of the store (names that do not exist get SERVFAIL)")
    else:
        log.info("store synced in %.0f ms", (time.monotonic() - started) * 1000)
    responder = Responder(Answerer(opts.config), cache.view)
    server = DNSServer(responder, opts.host, opts.port).start()
    log.info("serving %s on %s:%d (udp, tcp)", ", ".join(opts.config.zones), *server.address)
    health = None
    if opts.health is not None:
        from podnet.proxy.metrics import serve

        def ready() -> tuple[int, str, bytes]:
            return (200, "text/plain", b"OK") if cache.view().synced else (503, "text/plain", b"kubernetes")

        health = serve(opts.health, {"/health": lambda: (200, "text/plain", b"OK"), "/ready": ready})
    publisher = None
    try:
        if opts.publish is not None:
            p = opts.publish
            es = endpoint_slice(p.namespace, p.service, p.node, p.ip,
                                [("dns", server.address[1], "UDP"), ("dns-tcp", server.address[1], "TCP")])
            publisher = Publisher(store, es)
            cache.wait_synced(None)  # an endpoint is listed only once it can answer with cluster data
            publisher.publish()
        stop.wait()
    finally:
        if publisher is not None:
            publisher.withdraw()
        server.stop()
        if health is not None:
            health.shutdown()
        cache.stop()
        s = responder.stats
        log.info("stopped after %d queries (%d from cache, %d malformed, %d dropped, %d internal errors)",
                 s.queries, s.cache_hits, s.formerr, s.dropped, s.errors)
