"""ARP on a raw packet socket: answer who-has for addresses this host announces without holding them, and
send gratuitous ARP when it starts to (what MetalLB's layer 2 announcer does, internal/layer2/arp.go).

The kernel answers ARP only for addresses on its interfaces; a LoadBalancer address is on none (kube-proxy
catches its packets in PREROUTING, before any socket), so a packet socket (AF_PACKET, ETH_P_ARP) bound to the
interface sees the requests and this module writes the replies. Frames are Ethernet + the 28-byte IPv4 ARP
payload (RFC 826); struct does the wire format, there is nothing more to it.
"""

from __future__ import annotations

import ipaddress
import logging
import select
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass

log = logging.getLogger(__name__)

ETH_P_ARP = 0x0806
ETH_P_IP = 0x0800
BROADCAST = b"\xff" * 6
REQUEST, REPLY = 1, 2
PACKET_OUTGOING = 4  # sll_pkttype of a frame this host sent (packet sockets see those too)
_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")


@dataclass(frozen=True)
class Arp:
    op: int
    sender_mac: bytes
    sender_ip: str
    target_mac: bytes
    target_ip: str


def parse(frame: bytes) -> tuple[bytes, Arp] | None:
    """(Ethernet destination, ARP packet) of an Ethernet/IPv4 ARP frame, None for anything else."""
    if len(frame) < _ETH.size + _ARP.size:
        return None
    dst, _src, ethertype = _ETH.unpack_from(frame)
    if ethertype != ETH_P_ARP:
        return None
    htype, ptype, hlen, plen, op, sha, spa, tha, tpa = _ARP.unpack_from(frame, _ETH.size)
    if (htype, ptype, hlen, plen) != (1, ETH_P_IP, 6, 4):
        return None
    return dst, Arp(op, sha, str(ipaddress.IPv4Address(spa)), tha, str(ipaddress.IPv4Address(tpa)))


def build(dst: bytes, src: bytes, pkt: Arp) -> bytes:
    """An Ethernet frame carrying pkt (padded to Ethernet's 60-byte minimum)."""
    frame = _ETH.pack(dst, src, ETH_P_ARP) + _ARP.pack(
        1, ETH_P_IP, 6, 4, pkt.op, pkt.sender_mac, ipaddress.IPv4Address(pkt.sender_ip).packed,
        pkt.target_mac, ipaddress.IPv4Address(pkt.target_ip).packed)
    return frame.ljust(60, b"\0")


def reply_to(request: Arp, mac: bytes) -> Arp:
    """"target_ip is at mac", to the asker."""
    return Arp(REPLY, mac, request.target_ip, request.sender_mac, request.sender_ip)


def gratuitous(ip: str, mac: bytes) -> list[Arp]:
    """A gratuitous request and reply for ip (MetalLB sends both): neighbours update their caches."""
    return [Arp(op, mac, ip, BROADCAST if op == REPLY else b"\0" * 6, ip) for op in (REQUEST, REPLY)]


def should_answer(dst: bytes, pkt: Arp, mac: bytes, announced: set[str]) -> bool:
    """MetalLB's rules: requests only, sent to broadcast or to us, for an address we announce."""
    return pkt.op == REQUEST and dst in (BROADCAST, mac) and pkt.target_ip in announced


class Responder:
    """Answers ARP on one interface for the addresses announced() returns, from a daemon thread."""

    def __init__(self, ifname: str, announced: Callable[[], set[str]]) -> None:
        self.ifname = ifname
        self.announced = announced
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ARP))
        try:
            self.sock.bind((ifname, ETH_P_ARP))
            self.mac: bytes = self.sock.getsockname()[4]
        except OSError:
            self.sock.close()
            raise
        self.replies = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"arp-{ifname}", daemon=True)

    def start(self) -> Responder:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self.sock], [], [], 0.5)
            if not ready:
                continue
            try:
                frame, addr = self.sock.recvfrom(2048)
            except OSError:
                if self._stop.is_set():
                    return
                continue
            if len(addr) > 2 and addr[2] == PACKET_OUTGOING:
                continue
            parsed = parse(frame)
            if parsed is None:
                continue
            dst, pkt = parsed
            if should_answer(dst, pkt, self.mac, self.announced()):
                try:
                    self.sock.send(build(pkt.sender_mac, self.mac, reply_to(pkt, self.mac)))
                    self.replies += 1
                    log.debug("who-has %s tell %s: is-at %s", pkt.target_ip, pkt.sender_ip, self.mac.hex(":"))
                except OSError as e:
                    log.warning("ARP reply for %s: %s", pkt.target_ip, e)

    def gratuitous(self, ip: str) -> None:
        for pkt in gratuitous(ip, self.mac):
            try:
                self.sock.send(build(BROADCAST, self.mac, pkt))
            except OSError as e:
                log.warning("gratuitous ARP for %s: %s", ip, e)

    def close(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout=2)
        self.sock.close()
