"""The DNS server's one port for UDP and TCP: a kernel-chosen port whose TCP side is taken is chosen again."""

from __future__ import annotations

import socket

import pytest

from podnet.dns import server
from podnet.dns.wire import Responder


def _responder() -> Responder:
    return Responder.__new__(Responder)  # never asked: these tests only bind


def test_port_zero_is_chosen_again_when_its_tcp_side_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    real, calls = server._bind_pair, []

    def flaky(family: int, host: str, port: int) -> tuple[socket.socket, socket.socket] | str:
        calls.append(port)
        return "Address already in use" if len(calls) < 3 else real(family, host, port)

    monkeypatch.setattr(server, "_bind_pair", flaky)
    s = server.DNSServer(_responder(), "127.0.0.1", 0)
    try:
        assert calls == [0, 0, 0]
        assert s.udp.getsockname()[1] == s.tcp.getsockname()[1] != 0
    finally:
        s.udp.close()
        s.tcp.close()


def test_a_given_port_whose_tcp_side_is_taken_is_an_error_naming_it() -> None:
    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        with pytest.raises(server.ListenError, match=f"127.0.0.1:{port}: Address already in use"):
            server.DNSServer(_responder(), "127.0.0.1", port)
    finally:
        taken.close()


def test_port_zero_gives_up_after_a_bounded_number_of_tries(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    monkeypatch.setattr(server, "_bind_pair", lambda f, h, p: calls.append(p) or "Address already in use")
    with pytest.raises(server.ListenError, match="127.0.0.1:0: Address already in use"):
        server.DNSServer(_responder(), "127.0.0.1", 0)
    assert len(calls) == server.BIND_ATTEMPTS
