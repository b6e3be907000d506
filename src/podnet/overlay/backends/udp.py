"""flannel's udp backend: TUN device flannel0, UDP port 8285, the raw IP packet as the UDP payload.

The kernel routes the whole flannel network into flannel0 (`<Network> dev flannel0`); the forwarder
(udp_forward.py) picks the peer by destination subnet and sends the packet to `<peer PublicIP>:<Port>`.
MTU = interface MTU - 28 (outer IPv4 20 + UDP 8). No BackendData: peers only need PublicIP.

The TUN is made persistent so a restarted daemon re-attaches to the same device: its address and
routes stay, packets are only held up while no process reads it.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import socket
import threading
from collections.abc import Mapping
from typing import Any

from podnet.net import addr, iface, routes, tun
from podnet.net.iface import ExternalInterface
from podnet.net.netns import NetlinkUser
from podnet.overlay.backends.base import BackendData, BackendError, LeaseLike, option_int
from podnet.overlay.backends.udp_forward import Forwarder, udp_gso_supported

log = logging.getLogger(__name__)

DEVICE = "flannel0"
DEFAULT_PORT = 8285
ENCAP_OVERHEAD = 28
SOCKET_BUFFER = 4 << 20  # absorbs bursts while the GIL is with the other direction


def _icmp_source(own: ipaddress.IPv4Network, network: ipaddress.IPv4Network) -> ipaddress.IPv4Address | None:
    """Source of our ICMP errors. Not one of the node's own addresses: the kernel drops a packet that
    comes in through flannel0 claiming a local source (martian). The flannel Network's first address
    is owned by no node (flannel never hands out the first subnet by default)."""
    src = network.network_address
    return None if src in own else src


class UdpBackend(NetlinkUser):
    backend_type = "udp"
    backend_v6_data: BackendData = None  # IPv4 only

    def __init__(self, ext: ExternalInterface, *, port: int = DEFAULT_PORT, mtu: int | None = None,
                 netns: str | None = None, offload: bool | None = None) -> None:
        if not 0 < port < 65536:
            raise BackendError(f"Backend.Port: {port!r}: must be 1..65535")
        self.ext = ext
        self.port = port
        self._mtu = (mtu or ext.mtu) - ENCAP_OVERHEAD
        if self._mtu < 68:
            raise BackendError(f"Backend.MTU: {mtu or ext.mtu!r}: leaves {self._mtu} for pods, below IPv4's 68")
        self.netns = netns
        # Batching needs UDP GSO/GRO (Linux >= 5.0); without it the one-packet-per-syscall loops run.
        self.offload = udp_gso_supported() if offload is None else offload
        self._lock = threading.Lock()
        self.tun_fd: int | None = None
        self.sock: socket.socket | None = None
        self.forwarder: Forwarder | None = None
        self._index: int | None = None
        self._network: ipaddress.IPv4Network | None = None
        self._pending: dict[ipaddress.IPv4Network, ipaddress.IPv4Address] = {}

    @classmethod
    def from_options(cls, ext: ExternalInterface, opts: Mapping[str, Any], *, netns: str | None = None,
                     ipv4: bool = True, ipv6: bool = False) -> UdpBackend:
        if ipv6 or not ipv4:
            raise BackendError("udp: the udp backend is IPv4 only, as flannel's (net-conf EnableIPv6 needs vxlan "
                               "or host-gw)")
        # "Offload" is podnet's own knob (flannel has none): false forces one packet per syscall.
        offload = opts.get("offload")
        return cls(ext, port=option_int(opts, "Port", DEFAULT_PORT), mtu=option_int(opts, "MTU", 0) or None,
                   netns=netns, offload=None if offload is None else bool(offload))

    @property
    def mtu(self) -> int:
        return self._mtu

    def _open(self) -> tuple[int, socket.socket]:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            for opt in (socket.SO_RCVBUF, socket.SO_SNDBUF):
                sock.setsockopt(socket.SOL_SOCKET, opt, SOCKET_BUFFER)
            sock.bind((str(self.ext.address), self.port))
            fd = tun.open_tun(DEVICE, vnet_hdr=self.offload)
        except BaseException:
            sock.close()
            raise
        try:
            if self.offload:
                tun.set_offload(fd, 0)  # kernel segments and checksums; see udp_forward.py
            tun.set_persist(fd)
        except BaseException:
            os.close(fd)
            sock.close()
            raise
        return fd, sock

    def register(self) -> BackendData:
        try:
            self.tun_fd, self.sock = tun.in_netns(self.netns, self._open)
        except OSError as exc:
            raise BackendError(f"udp: cannot open {DEVICE} / bind {self.ext.address}:{self.port}: {exc}") from exc
        index = iface.index_of(self.ipr, DEVICE)
        if index is None:
            raise BackendError(f"udp: {DEVICE} vanished right after it was opened")
        self._index = index
        iface.set_up(self.ipr, index, mtu=self._mtu)
        return None

    def configure(self, own: LeaseLike, network: ipaddress.IPv4Network | None,
                  network_v6: ipaddress.IPv6Network | None = None) -> None:
        if network is None:
            raise BackendError("udp: the udp backend needs an IPv4 Network")
        if self._index is None or self.tun_fd is None or self.sock is None:
            raise BackendError("udp: configure() called before register()")
        self._network = network
        with self._lock:
            addr.ensure_only(self.ipr, self._index, ipaddress.IPv4Interface(f"{own.subnet.network_address}/32"),
                             within=network)
            routes.replace(self.ipr, network, oif=self._index)
            self.forwarder = Forwarder(self.tun_fd, self.sock, own.subnet.prefixlen, offload=self.offload,
                                       max_packet=self._mtu, own_ip=_icmp_source(own.subnet, network))
            for subnet, ip in self._pending.items():
                self.forwarder.set_peer(subnet, ip, self.port)
            self._pending.clear()
        self.forwarder.start()

    def add_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            log.info("udp: ignoring peer %s: backend type %r", lease.subnet, lease.backend_type)
            return
        with self._lock:
            if self.forwarder is None:
                self._pending[lease.subnet] = lease.public_ip
                return
            try:
                self.forwarder.set_peer(lease.subnet, lease.public_ip, self.port)
            except ValueError as exc:
                log.error("udp: peer %s (public IP %s): %s", lease.subnet, lease.public_ip, exc)

    def remove_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            return
        with self._lock:
            self._pending.pop(lease.subnet, None)
            if self.forwarder is not None:
                self.forwarder.del_peer(lease.subnet)

    def resync(self) -> None:
        """Put back the whole-network route through flannel0 if someone removed it."""
        if self._network is None or self._index is None:
            return
        with self._lock:
            try:
                routes.replace(self.ipr, self._network, oif=self._index)
            except Exception as exc:
                log.error("udp: resync route %s: %s", self._network, exc)

    def close(self) -> None:
        if self.forwarder is not None:
            self.forwarder.stop()
            self.forwarder = None
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        if self.tun_fd is not None:
            os.close(self.tun_fd)
            self.tun_fd = None
        self._close_ipr()
