"""Hold NodePorts open so no other process on the node can take them.

The rules DNAT NodePort traffic before it reaches any socket, so forwarding never depends on these sockets;
they only make the port visibly busy (EADDRINUSE for anyone else), as kube-proxy used to. A socket per
(node address, port, protocol): TCP listens (never accepts), UDP binds. They live in the namespace the proxy
runs in and vanish with the process; the rules stay.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)


@dataclass(frozen=True, order=True)
class LocalPort:
    ip: str
    port: int
    protocol: str  # "tcp" | "udp" (lower case, as in the rules)

    def __str__(self) -> str:
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{host}:{self.port}/{self.protocol}"


def open_socket(lp: LocalPort) -> socket.socket:
    family = socket.AF_INET6 if ipaddress.ip_address(lp.ip).version == 6 else socket.AF_INET
    if lp.protocol == "tcp":
        s = socket.socket(family, socket.SOCK_STREAM)
    elif lp.protocol == "udp":
        s = socket.socket(family, socket.SOCK_DGRAM)
    else:
        raise OSError(f"{lp}: protocol {lp.protocol!r} is not held (only tcp and udp)")
    try:
        s.set_inheritable(False)
        s.bind((lp.ip, lp.port))
        if lp.protocol == "tcp":
            s.listen(1)
    except OSError:
        s.close()
        raise
    return s


def local_ports(node_ips: Iterable[str], node_ports: Iterable[tuple[int, str]]) -> set[LocalPort]:
    """Every (node address, nodePort, protocol) the proxy should hold."""
    ips = sorted({str(ipaddress.ip_address(ip)) for ip in node_ips})
    return {LocalPort(ip, port, proto.lower()) for port, proto in node_ports for ip in ips}


def node_port_sockets(settings: Any, ports: Iterable[Any]) -> set[LocalPort]:
    """The sockets to hold for these service ports: TCP/UDP NodePorts on every node IP the rules answer on
    (or on nodePortAddresses' IPs, loopback left out: nothing outside can reach it)."""
    if settings.node_ports_match_all:
        ips = settings.node_ips
    else:
        ips = tuple(ip for ip in settings.node_port_ips() if not ip.startswith("127."))
    return local_ports(ips, {(sp.node_port, sp.protocol) for sp in ports
                             if sp.node_port and sp.protocol in ("TCP", "UDP")})


class PortHolder:
    """Keeps exactly the wanted sockets open. Ports another process already holds are logged and retried."""

    def __init__(self, opener: Callable[[LocalPort], socket.socket] = open_socket) -> None:
        self._open = opener
        self._held: dict[LocalPort, socket.socket] = {}

    @property
    def held(self) -> set[LocalPort]:
        return set(self._held)

    def sync(self, wanted: Iterable[LocalPort]) -> dict[LocalPort, OSError]:
        """Open what is missing, close what is no longer wanted. Returns the ports that could not be opened."""
        want = set(wanted)
        for lp in sorted(set(self._held) - want):
            self._held.pop(lp).close()
            log.info("released node port %s", lp)
        failed: dict[LocalPort, OSError] = {}
        for lp in sorted(want - set(self._held)):
            try:
                self._held[lp] = self._open(lp)
                log.info("holding node port %s", lp)
            except OSError as e:
                failed[lp] = e
                log.error("cannot hold node port %s (forwarding is unaffected): %s", lp, e)
        return failed

    def close(self) -> None:
        for s in self._held.values():
            s.close()
        self._held.clear()
