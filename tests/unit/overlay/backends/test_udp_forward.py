"""The udp forwarder's pure parts (checksums, merging a GRO run into one TSO write) and its two loops
end to end over 127.0.0.1 with a datagram socketpair standing in for the TUN."""

from __future__ import annotations

import ipaddress
import os
import socket
import struct
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podnet.overlay.backends import udp_forward as uf


def ref_sum(data: bytes) -> int:
    """RFC 1071 the slow, obvious way."""
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


@given(st.binary(min_size=1, max_size=3000))
def test_ones_sum_matches_rfc1071(data: bytes):
    assert uf.ones_sum(data) == ref_sum(data) % 0xFFFF


def ip_csum_ok(hdr: bytes) -> bool:
    return ref_sum(hdr) == 0xFFFF


def tcp_packet(seq: int, payload: bytes, *, flags: int = 0x10, src: str = "10.244.1.2", dst: str = "10.244.2.2",
               ip_id: int = 7, options: bytes = b"\x01\x01\x08\x0a" + b"\0" * 8) -> bytes:
    thl = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", 40000, 5201, seq, 99, (thl // 4) << 4, flags, 500, 0, 0) + options
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + thl + len(payload), ip_id, 0x4000, 64, 6, 0,
                               socket.inet_aton(src), socket.inet_aton(dst)))
    struct.pack_into("!H", ip, 10, uf.checksum(uf.ones_sum(ip)))
    pseudo = socket.inet_aton(src) + socket.inet_aton(dst) + struct.pack("!BBH", 0, 6, thl + len(payload))
    csum = uf.checksum(ref_sum(pseudo + tcp + payload))
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    return bytes(ip) + tcp + payload


def run_writes(packets: list[bytes]) -> list[list[bytes]]:
    seg = max(len(p) for p in packets)
    buf = bytearray(b"".join(packets) + b"\0")
    assert all(len(p) == seg for p in packets[:-1])
    return [[bytes(x) for x in iov] for iov, _, _ in uf.coalesce(buf, memoryview(buf), len(buf) - 1, seg)]


def test_a_tcp_run_becomes_one_tso_write_with_a_valid_partial_checksum():
    mss = 1000
    pkts = [tcp_packet(5000 + i * mss, bytes([i]) * mss) for i in range(4)]
    pkts.append(tcp_packet(5000 + 4 * mss, b"z" * 300, flags=0x18))
    writes = run_writes(pkts)
    assert len(writes) == 1
    vnet, hdr, *payloads = writes[0]
    flags, gso_type, hdr_len, gso_size, csum_start, csum_offset = uf.VNET.unpack(vnet)
    assert (flags, gso_type, hdr_len, gso_size, csum_start, csum_offset) == (
        uf.F_NEEDS_CSUM, uf.GSO_TCPV4, 52, mss, 20, 16)
    merged = hdr + b"".join(payloads)
    assert struct.unpack_from("!H", merged, 2)[0] == len(merged) == 52 + 4 * mss + 300
    assert ip_csum_ok(merged[:20])
    assert merged[33] == 0x18  # PSH of the last segment kept
    assert merged[52:] == b"".join(p[52:] for p in pkts)
    # What the kernel will compute from the partial checksum equals the true checksum of the merged packet.
    pseudo = merged[12:20] + struct.pack("!BBH", 0, 6, len(merged) - 20)
    zeroed = merged[20:36] + b"\0\0" + merged[38:]
    true_csum = uf.checksum(ref_sum(pseudo + zeroed))
    assert uf.checksum(ref_sum(merged[20:])) == true_csum


def test_gaps_other_flows_and_non_tcp_are_written_one_by_one():
    mss = 500
    a = tcp_packet(1, b"a" * mss)
    gap = tcp_packet(1 + 2 * mss, b"b" * mss)  # one segment missing in between
    other = tcp_packet(1 + 3 * mss, b"c" * mss, src="10.244.1.3")
    icmp = bytearray(a)
    icmp[9] = 1
    writes = run_writes([a, gap, other, bytes(icmp)])
    assert [len(w) for w in writes] == [2, 2, 2, 2]
    assert all(w[0] == uf.VNET.pack(uf.F_DATA_VALID, 0, 0, 0, 0, 0) for w in writes)
    assert [w[1] for w in writes] == [a, gap, other, bytes(icmp)]


MUTATIONS = ["none"] * 6 + ["seq", "psh", "fin", "port", "df", "option", "ack"]


@given(st.integers(2, 50), st.integers(0, 2**32 - 1), st.sampled_from([100, 536, 1000, 1400, 1448]),
       st.lists(st.sampled_from(MUTATIONS), min_size=50, max_size=50), st.integers(1, 1448))
