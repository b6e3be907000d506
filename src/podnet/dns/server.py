"""The sockets: DNS over UDP and TCP on one address, every message handed to wire.Responder.

UDP is one thread in a blocking receive loop (the cheapest path in Python: no event loop between the
kernel and the answer). TCP is an asyncio loop in a second thread, because TCP clients hold connections:
each connection may pipeline queries (RFC 7766), is closed after IDLE_TIMEOUT without a query and
READ_TIMEOUT within one, and at most MAX_TCP_CONNECTIONS wait at once: a new one closes the connection
idle longest, so a flood of silent connections neither exhausts descriptors nor locks clients out. The
answers themselves never block (a View is in memory).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket
import struct
import threading

from podnet.dns.wire import Responder
from podnet.errors import PodnetError

log = logging.getLogger("podnet.dns")

IDLE_TIMEOUT = 8.0  # miekg/dns's default idle timeout for a TCP connection between queries
READ_TIMEOUT = 2.0  # for the rest of a message once its length arrived (miekg's read timeout)
MAX_TCP_CONNECTIONS = 512
UDP_RECV = 65535


class ListenError(PodnetError):
    pass


def parse_listen(text: str) -> tuple[str, int]:
    """HOST:PORT or [V6]:PORT -> (host, port). Raises ListenError naming the value."""
    host, sep, port_s = text.rpartition(":")
    if not sep:
        raise ListenError(f"--listen {text!r}: expected HOST:PORT, e.g. 0.0.0.0:53 or [::]:53")
    host = host.removeprefix("[").removesuffix("]")
    try:
        port = int(port_s)
        ipaddress.ip_address(host)
    except ValueError:
        raise ListenError(f"--listen {text!r}: expected an IP address and a port number") from None
    if not 0 <= port <= 65535:
        raise ListenError(f"--listen {text!r}: port must be between 0 and 65535")
    return host, port


BIND_ATTEMPTS = 20


def _bind_pair(family: int, host: str, port: int) -> tuple[socket.socket, socket.socket] | str:
    """(udp, tcp) sockets bound to one port; the error text when port is 0 and TCP's side is taken.

    Any other failure (address not ours, privileged port, UDP port taken) raises ListenError at once.
    """
    udp = socket.socket(family, socket.SOCK_DGRAM)
    tcp = socket.socket(family, socket.SOCK_STREAM)
    try:
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        udp.bind((host, port))
    except OSError as e:
        udp.close()
        tcp.close()
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    try:
        tcp.bind((host, udp.getsockname()[1]))
        tcp.listen(128)
    except OSError as e:
        udp.close()
        tcp.close()
        if port == 0 and e.errno == errno.EADDRINUSE:
            return e.strerror or str(e)
        raise ListenError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    return udp, tcp


class DNSServer:
    """Serves responder on host:port (UDP and TCP) until stop()."""

    def __init__(self, responder: Responder, host: str, port: int) -> None:
        self.responder = responder
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        # One port for both. A kernel-chosen UDP port (port 0) may be taken for TCP by someone else:
        # then another UDP port is chosen, a few times, before giving up.
        pair = _bind_pair(family, host, port)
        for _ in range(BIND_ATTEMPTS - 1):
            if not isinstance(pair, str):
                break
            pair = _bind_pair(family, host, port)
        if isinstance(pair, str):
            raise ListenError(f"cannot listen on {host}:{port}: {pair}")
        self.udp, self.tcp = pair
        self.udp.settimeout(0.25)
        self.address = self.udp.getsockname()[:2]
        self._stop = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._threads: list[threading.Thread] = []
        self._idle_since: dict[asyncio.StreamWriter, float] = {}  # open TCP connections waiting for a query
        self.tcp_evicted = 0

    def start(self) -> DNSServer:
        for target, name in ((self._serve_udp, "udp"), (self._serve_tcp, "tcp")):
            t = threading.Thread(target=target, name=f"podnet-dns-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
        for t in self._threads:
            t.join(2)
        self.udp.close()
        self.tcp.close()

    # ---- UDP -------------------------------------------------------------------------------------------

    def _serve_udp(self) -> None:
        sock, respond = self.udp, self.responder.respond
        while not self._stop.is_set():
            try:
                data, peer = sock.recvfrom(UDP_RECV)
            except TimeoutError:
                continue
            except OSError:
                if self._stop.is_set():
                    return
                continue  # e.g. ECONNREFUSED from an earlier reply's ICMP: keep serving
            out = respond(data, False)
            if out is not None:
                with contextlib.suppress(OSError):
                    sock.sendto(out, peer)

    # ---- TCP -------------------------------------------------------------------------------------------

    def _serve_tcp(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            server = loop.run_until_complete(asyncio.start_server(self._connection, sock=self.tcp))
            loop.run_forever()
            server.close()
        finally:
            loop.close()

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if len(self._idle_since) >= MAX_TCP_CONNECTIONS:
            # full: the connection idle longest makes room (a flood of silent connections cannot lock
            # clients out; each of them would be closed after IDLE_TIMEOUT anyway)
            oldest = min(self._idle_since, key=self._idle_since.__getitem__)
            oldest.close()
            self._idle_since.pop(oldest, None)
            self.tcp_evicted += 1
        loop = asyncio.get_running_loop()
        self._idle_since[writer] = loop.time()
        try:
            while True:
                head = await asyncio.wait_for(reader.readexactly(2), IDLE_TIMEOUT)
                (length,) = struct.unpack("!H", head)
                if length == 0:
                    return
                self._idle_since.pop(writer, None)  # busy: not a candidate for eviction
                data = await asyncio.wait_for(reader.readexactly(length), READ_TIMEOUT)
                out = self.responder.respond(data, True)
                if out is None:
                    return
                writer.write(struct.pack("!H", len(out)) + out)
                await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
                self._idle_since[writer] = loop.time()
        except (TimeoutError, asyncio.IncompleteReadError, ConnectionError, OSError):
            return
        finally:
            self._idle_since.pop(writer, None)
            writer.close()
