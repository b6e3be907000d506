"""NodePort holding: exactly the wanted sockets stay open; ports others hold are reported, not fatal."""

from __future__ import annotations

import socket

import pytest

from podnet.proxy.nodeports import LocalPort, PortHolder, local_ports, open_socket


class FakeSocket:
    def __init__(self, lp: LocalPort) -> None:
        self.lp = lp
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_local_ports_cover_every_node_address() -> None:
    assert local_ports(["10.0.0.1", "192.168.1.5"], [(30080, "TCP")]) == {
        LocalPort("10.0.0.1", 30080, "tcp"), LocalPort("192.168.1.5", 30080, "tcp")}


def test_sync_opens_missing_and_closes_unwanted() -> None:
    opened: list[FakeSocket] = []

    def opener(lp: LocalPort) -> FakeSocket:
        if lp.port == 30099:
            raise OSError(98, "Address already in use")
        opened.append(FakeSocket(lp))
        return opened[-1]

    h = PortHolder(opener)  # type: ignore[arg-type]
    a, b, busy = LocalPort("10.0.0.1", 30080, "tcp"), LocalPort("10.0.0.1", 30081, "udp"), LocalPort("10.0.0.1", 30099, "tcp")
    failed = h.sync([a, b, busy])
    assert set(failed) == {busy} and h.held == {a, b}
    assert h.sync([b]) == {}  # busy is no longer wanted: nothing to report
    assert h.held == {b}
    assert [s.closed for s in opened] == [True, False]
    h.close()
    assert all(s.closed for s in opened)


def test_open_socket_really_holds_the_port() -> None:
    lp = LocalPort("127.0.0.1", 0, "udp")
    s = open_socket(lp)
    port = s.getsockname()[1]
    try:
        other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        with pytest.raises(OSError):
            other.bind(("127.0.0.1", port))
        other.close()
    finally:
        s.close()
    with pytest.raises(OSError, match="only tcp and udp"):
        open_socket(LocalPort("127.0.0.1", 0, "sctp"))
