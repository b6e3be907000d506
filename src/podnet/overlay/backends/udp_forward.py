"""The udp backend's data plane: IP packets from the TUN go out as UDP payloads to the peer that owns
the destination subnet; UDP payloads that arrive go into the TUN unchanged (flannel's wire format).

Why it is shaped like this (Python costs about a microsecond per bytecode-heavy line, so the per-packet
path is a handful of operations):
- one thread per direction; every syscall releases the GIL, so a read in one direction overlaps the
  Python work of the other;
- non-blocking descriptors drained in a tight loop, poll() only when a queue is empty (a busy link costs
  no poll per packet) and on a wake pipe so stop() returns at once;
- one preallocated buffer per direction, packets passed on as memoryview slices: no copy in Python;
- the peer table maps `destination >> (32 - SubnetLen)` to a ready (ip, port) tuple: one dict lookup,
  and it is replaced as a whole on changes so the loops never see a half-updated table.
flannel's C proxy also decrements the TTL in both directions; we leave that to the kernel's own
forwarding hops (node in, node out), which already bounds loops.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import select
import socket
import struct
import threading

log = logging.getLogger(__name__)

_DST = struct.Struct("!I")
BUF_SIZE = 65535


class Forwarder:
    def __init__(self, tun_fd: int, sock: socket.socket, subnet_len: int) -> None:
        if not 0 < subnet_len <= 32:
            raise ValueError(f"SubnetLen: {subnet_len!r}: must be 1..32")
        self.tun_fd = tun_fd
        self.sock = sock
        self.shift = 32 - subnet_len
        self._table: dict[int, tuple[str, int]] = {}
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._stopping = False
        self._wake_r, self._wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # counters (read by metrics/tests; written by one thread each, so no lock needed)
        self.tx_packets = self.tx_bytes = self.tx_no_route = self.tx_errors = 0
        self.rx_packets = self.rx_bytes = self.rx_errors = 0

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

    # -- lifecycle -------------------------------------------------------------------------------

    def start(self) -> None:
        if self._threads:
            return
        self.sock.setblocking(False)
        os.set_blocking(self.tun_fd, False)
        for name, fn in (("udp-tx", self._tun_to_udp), ("udp-rx", self._udp_to_tun)):
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

    # -- the two loops ---------------------------------------------------------------------------

    def _tun_to_udp(self) -> None:
        buf = bytearray(BUF_SIZE)
        mv = memoryview(buf)
        bufs = [buf]
        readv = os.readv
        sendto = self.sock.sendto
        dst_of = _DST.unpack_from
        shift = self.shift
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
            peer = self._table.get(dst_of(buf, 16)[0] >> shift)
            if peer is None:
                no_route += 1
                continue
            try:
                sendto(mv[:n], peer)
            except BlockingIOError:
                errors += 1  # socket buffer full: drop, as a NIC queue would
            except OSError:
                errors += 1
                continue
            packets += 1
            nbytes += n
        self.tx_packets, self.tx_bytes, self.tx_no_route, self.tx_errors = packets, nbytes, no_route, errors

    def _udp_to_tun(self) -> None:
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