def test_the_column_check_of_a_gro_batch_agrees_with_the_per_packet_check(n, seq0, mss, muts, last_len):
    """_tcp_run with `stride` (a UDP GRO batch checked column-wise, one struct call) must cut every
    batch into exactly the runs the plain per-packet loop finds: sequence gaps and wrap-around, PSH,
    other flags, another flow, a DF change, changed options, a shorter last packet, the 64 KiB cap."""
    pkts = []
    for k in range(n):
        m = muts[k] if k else "none"
        seq = (seq0 + k * mss + (7 if m == "seq" else 0)) & 0xFFFFFFFF
        flags = {"psh": 0x18, "fin": 0x11}.get(m, 0x10)
        opts = b"\x01\x01\x08\x0a" + (b"\1" if m == "option" else b"\0") * 8
        payload = bytes(min(last_len, mss)) if k == n - 1 else bytes(mss)
        p = bytearray(tcp_packet(seq, payload, flags=flags, options=opts))
        if m == "port":
            p[20] ^= 1
        if m == "df":
            p[6] ^= 0x40
        if m == "ack":
            p[31] ^= 1
        pkts.append(bytes(p))
    seg = len(pkts[0])
    buf = bytearray(b"".join(pkts) + b"\0")
    starts = [k * seg for k in range(n)]
    lens = [len(p) for p in pkts]
    for i in range(n - 1):
        assert uf._tcp_run(buf, starts, lens, i, seg) == uf._tcp_run(buf, starts, lens, i, 0), i


@pytest.mark.parametrize("offset_words", [0, 4])
def test_a_tcp_header_shorter_than_20_bytes_is_passed_on_unmerged(offset_words: int):
    """A datagram from the wire whose TCP data offset is under 5 words is not a run head (the kernel
    will drop it); it must neither stop the receive loop nor be merged with its neighbours."""
    pkts = []
    for k in range(3):
        p = bytearray(tcp_packet(1 + k * 100, bytes(100), options=b""))
        p[32] = offset_words << 4
        pkts.append(bytes(p))
    writes = run_writes(pkts)
    assert [w[1] for w in writes] == pkts


def test_set_peer_refuses_a_subnet_of_another_length():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        fwd = uf.Forwarder(a.fileno(), b, 24)
        with pytest.raises(ValueError, match="SubnetLen 24"):
            fwd.set_peer(ipaddress.IPv4Network("10.244.0.0/16"), ipaddress.IPv4Address("192.0.2.1"), 8285)
        fwd.set_peer(ipaddress.IPv4Network("10.244.3.0/24"), ipaddress.IPv4Address("192.0.2.1"), 8285)
        assert fwd.lookup(int(ipaddress.IPv4Address("10.244.3.77"))) == ("192.0.2.1", 8285)
        fwd.del_peer(ipaddress.IPv4Network("10.244.3.0/24"))
        assert fwd.peers() == {}
        fwd.stop()
    finally:
        a.close()
        b.close()


class Node:
    """A forwarder with a fake TUN (datagram socketpair: `tun` is the kernel side) and a UDP socket."""

    def __init__(self, offload: bool) -> None:
        self.fwd_end, self.tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.fwd = uf.Forwarder(self.fwd_end.fileno(), self.sock, 24, offload=offload)
        self.tun.settimeout(3)

    def close(self) -> None:
        self.fwd.stop()
        for s in (self.fwd_end, self.tun, self.sock):
            s.close()


@pytest.fixture(params=[False, True], ids=["plain", "offload"])
def pair(request):
    if request.param and not uf.udp_gso_supported():
        pytest.skip("kernel without UDP GSO/GRO")
    a, b = Node(request.param), Node(request.param)
    a.fwd.set_peer(ipaddress.IPv4Network("10.244.2.0/24"), ipaddress.IPv4Address("127.0.0.1"), b.port)
    b.fwd.set_peer(ipaddress.IPv4Network("10.244.1.0/24"), ipaddress.IPv4Address("127.0.0.1"), a.port)
    a.fwd.start()
    b.fwd.start()
    try:
        yield a, b, request.param
    finally:
        a.close()
        b.close()


def test_packets_cross_unchanged_and_unknown_subnets_are_counted(pair):
    a, b, offload = pair
    hdr = uf.VNET.pack(0, 0, 0, 0, 0, 0) if offload else b""
    pkts = [tcp_packet(100 + i, os.urandom(200), ip_id=i, flags=0x18) for i in range(3)]
    for p in pkts:
        a.tun.send(hdr + p)
    got = [b.tun.recv(70000) for _ in pkts]
    assert [g[len(hdr):] for g in got] == pkts  # each packet arrives as it left (PSH: never merged)
    a.tun.send(hdr + tcp_packet(1, b"x", dst="10.244.9.9"))
    deadline = time.monotonic() + 3
    while a.fwd.tx_no_route == 0 and time.monotonic() < deadline:
        a.tun.send(hdr + tcp_packet(1, b"x", dst="10.244.9.9"))  # counters publish when the queue drains
        time.sleep(0.05)
    assert a.fwd.tx_no_route >= 1
    b.tun.settimeout(0.3)
    with pytest.raises(TimeoutError):
        b.tun.recv(70000)


