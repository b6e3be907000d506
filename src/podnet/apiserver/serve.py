"""Run the API server: TLS material from certs.py, one HTTPS listener per address, until SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import signal
from pathlib import Path

from aiohttp import web

from podnet.apiserver import certs
from podnet.apiserver.app import Settings, ensure_namespaces, make_app, tls_context
from podnet.errors import Problem, ValidationError

log = logging.getLogger("podnet.apiserver")


def parse_listen(value: str) -> tuple[str, int]:
    """HOST:PORT (IPv6 in brackets). Only loopback and private (lab) addresses: the server is never
    exposed on a public address by accident."""
    host, sep, port_text = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ValidationError([Problem("--listen", value, "must be HOST:PORT, e.g. 127.0.0.1:6443")])
    try:
        port = int(port_text)
        addr = ipaddress.ip_address(host)
    except ValueError:
        raise ValidationError([Problem("--listen", value, "must be an IP address and a port number")]) from None
    if not 0 <= port <= 65535:
        raise ValidationError([Problem("--listen", value, "port must be between 0 and 65535")])
    if not (addr.is_loopback or addr.is_private) or addr.is_unspecified:
        raise ValidationError([Problem("--listen", value, "only loopback or private (lab) addresses are allowed")])
    return host, port


async def _serve(settings: Settings, listen: list[tuple[str, int]], cert_dir: certs.CertDir,
                 port_file: Path | None) -> None:
    app = make_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    ctx = tls_context(str(cert_dir.server_cert), str(cert_dir.server_key), str(cert_dir.ca))
    sites = []
    for host, port in listen:
        site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
        await site.start()
        sites.append(site)
    bound = [s._server.sockets[0].getsockname()[:2] for s in sites if s._server]  # type: ignore[union-attr]
    for host, port in bound:
        log.info("serving https://%s:%d", host, port)
    if port_file is not None and bound:
        port_file.write_text(f"{bound[0][1]}\n")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await runner.cleanup()


def run(settings: Settings, listen: list[str], cert_dir: str, *, port_file: Path | None = None) -> None:
    addrs = [parse_listen(v) for v in listen]
    d = certs.ensure(cert_dir, [h for h, _ in addrs])
    settings.tokens.add(d.token())
    ensure_namespaces(settings.store)
    asyncio.run(_serve(settings, addrs, d, port_file))
