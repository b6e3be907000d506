"""Bad input to a running `podnet dns run` (on 127.0.0.1, no root needed): malformed and oversize messages,
a bounded flood, and a crowd of silent TCP connections. Through all of it the server keeps answering the
other clients, and afterwards it is still the same process."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

pytestmark = pytest.mark.integration

PODNET = str(Path(sys.executable).with_name("podnet"))
NAME = "web.default.svc.cluster.local."
OBJECTS = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {clusterIP: 10.96.0.11, ports: [{name: http, port: 80}]}
"""


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[tuple[str, int], subprocess.Popen[bytes]]]:
    d = tmp_path_factory.mktemp("dns")
    store = f"sqlite:///{d}/state.db"
    subprocess.run([PODNET, "--store", store, "apply", "-f", "-"], input=OBJECTS, text=True, check=True,
                   capture_output=True)
    log = d / "dns.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PODNET, "--store", store, "dns", "run", "--listen", "127.0.0.1:0"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        port = 0
        while time.monotonic() < deadline and not port:
            m = re.search(r"on 127\.0\.0\.1:(\d+) \(udp, tcp\)", log.read_text())
            if m:
                port = int(m.group(1))
            elif proc.poll() is not None:
                raise AssertionError(f"podnet dns run exited {proc.returncode}:\n{log.read_text()}")
            else:
                time.sleep(0.05)
        assert port, log.read_text()
        yield ("127.0.0.1", port), proc
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def ask_udp(addr: tuple[str, int], name: str = NAME, timeout: float = 0.5, tries: int = 6) -> dns.message.Message:
    """One query the way a stub resolver makes it: a fresh socket, a timeout, a few retries."""
    q = dns.message.make_query(name, "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        for _ in range(tries):
            s.sendto(q.to_wire(), addr)
            try:
                while True:
                    data, _ = s.recvfrom(65535)
                    r = dns.message.from_wire(data)
                    if r.id == q.id:
                        return r
            except TimeoutError:
                continue
    raise AssertionError(f"no answer for {name} after {tries} tries")


def ask_tcp(addr: tuple[str, int], timeout: float = 3.0) -> dns.message.Message:
    q = dns.message.make_query(NAME, "A").to_wire()
    with socket.create_connection(addr, timeout=timeout) as s:
        s.sendall(struct.pack("!H", len(q)) + q)
        head = _recv_exact(s, 2)
        return dns.message.from_wire(_recv_exact(s, struct.unpack("!H", head)[0]))


def _recv_exact(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("closed")
        buf += chunk
    return buf


def _answered(r: dns.message.Message) -> bool:
    return r.rcode() == dns.rcode.NOERROR and [rr.to_text() for rr in r.answer] == [f"{NAME} 5 IN A 10.96.0.11"]


def _header(msg_id: int, flags: int, qd: int, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", msg_id, flags, qd, an, ns, ar)


MALFORMED = [
    b"",
    b"\x00",
    b"\x12\x34\x01\x00\x00",  # shorter than a header
    _header(1, 0x0100, 0),  # no question
    _header(2, 0x0100, 2) + dns.message.make_query(NAME, "A").to_wire()[12:] * 2,  # two questions
    _header(3, 0x0100, 1) + b"\x3fabc",  # a label longer than the message
    _header(4, 0x0100, 1) + b"\xc0\x0c\x00\x01\x00\x01",  # a compression pointer to itself
    _header(5, 0x0100, 1) + b"\x03web\x00\x00",  # question cut short
    _header(6, 0x0100, 1) + b"\x03web\x00\x00\x01\x00\x01" + b"junk",  # trailing bytes
    _header(7, 0x0100, 1, ar=1) + b"\x03web\x00\x00\x01\x00\x01" + b"\x00\x00\x29\x10",  # an OPT cut short
    _header(8, 0x8100, 1) + b"\x03web\x00\x00\x01\x00\x01",  # a response, not a query
    _header(9, 0x2900, 1) + b"\x03web\x00\x00\x01\x00\x01",  # opcode UPDATE
    bytes(range(256)) * 2,
]


def test_malformed_messages_get_formerr_or_nothing_and_the_server_keeps_answering(server) -> None:  # type: ignore[no-untyped-def]
    addr, proc = server
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.5)
        for wire in MALFORMED:
            s.sendto(wire, addr)
            try:
                data, _ = s.recvfrom(65535)
            except TimeoutError:
                assert len(wire) < 12 or wire[2] & 0x80, f"no answer to {wire[:24]!r}"  # dropped: no header, or a response
                continue
            assert data[:2] == wire[:2]
            rcode = data[3] & 0xF
            assert rcode in (dns.rcode.FORMERR, dns.rcode.NOTIMP), (wire[:24], rcode)
            assert _answered(ask_udp(addr))
    assert proc.poll() is None


def test_oversize_messages(server) -> None:  # type: ignore[no-untyped-def]
    addr, proc = server
    big = dns.message.make_query(NAME, "A").to_wire() + b"\x00" * 60000  # a query with 60 kB of trailing junk
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(big, addr)
        data, _ = s.recvfrom(65535)
        assert data[3] & 0xF == dns.rcode.FORMERR
    # TCP: a length that promises 65535 bytes, a few of them, then silence; the server gives up on it
    with socket.create_connection(addr, timeout=10) as s:
        s.sendall(b"\xff\xff" + b"x" * 100)
        assert _answered(ask_udp(addr)) and _answered(ask_tcp(addr))  # others are answered meanwhile
        s.settimeout(10)
        assert s.recv(10) == b""  # closed after the read timeout, no reply
    with socket.create_connection(addr, timeout=5) as s:  # zero length: closed at once
        s.sendall(b"\x00\x00")
        s.settimeout(5)
        assert s.recv(10) == b""
    assert proc.poll() is None


def test_a_bounded_flood_does_not_starve_other_clients(server) -> None:  # type: ignore[no-untyped-def]
    addr, proc = server
    import threading

    stop = threading.Event()
    sent = [0]

    def flood() -> None:
        junk = [dns.message.make_query(f"q{i}.default.svc.cluster.local.", "A").to_wire() for i in range(50)]
        junk += [b"\x12\x34" + bytes(40), bytes(range(64))]
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.setblocking(False)
            deadline = time.monotonic() + 4.0
            while sent[0] < 40000 and time.monotonic() < deadline and not stop.is_set():
                try:
                    s.sendto(junk[sent[0] % len(junk)], addr)
                except BlockingIOError:
                    time.sleep(0.0005)
                    continue
                sent[0] += 1

    t = threading.Thread(target=flood)
    t.start()
    try:
        time.sleep(0.2)
        answers = [ask_udp(addr) for _ in range(30)]
    finally:
        stop.set()
        t.join()
    assert all(_answered(r) for r in answers)
    assert sent[0] > 1000  # it was a flood
    assert proc.poll() is None and _answered(ask_udp(addr))


def test_silent_tcp_connections_do_not_lock_clients_out(server) -> None:  # type: ignore[no-untyped-def]
    addr, proc = server
    idle = []
    try:
        for _ in range(600):  # more than the server keeps open (MAX_TCP_CONNECTIONS)
            idle.append(socket.create_connection(addr, timeout=5))
        assert _answered(ask_tcp(addr))  # the connection idle longest made room
        assert _answered(ask_udp(addr))
    finally:
        for s in idle:
            s.close()
    assert proc.poll() is None


def test_edns_and_truncation_over_the_wire(server) -> None:  # type: ignore[no-untyped-def]
    addr, _ = server
    q = dns.message.make_query(NAME, "A", use_edns=0, payload=1232)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(2)
        s.sendto(q.to_wire(), addr)
        r = dns.message.from_wire(s.recvfrom(65535)[0])
    assert _answered(r) and r.edns == 0 and r.flags & dns.flags.AA