def test_offload_merges_a_burst_of_segments_into_one_write():
    if not uf.udp_gso_supported():
        pytest.skip("kernel without UDP GSO/GRO")
    a, b = Node(True), Node(True)
    try:
        a.fwd.set_peer(ipaddress.IPv4Network("10.244.2.0/24"), ipaddress.IPv4Address("127.0.0.1"), b.port)
        mss = 1400
        pkts = [tcp_packet(1 + i * mss, os.urandom(mss), ip_id=i) for i in range(8)]
        hdr = uf.VNET.pack(0, 0, 0, 0, 0, 0)
        for p in pkts:  # queued before the loops start: one GSO send, one GRO receive, one TUN write
            a.tun.send(hdr + p)
        b.fwd.start()
        a.fwd.start()
        data = b.tun.recv(70000)
        vnet = uf.VNET.unpack_from(data)
        assert vnet[:2] == (uf.F_NEEDS_CSUM, uf.GSO_TCPV4) and vnet[3] == mss
        assert data[10 + 52:] == b"".join(p[52:] for p in pkts)
        deadline = time.monotonic() + 2  # the threads bump their counters just after the syscall
        while (a.fwd.tx_sends, b.fwd.rx_writes) != (1, 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (a.fwd.tx_sends, b.fwd.rx_writes) == (1, 1)
    finally:
        a.close()
        b.close()


def test_a_mixed_burst_is_split_by_peer_and_size_and_unknown_subnets_answered():
    """A TUN drain that is not one peer's run of equal sizes goes the general way: each consecutive
    group of one peer with non-growing sizes leaves in one send, a packet for no peer is counted."""
    if not uf.udp_gso_supported():
        pytest.skip("kernel without UDP GSO/GRO")
    a, b, c = Node(True), Node(True), Node(True)
    try:
        a.fwd.set_peer(ipaddress.IPv4Network("10.244.2.0/24"), ipaddress.IPv4Address("127.0.0.1"), b.port)
        a.fwd.set_peer(ipaddress.IPv4Network("10.244.3.0/24"), ipaddress.IPv4Address("127.0.0.1"), c.port)
        to_b = [tcp_packet(1 + i, os.urandom(800), flags=0x18, ip_id=i) for i in range(2)]
        nowhere = tcp_packet(9, b"x", dst="10.244.9.9")
        to_c = tcp_packet(5, os.urandom(800), flags=0x18, dst="10.244.3.2")
        small_to_b = tcp_packet(7, os.urandom(300), flags=0x18, ip_id=9)
        hdr = uf.VNET.pack(0, 0, 0, 0, 0, 0)
        for p in (*to_b, nowhere, to_c, small_to_b):  # queued before the loop starts: one drain
            a.tun.send(hdr + p)
        for node in (b, c, a):
            node.fwd.start()
        assert [b.tun.recv(70000)[10:] for _ in range(3)] == [*to_b, small_to_b]
        assert c.tun.recv(70000)[10:] == to_c
        deadline = time.monotonic() + 2  # the threads bump their counters just after the syscall
        while (a.fwd.tx_sends, a.fwd.tx_no_route) != (3, 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert (a.fwd.tx_sends, a.fwd.tx_packets, a.fwd.tx_no_route) == (3, 4, 1)
    finally:
        for node in (a, b, c):
            node.close()


def test_icmp_net_unreachable_quotes_the_offender_with_valid_checksums():
    offender = tcp_packet(1, b"data" * 10)
    reply = uf.icmp_net_unreachable(offender, socket.inet_aton("10.244.1.0"))
    assert reply is not None and ip_csum_ok(reply[:20])
    assert (reply[9], socket.inet_ntoa(reply[12:16]), socket.inet_ntoa(reply[16:20])) == (1, "10.244.1.0", "10.244.1.2")
    assert (reply[20], reply[21]) == (3, 0) and ref_sum(reply[20:]) == 0xFFFF
    assert reply[28:] == offender[:28]


def test_no_icmp_error_about_icmp_errors_or_later_fragments():
    err = bytearray(tcp_packet(1, b"x" * 20))
    err[9], err[20] = 1, 3  # an ICMP destination unreachable
    assert uf.icmp_net_unreachable(bytes(err), b"\0\0\0\0") is None
    frag = bytearray(tcp_packet(1, b"x" * 20))
    frag[6:8] = b"\x00\x10"  # fragment offset 16
    assert uf.icmp_net_unreachable(bytes(frag), b"\0\0\0\0") is None


def test_icmp_errors_are_rate_limited_to_a_burst():
    fwd_end, tun = socket.socketpair(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        fwd = uf.Forwarder(fwd_end.fileno(), sock, 24, own_ip=ipaddress.IPv4Address("10.244.0.0"))
        offender = memoryview(tcp_packet(1, b"x"))
        for _ in range(50):  # a burst far faster than ICMP_RATE
            fwd._unreachable(offender, b"")
        tun.setblocking(False)
        got = 0
        while True:
            try:
                tun.recv(2000)
            except BlockingIOError:
                break
            got += 1
        assert uf.ICMP_BURST <= got <= uf.ICMP_BURST + 2
        fwd.stop()
    finally:
        for s in (fwd_end, tun, sock):
            s.close()
