"""Run the API server: TLS material from certs.py, one HTTPS listener per address, until SIGTERM."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import signal
import socket
from pathlib import Path

from aiohttp import web

from podnet.apiserver import certs
from podnet.apiserver.app import Settings, ensure_namespaces, make_app, tls_context
from podnet.controllers.writeindex import WriteIndex
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


def parse_listen_netns(value: str) -> tuple[str, str, int]:
    """NETNS=HOST:PORT: a listener inside another network namespace (a lab's underlay, for its nodes)."""
    ns, sep, addr = value.partition("=")
    if not sep or not ns or "/" in ns:
        raise ValidationError([Problem("--listen-netns", value, "must be NETNS=HOST:PORT, e.g. pn-lab.ul=192.168.77.1:6443")])
    host, port = parse_listen(addr)
    return ns, host, port


def _socket_in(ns: str, host: str, port: int) -> socket.socket:
    """A listening socket made inside namespace ns: a socket belongs to the namespace it was created in,
    so this server (in the root namespaces) can also answer the lab's nodes."""
    from podnet.net import netns, nsfd

    fd = nsfd.open_netns(f"{netns.NETNS_DIR}/{ns}")
    try:
        with nsfd.entered(fd):
            sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((host, port))
            sock.listen(128)
    finally:
        os.close(fd)
    return sock


async def _serve(settings: Settings, listen: list[tuple[str, int]], cert_dir: certs.CertDir,
                 port_file: Path | None, in_netns: list[tuple[str, str, int]]) -> None:
    app = make_app(settings)
    runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=1.0)
    await runner.setup()
    ctx = tls_context(str(cert_dir.server_cert), str(cert_dir.server_key), str(cert_dir.ca))
    sites = []
    for host, port in listen:
        site = web.TCPSite(runner, host, port, ssl_context=ctx, reuse_address=True)
        await site.start()
        sites.append(site)
    for ns, host, port in in_netns:
        await web.SockSite(runner, _socket_in(ns, host, port), ssl_context=ctx).start()
        log.info("serving https://%s:%d in namespace %s", host, port, ns)
    # aiohttp keeps a site's server private and types it AbstractServer; TCPSite's is the asyncio.Server
    # loop.create_server returned, which has .sockets (aiohttp's own runner.addresses ignores this too).
    bound = [s._server.sockets[0].getsockname()[:2] for s in sites if s._server]  # type: ignore[attr-defined]
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


def run(settings: Settings, listen: list[str], cert_dir: str, *, port_file: Path | None = None,
        listen_netns: list[str] | None = None) -> None:
    addrs = [parse_listen(v) for v in listen]
    in_netns = [parse_listen_netns(v) for v in listen_netns or []]
    d = certs.ensure(cert_dir, [h for h, _ in addrs] + [h for _, h, _ in in_netns])
    settings.tokens.add(d.token())
    ensure_namespaces(settings.store)
    if settings.write_index is None:
        settings.write_index = WriteIndex(settings.store, name="apiserver write index").start()
    try:
        asyncio.run(_serve(settings, addrs, d, port_file, in_netns))
    finally:
        settings.write_index.stop()
