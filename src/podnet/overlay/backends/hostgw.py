"""flannel's host-gw backend: no device, no encapsulation; `<peer subnet> via <peer PublicIP>`.

It only works when every peer's PublicIP is directly reachable on the underlay (same L2): the
route's gateway must be on-link. A peer that is not gets no route and an error naming it, because a
route via an off-link gateway is refused by the kernel (or, worse, would bounce through a router that
knows nothing of pod subnets).
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from typing import Any

from podnet.net import routes
from podnet.net.iface import ExternalInterface
from podnet.net.netns import NetlinkUser
from podnet.overlay.backends.base import BackendData, BackendError, LeaseLike

log = logging.getLogger(__name__)


class PeerNotOnLink(BackendError):
    """host-gw cannot reach a peer's PublicIP without a router in between."""


class HostGwBackend(NetlinkUser):
    backend_type = "host-gw"

    def __init__(self, ext: ExternalInterface, *, netns: str | None = None) -> None:
        self.ext = ext
        self.netns = netns
        self._lock = threading.Lock()
        self._peers: dict[ipaddress.IPv4Network, ipaddress.IPv4Address] = {}
        self.errors: dict[ipaddress.IPv4Network, str] = {}  # last error per peer, for status/tests

    @classmethod
    def from_options(cls, ext: ExternalInterface, opts: Mapping[str, Any], *, netns: str | None = None
                     ) -> HostGwBackend:
        return cls(ext, netns=netns)

    @property
    def mtu(self) -> int:
        return self.ext.mtu

    def register(self) -> BackendData:
        if self.ext.public_ip != self.ext.address:
            raise BackendError(
                f"--public-ip: {str(self.ext.public_ip)!r}: differs from {self.ext.name}'s address "
                f"{self.ext.address}; host-gw cannot work behind NAT"
            )
        return None

    def configure(self, own: LeaseLike, network: ipaddress.IPv4Network) -> None:
        return None

    def _check_on_link(self, lease: LeaseLike) -> None:
        route = routes.get(self.ipr, lease.public_ip)
        if route is None:
            raise PeerNotOnLink(
                f"host-gw: peer {lease.subnet} (public IP {lease.public_ip}): no route to it; "
                f"host-gw needs every node on the same L2 network (use vxlan otherwise)"
            )
        if route.gateway is not None or route.oif != self.ext.index:
            how = f"via router {route.gateway}" if route.gateway else f"through interface index {route.oif}"
            raise PeerNotOnLink(
                f"host-gw: peer {lease.subnet} (public IP {lease.public_ip}) is reached {how}, not "
                f"directly on {self.ext.name}; host-gw needs every node on the same L2 network "
                f"(use vxlan otherwise)"
            )

    def add_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            log.info("host-gw: ignoring peer %s: backend type %r", lease.subnet, lease.backend_type)
            return
        with self._lock:
            try:
                self._check_on_link(lease)
                old = self._peers.get(lease.subnet)
                if old is not None and old != lease.public_ip:
                    routes.delete(self.ipr, lease.subnet, gateway=old)
                routes.replace(self.ipr, lease.subnet, gateway=lease.public_ip, oif=self.ext.index)
            except Exception as exc:
                self.errors[lease.subnet] = str(exc)
                log.error("%s", exc)
                return
            self.errors.pop(lease.subnet, None)
            self._peers[lease.subnet] = lease.public_ip

    def remove_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            return
        with self._lock:
            gw = self._peers.pop(lease.subnet, lease.public_ip)
            self.errors.pop(lease.subnet, None)
            try:
                routes.delete(self.ipr, lease.subnet, gateway=gw, oif=self.ext.index)
            except Exception as exc:
                log.error("host-gw: removing peer %s: %s", lease.subnet, exc)

    def resync(self) -> None:
        """Put back routes someone deleted or changed (flannel checks every 10 s). One dump; nothing
        is written when every route is in place."""
        with self._lock:
            have = {(r.dst, r.gateway, r.oif) for r in routes.list_routes(self.ipr)}
            for subnet, gw in list(self._peers.items()):
                if (subnet, gw, self.ext.index) in have:
                    continue
                log.info("host-gw: restoring route %s via %s", subnet, gw)
                try:
                    routes.replace(self.ipr, subnet, gateway=gw, oif=self.ext.index)
                except Exception as exc:
                    log.error("host-gw: resync peer %s: %s", subnet, exc)

    def close(self) -> None:
        with self._lock:
            self._close_ipr()
