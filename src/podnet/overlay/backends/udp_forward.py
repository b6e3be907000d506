"""The udp backend's data plane: IP packets from the TUN go out as UDP payloads to the peer that owns
the destination subnet; UDP payloads that arrive go into the TUN unchanged (flannel's wire format: one
complete, checksummed IPv4 packet per datagram).

Python pays about a microsecond per handful of bytecodes, so the design is about doing fewer, bigger
syscalls and little Python per byte:
- one thread per direction; every syscall releases the GIL, so one direction's read overlaps the other's
  Python work;
- non-blocking descriptors drained in a tight loop; poll() only when a queue is empty, and on a wake pipe
  so stop() returns at once;
- preallocated buffers, packets handed on as memoryview slices (no copy of payload bytes in Python);
- the peer table maps `destination >> (32 - SubnetLen)` to a ready (ip, port) tuple: one dict lookup; it
  is replaced as a whole on change so the loops never see it half-updated.

Offload mode (the default where the kernel has UDP GSO/GRO) moves about 44 packets per syscall where
it can:
- TX: the TUN queue is drained into slots of one buffer (one read each: the kernel has already cut and
  checksummed TCP in C, far faster than Python could), then every run of equal-sized packets for one
  peer leaves with ONE sendmsg using UDP_SEGMENT (UDP GSO): the kernel splits the buffer at our packet
  boundaries, so the wire still carries one plain IP packet per datagram.
- RX: UDP_GRO on the socket: one recvmsg returns a run of same-sized datagrams and their size. Runs of
  one TCP stream are merged back into one TSO packet and written with ONE write (virtio header
  GSO_TCPV4 + NEEDS_CSUM), so the node forwards, and the pod's TCP acks, one 64 KiB packet instead of
  44; anything else is written packet by packet marked DATA_VALID (the outer UDP checksum already
  covered those bytes).
A packet for a subnet no peer owns gets ICMP net unreachable back through the TUN, as in flannel.
flannel's C proxy also decrements the TTL in both directions; we leave that to the kernel's own
forwarding hops (node in, node out), which already bound loops.
"""

from __future__ import annotations

import errno
import functools
import io
import ipaddress
import logging
import os
import select
import socket
import struct
import threading
import time

log = logging.getLogger(__name__)

BUF_SIZE = 65535
SOL_UDP = 17
UDP_SEGMENT = 103
UDP_GRO = 104
VNET_LEN = 10
VNET = struct.Struct("<BBHHHH")  # flags, gso_type, hdr_len, gso_size, csum_start, csum_offset
F_NEEDS_CSUM = 1
F_DATA_VALID = 2
GSO_NONE = 0
GSO_TCPV4 = 1
TCP_PSH = 0x08
ICMP_RATE, ICMP_BURST = 100.0, 10.0
MAX_GSO_BYTES = 65000  # UDP payload limit of one sendmsg (65507) with room to spare
MAX_GSO_SEGMENTS = 64  # UDP_MAX_SEGMENTS on kernels before 6.x (128 since)

_U32 = struct.Struct("!I")
_U16 = struct.Struct("!H")
_U16_NATIVE = struct.Struct("=H")
_I32_NATIVE = struct.Struct("=i")
_VALID_HDR = VNET.pack(F_DATA_VALID, GSO_NONE, 0, 0, 0, 0)
_V4_FIRST_BYTES = bytes(range(0x40, 0x50))  # version 4, any header length


def ones_sum(data: bytes | bytearray | memoryview) -> int:
    """Ones' complement sum of 16-bit big-endian words, folded to 0..0xFFFE (0 stands for 0xFFFF).

    2**16 == 1 (mod 0xFFFF), so the big-endian number equals the sum of its words mod 0xFFFF; one C-speed
    int conversion instead of a Python loop over words. Odd lengths are padded with a zero byte.
    """
    value = int.from_bytes(data, "big")
    if len(data) & 1:
        value <<= 8
    return value % 0xFFFF


def checksum(total: int) -> int:
    """Internet checksum field for a ones' complement sum (any non-negative int)."""
    return ~(total % 0xFFFF) & 0xFFFF


def icmp_net_unreachable(pkt: memoryview | bytes, src: bytes) -> bytes | None:
    """ICMP type 3 code 0 for `pkt` from `src` (RFC 792: the offender's header + 8 bytes). None for
    packets that must not get one: ICMP errors themselves and non-first fragments (RFC 1122)."""
    if len(pkt) < 20:
        return None
    ihl = (pkt[0] & 0x0F) * 4
    if _U16.unpack_from(pkt, 6)[0] & 0x1FFF:
        return None
    if pkt[9] == 1 and len(pkt) > ihl and pkt[ihl] not in (0, 8, 13, 14, 15, 16, 17, 18):
        return None  # an ICMP error (or unknown type): never answer it
    quote = bytes(pkt[:ihl + 8])
    icmp = bytearray(8) + quote
    icmp[0] = 3
    _U16.pack_into(icmp, 2, checksum(ones_sum(icmp)))
    ip = bytearray(struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0, src, bytes(pkt[12:16])))
    _U16.pack_into(ip, 10, checksum(ones_sum(ip)))
    return bytes(ip + icmp)


def udp_gso_supported() -> bool:
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        s.setsockopt(SOL_UDP, UDP_SEGMENT, 1400)
        s.setsockopt(SOL_UDP, UDP_GRO, 1)
        return True
    except OSError:
        return False
    finally:
        s.close()


class Forwarder:
    """Moves packets between a TUN descriptor and a UDP socket. `offload` must match how the TUN was
    opened: True = IFF_VNET_HDR with CSUM+TSO4 offload and a socket that supports UDP GSO/GRO."""

    def __init__(self, tun_fd: int, sock: socket.socket, subnet_len: int, *, offload: bool = False,
                 max_packet: int = 1500, own_ip: ipaddress.IPv4Address | None = None) -> None:
        if not 0 < subnet_len <= 32:
            raise ValueError(f"SubnetLen: {subnet_len!r}: must be 1..32")
        self.tun_fd = tun_fd
        self.sock = sock
        self.offload = offload
        self.max_packet = max_packet  # the TUN's MTU: the largest packet one read can return
        self.own_ip = own_ip  # source of our ICMP errors (see udp._icmp_source); None: send none
        self._icmp_tokens = ICMP_BURST
        self._icmp_time = time.monotonic()
        self.shift = 32 - subnet_len
        self._table: dict[int, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # counters (each written by one thread only; read by metrics and tests)
        self.tx_packets = self.tx_bytes = self.tx_no_route = self.tx_errors = 0
        self.rx_packets = self.rx_bytes = self.rx_errors = 0
        self.tx_sends = self.rx_writes = 0  # syscalls: packets/sends shows how well batching works

    # -- peer table ------------------------------------------------------------------------------

    def set_peer(self, subnet: ipaddress.IPv4Network, ip: ipaddress.IPv4Address, port: int) -> None:
        if subnet.prefixlen != 32 - self.shift:
            raise ValueError(f"subnet {subnet}: prefix length differs from SubnetLen {32 - self.shift}")
        with self._lock:
            table = dict(self._table)
            table[int(subnet.network_address) >> self.shift] = (str(ip), port)
            self._table = table

    def del_peer(self, subnet: ipaddress.IPv4Network) -> None:
        with self._lock:
            table = dict(self._table)
            table.pop(int(subnet.network_address) >> self.shift, None)
            self._table = table

    def peers(self) -> dict[ipaddress.IPv4Network, tuple[str, int]]:
        plen = 32 - self.shift
        return {ipaddress.IPv4Network((k << self.shift, plen)): v for k, v in self._table.items()}

    def lookup(self, dst: int) -> tuple[str, int] | None:
        return self._table.get(dst >> self.shift)

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self.sock.setblocking(False)
        os.set_blocking(self.tun_fd, False)
        if self.offload:
            self.sock.setsockopt(SOL_UDP, UDP_GRO, 1)
            loops = (("udp-tx", self._tx_offload), ("udp-rx", self._rx_offload))
        else:
            loops = (("udp-tx", self._tx_plain), ("udp-rx", self._rx_plain))
        for name, fn in loops:
            t = threading.Thread(target=fn, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def stop(self) -> None:
        self._stopping = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:
            pass
        for t in self._threads:
            t.join(timeout=5)
        self._threads = []
        for fd in (self._wake_r, self._wake_w):
            try:
                os.close(fd)
            except OSError:
                pass

    def _poller(self, fd: int) -> select.poll:
        p = select.poll()
        p.register(fd, select.POLLIN)
        p.register(self._wake_r, select.POLLIN)
        return p

    def _unreachable(self, pkt: memoryview, vnet: bytes) -> None:
        """Answer a packet for a subnet no peer owns with ICMP net unreachable, as flannel's proxy does,
        so `ping` says why instead of timing out. A token bucket (ICMP_RATE per second, bursts of
        ICMP_BURST, like the kernel's icmp_msgs_per_sec) keeps a flood from getting a flood back."""
        if self.own_ip is None:
            return
        now = time.monotonic()
        self._icmp_tokens = min(ICMP_BURST, self._icmp_tokens + (now - self._icmp_time) * ICMP_RATE)
        self._icmp_time = now
        if self._icmp_tokens < 1:
            return
        reply = icmp_net_unreachable(pkt, self.own_ip.packed)
        if reply is None:
            return
        self._icmp_tokens -= 1
        try:
            os.write(self.tun_fd, vnet + reply)
        except OSError:
            pass

    # -- plain loops: one packet per syscall (no vnet header) ------------------------------------

    def _tx_plain(self) -> None:
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        bufs = [buf]
        readv = os.readv
        sendto = self.sock.sendto
        dst_of = _U32.unpack_from
        fd = self.tun_fd
        wait = self._poller(fd).poll
        packets = nbytes = no_route = errors = 0
        while not self._stopping:
            try:
                n = readv(fd, bufs)
            except BlockingIOError:
                self.tx_packets, self.tx_bytes, self.tx_no_route, self.tx_errors = packets, nbytes, no_route, errors
                wait()
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    break
                errors += 1
                continue
            if n < 20 or buf[0] >> 4 != 4:
                continue
            peer = self._table.get(dst_of(buf, 16)[0] >> self.shift)
            if peer is None:
                no_route += 1
                self._unreachable(mv[:n], b"")
                continue
            try:
                sendto(mv[:n], peer)
            except OSError:  # includes a full socket buffer: drop, as a NIC queue would
                errors += 1
                continue
            packets += 1
            nbytes += n
        self.tx_packets, self.tx_bytes, self.tx_no_route, self.tx_errors = packets, nbytes, no_route, errors

    def _rx_plain(self) -> None:
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        recv_into = self.sock.recv_into
        write = os.write
        fd = self.tun_fd
        wait = self._poller(self.sock.fileno()).poll
        packets = nbytes = errors = 0
        while not self._stopping:
            try:
                n = recv_into(buf)
            except BlockingIOError:
                self.rx_packets, self.rx_bytes, self.rx_errors = packets, nbytes, errors
                wait()
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    break
                errors += 1
                continue
            if n < 20 or buf[0] >> 4 != 4:
                errors += 1
                continue
            try:
                write(fd, mv[:n])
            except OSError:
                errors += 1
                continue
            packets += 1
            nbytes += n
        self.rx_packets, self.rx_bytes, self.rx_errors = packets, nbytes, errors

    # -- offload loops: TSO super packets out, UDP GRO runs in ------------------------------------

    def _tx_offload(self) -> None:
        """Drain the TUN into slots of one preallocated buffer, then send each run of equal-sized
        packets to one peer with a single UDP GSO sendmsg. The kernel has already segmented and
        checksummed the packets (no TUN offloads), which C does far faster than Python could.

        Per packet only the read itself runs in Python's loop: the destinations of all slots come out
        of one struct call, and a drain that is one peer's run of equal-sized packets (the usual case:
        one TSO packet cut by the kernel) is recognised with a few list operations.
        """
        slot = VNET_LEN + self.max_packet
        nslots = max(1, min(MAX_GSO_SEGMENTS, MAX_GSO_BYTES // self.max_packet))
        buf = bytearray(slot * nslots)
        mv = memoryview(buf)
        slots = [mv[i * slot:(i + 1) * slot] for i in range(nslots)]
        offsets = range(VNET_LEN, slot * nslots, slot)  # where each slot's IP packet starts
        # FileIO.readinto: one buffer and no iovec list to parse, and None instead of an exception
        # when the queue is empty; ~15 % less per-packet cost than os.readv
        readinto = io.FileIO(self.tun_fd, "rb", closefd=False).readinto
        sock = self.sock
        sendto = sock.sendto
        sendmsg = sock.sendmsg
        pack_seg = _U16_NATIVE.pack
        fd = self.tun_fd
        wait = self._poller(fd).poll
        shift = self.shift
        while not self._stopping:
            # 1. read until the queue is empty or the buffer is full; sizes[i] belongs to slot i
            sizes: list[int] = []
            for one in slots:
                try:
                    got = readinto(one)
                    if got is None:
                        break
                    sizes.append(got - VNET_LEN)
                except OSError as exc:
                    if exc.errno == errno.EBADF:
                        return
                    self.tx_errors += 1
                    sizes.append(0)  # fails the length check below
            count = len(sizes)
            if not count:
                wait()
                continue
            # 2. the peer of every slot (a slot too short to hold a header is skipped below)
            table = self._table
            peers = [table.get(d >> shift) for d in _column_u32(slot, count, VNET_LEN + 16).unpack_from(buf)]
            seg = sizes[0]
            peer = peers[0]
            if (count > 1 and peer is not None and peers.count(peer) == count and sizes[-1] <= seg
                    and sizes.count(seg) >= count - 1 and min(sizes) >= 20
                    and not buf[VNET_LEN:count * slot:slot].translate(None, _V4_FIRST_BYTES)):
                self._send([mv[o:o + n] for o, n in zip(offsets, sizes, strict=False)], seg, sum(sizes), peer,
                           sendto, sendmsg, pack_seg)
                continue
            # 3. otherwise group consecutive packets by (peer, size) and send each group at once
            k = 0
            while k < count:
                off, ln, peer = offsets[k], sizes[k], peers[k]
                k += 1
                if ln < 20 or buf[off] >> 4 != 4:
                    continue  # not IPv4 (or a failed read): nothing a flannel peer accepts
                if peer is None:
                    self.tx_no_route += 1
                    self._unreachable(mv[off:off + ln], _VALID_HDR)
                    continue
                group = [mv[off:off + ln]]
                nbytes = ln
                while k < count:
                    off2, ln2 = offsets[k], sizes[k]
                    if ln2 > ln or ln2 < 20 or peers[k] != peer or buf[off2] >> 4 != 4:
                        break
                    group.append(mv[off2:off2 + ln2])
                    nbytes += ln2
                    k += 1
                    if ln2 < ln:
                        break  # a shorter packet can only end a GSO batch
                self._send(group, ln, nbytes, peer, sendto, sendmsg, pack_seg)

    def _send(self, group: list[memoryview], seg: int, nbytes: int, peer: tuple[str, int],
              sendto, sendmsg, pack_seg) -> None:  # noqa: ANN001 - bound methods passed for speed
        """One datagram per packet of `group` to `peer`: one sendmsg with UDP GSO cut at `seg`."""
        try:
            if len(group) == 1:
                sendto(group[0], peer)
            else:
                sendmsg(group, [(SOL_UDP, UDP_SEGMENT, pack_seg(seg))], 0, peer)
        except OSError:  # includes a full socket buffer: drop, as a NIC queue would
            self.tx_errors += len(group)
            return
        self.tx_packets += len(group)
        self.tx_bytes += nbytes
        self.tx_sends += 1

    def _rx_offload(self) -> None:
        buf = bytearray(BUF_SIZE + 1)
        mv = memoryview(buf)
        bufs = [buf]
        recvmsg_into = self.sock.recvmsg_into
        anc_size = socket.CMSG_SPACE(4)
        writev = os.writev
        unpack_i32 = _I32_NATIVE.unpack_from
        fd = self.tun_fd
        wait = self._poller(self.sock.fileno()).poll
        while not self._stopping:
            try:
                n, anc, _flags, _addr = recvmsg_into(bufs, anc_size)
            except BlockingIOError:
                wait()
                continue
            except OSError as exc:
                if exc.errno == errno.EBADF:
                    break
                self.rx_errors += 1
                continue
            seg = n
            for level, kind, data in anc:
                if level == SOL_UDP and kind == UDP_GRO:
                    seg = unpack_i32(data)[0] or n  # 0 never comes from the kernel; never divide by it
            for iov, count, size in coalesce(buf, mv, n, seg):
                try:
                    writev(fd, iov)
                    self.rx_writes += 1
                    self.rx_packets += count
                    self.rx_bytes += size
                except OSError:
                    self.rx_errors += count


_PSEUDO_PROTO_TCP = 6


def _tcp_run(buf: bytearray, starts: list[int], lens: list[int], i: int, stride: int = 0) -> int:
    """How many packets from index i on form one TCP stream run that the kernel's GRO would merge:
    same addresses, ports, ack, window, options and fragment field, consecutive sequence numbers, only
    ACK set (PSH allowed on the last), equal payload sizes except a shorter last one, 64 KiB at most.

    `stride` > 0 says packets lie back to back every `stride` bytes (a UDP GRO batch); then the
    full-sized ones are checked by _stride_run (one struct call and a few tuple operations per batch
    instead of a dozen Python operations per packet), and only a shorter last packet goes through the
    per-packet loop.
    """
    a = starts[i]
    if buf[a] != 0x45 or buf[a + 9] != _PSEUDO_PROTO_TCP or buf[a + 6] & 0x3F or buf[a + 7]:
        return 1  # IP options, not TCP, or a fragment
    hl = 20 + (buf[a + 32] >> 4) * 4
    if buf[a + 33] != 0x10 or lens[i] <= hl or hl < 40:
        return 1  # flags other than a bare ACK, no payload, or a TCP header under 20 bytes: as is
    mss = lens[i] - hl
    seq0 = _U32.unpack_from(buf, a + 24)[0]
    j = i + 1
    total = lens[i]
    if stride and lens[i] == stride:
        full = len(lens) - (lens[-1] != stride)  # in a GRO batch only the last may be shorter
        count, stop = _stride_run(buf, a, stride, full - i, hl, mss, seq0)
        if stop or i + count == len(starts):
            return count
        j = i + count
        total = lens[i] + (count - 1) * mss
    expect = (seq0 + (j - i) * mss) & 0xFFFFFFFF
    key = buf[a + 6:a + 8], buf[a + 12:a + 24], buf[a + 28:a + 33], buf[a + 34:a + 36], buf[a + 38:a + hl]
    while j < len(starts):
        b = starts[j]
        pay = lens[j] - hl
        if (pay <= 0 or pay > mss or total + pay > 65535 or buf[b] != 0x45 or buf[b + 9] != 6
                or buf[b + 33] & ~TCP_PSH != 0x10 or _U32.unpack_from(buf, b + 24)[0] != expect
                or (buf[b + 6:b + 8], buf[b + 12:b + 24], buf[b + 28:b + 33], buf[b + 34:b + 36],
                    buf[b + 38:b + hl]) != key):
            break
        total += pay
        j += 1
        if pay < mss or buf[b + 33] & TCP_PSH:
            break
        expect = (expect + mss) & 0xFFFFFFFF
    return j - i


@functools.lru_cache(maxsize=256)
def _column_u32(stride: int, count: int, at: int) -> struct.Struct:
    """Reads the 32-bit big-endian field at offset `at` of `count` records `stride` bytes apart (the
    IPv4 destination of every drained TUN slot) in one unpack_from call."""
    return struct.Struct(f"!{at}x" + f"I{stride - 4}x" * (count - 1) + "I")


@functools.lru_cache(maxsize=256)
def _run_fields(stride: int, count: int, hl: int) -> struct.Struct:
    """Unpacks, from each of `count` packets `stride` bytes apart, the fields a run must repeat (see
    _RUN_FIELDS) and its sequence number: RUN_WIDTH values per packet, in one call."""
    one = f"B5xHxB2x12sI5sB2s2x{hl - 38}s"
    return struct.Struct("!" + f"{one}{stride - hl}x" * (count - 1) + one)


# positions in one packet's values of _run_fields: version/IHL, fragment field, protocol, addresses and
# ports, SEQ, ack and data offset, FLAGS, window, urgent pointer and options
RUN_WIDTH, _SEQ, _FLAGS = 9, 4, 6
_RUN_FIELDS = (0, 1, 2, 3, 5, 7, 8)


def _stride_run(buf: bytearray, a: int, stride: int, m: int, hl: int, mss: int, seq0: int) -> tuple[int, bool]:
    """_tcp_run's rules over m full-sized packets at a, a + stride, ...; the first is a valid run head.

    Returns (packets in the run, whether it must end there). One struct call reads every packet's
    header fields; each field's column (a tuple slice) must repeat the head's value, the flags must be
    a bare ACK (a PSH ends the run with that packet), and the sequence numbers must be the series
    seq0, seq0 + mss, ... The first packet that breaks a rule ends the run before it.
    """
    count = min(m, 1 + (65535 - stride) // mss)  # the merged packet's IP length must fit 16 bits
    stop = count < m
    vals = _run_fields(stride, count, hl).unpack_from(buf, a)
    for f in _RUN_FIELDS:
        col = vals[f::RUN_WIDTH]
        if col.count(col[0]) != count:
            count, stop = next(k for k, v in enumerate(col) if v != col[0]), True
            vals = vals[:count * RUN_WIDTH]
    flags = bytes(vals[_FLAGS::RUN_WIDTH])
    plain = count - len(flags.lstrip(b"\x10"))
    if plain < count:  # a PSH ends the run with that packet; any other flag ends it before
        count, stop = plain + (flags[plain] == (0x10 | TCP_PSH)), True
    seqs = vals[_SEQ:count * RUN_WIDTH:RUN_WIDTH]
    want = tuple((seq0 + k * mss) & 0xFFFFFFFF for k in range(count)) if seq0 + count * mss > 0xFFFFFFFF \
        else tuple(range(seq0, seq0 + count * mss, mss))
    if seqs != want:
        count, stop = next(k for k in range(count) if seqs[k] != want[k]), True
    return count, stop


@functools.lru_cache(maxsize=256)
def _payload_slices(a: int, stride: int, count: int, hl: int, last: int) -> tuple[slice, ...]:
    """The TCP payloads of `count` packets at a, a + stride, ... (the last `last` bytes long)."""
    return (*(slice(o + hl, o + stride) for o in range(a, a + (count - 1) * stride, stride)),
            slice(a + (count - 1) * stride + hl, a + (count - 1) * stride + last))


def coalesce(buf: bytearray, mv: memoryview, n: int, seg: int):  # noqa: ANN201 - generator of writev lists
    """Split a UDP GRO batch (datagrams of `seg` bytes, the last maybe shorter) into TUN writes.

    Runs of one TCP stream become one TSO write (virtio header GSO_TCPV4 + NEEDS_CSUM: the kernel
    treats it like its own GRO output, so the node forwards, and the pod's TCP acks, one 64 KiB packet
    instead of 44); everything else is written packet by packet, marked DATA_VALID.
    Yields (iovec list, packet count, byte count).
    """
    last = (n - 1) // seg * seg  # offset of the last datagram (the only one that may be shorter)
    stride = seg if n - last >= 20 and not buf[0:n:seg].translate(None, _V4_FIRST_BYTES) else 0
    if stride:  # all IPv4 and long enough: offsets follow from the size, no per-packet Python
        starts = list(range(0, n, seg))
        lens = [seg] * (len(starts) - 1) + [n - last]
    else:
        starts, lens = [], []
        off = 0
        while off < n:
            ln = min(seg, n - off)
            if ln >= 20 and buf[off] >> 4 == 4:
                starts.append(off)
                lens.append(ln)
            off += ln
    i = 0
    count = len(starts)
    while i < count:
        run = _tcp_run(buf, starts, lens, i, stride) if i + 1 < count else 1
        a = starts[i]
        if run == 1:
            yield [_VALID_HDR, mv[a:a + lens[i]]], 1, lens[i]
            i += 1
            continue
        hl = 20 + (buf[a + 32] >> 4) * 4
        mss = lens[i] - hl
        if stride:
            payloads = list(map(mv.__getitem__, _payload_slices(a, stride, run, hl, lens[i + run - 1])))
        else:
            payloads = [mv[o + hl:o + ln] for o, ln in zip(starts[i:i + run], lens[i:i + run], strict=True)]
        size = hl + sum(lens[i:i + run]) - run * hl
        h = bytearray(mv[a:a + hl])
        _U16.pack_into(h, 2, size)
        h[10:12] = b"\0\0"
        _U16.pack_into(h, 10, checksum(ones_sum(h[:20])))
        h[33] |= buf[starts[i + run - 1] + 33] & TCP_PSH
        # CHECKSUM_PARTIAL: the field holds the folded pseudo-header sum, the kernel adds the rest.
        _U16.pack_into(h, 36, (ones_sum(h[12:20]) + _PSEUDO_PROTO_TCP + size - 20) % 0xFFFF)
        vnet = VNET.pack(F_NEEDS_CSUM, GSO_TCPV4, hl, mss, 20, 16)
        yield [vnet, h, *payloads], run, size
        i += run
