"""flannel's host-gw backend: no device, no encapsulation; `<peer subnet> via <peer PublicIP>`.

With an IPv6 pod network (net-conf EnableIPv6) each peer's IPv6Subnet is routed via its PublicIPv6 the
same way; a peer lease without an IPv6 subnet or PublicIPv6 gets no IPv6 route.

It only works when every peer's public address is directly reachable on the underlay (same L2): the
route's gateway must be on-link. A peer that is not gets no route and an error naming it, because a
route via an off-link gateway is refused by the kernel (or, worse, would bounce through a router that
knows nothing of pod subnets).
"""

from __future__ import annotations

import ipaddress
import logging
import socket
import threading
from collections.abc import Mapping
from typing import Any

from podnet.net import routes
from podnet.net.iface import ExternalInterface
from podnet.net.netns import NetlinkUser
from podnet.overlay.backends.base import BackendData, BackendError, LeaseLike

log = logging.getLogger(__name__)

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class PeerNotOnLink(BackendError):
    """host-gw cannot reach a peer's PublicIP without a router in between."""


def plan_routes(lease: LeaseLike, *, ipv4: bool = True, ipv6: bool = False) -> list[tuple[Network, Address]]:
    """(destination, gateway) of every route a peer lease needs (pure): its IPv4 subnet via PublicIP,
    its IPv6 subnet via PublicIPv6, for the families this node runs."""
    out: list[tuple[Network, Address]] = []
    if ipv4 and lease.subnet.prefixlen > 0:
        out.append((lease.subnet, lease.public_ip))
    sn6, pub6 = getattr(lease, "subnet_v6", None), getattr(lease, "public_ipv6", None)
    if ipv6 and sn6 is not None and pub6 is not None:
        out.append((sn6, pub6))
    return out


class HostGwBackend(NetlinkUser):
    backend_type = "host-gw"

    def __init__(self, ext: ExternalInterface, *, netns: str | None = None, ipv4: bool = True,
                 ipv6: bool = False) -> None:
        self.ext = ext
        self.netns = netns
        self.ipv4 = ipv4
        self.ipv6 = ipv6
        self._lock = threading.Lock()
        self._peers: dict[Network, Address] = {}
        self.errors: dict[Network, str] = {}  # last error per peer subnet, for status/tests
        self.backend_v6_data: BackendData = None

    @classmethod
    def from_options(cls, ext: ExternalInterface, opts: Mapping[str, Any], *, netns: str | None = None,
                     ipv4: bool = True, ipv6: bool = False) -> HostGwBackend:
        return cls(ext, netns=netns, ipv4=ipv4, ipv6=ipv6)

    @property
    def mtu(self) -> int:
        return self.ext.mtu

    def register(self) -> BackendData:
        if self.ipv4 and self.ext.public_ip != self.ext.address:
            raise BackendError(
                f"--public-ip: {str(self.ext.public_ip)!r}: differs from {self.ext.name}'s address "
                f"{self.ext.address}; host-gw cannot work behind NAT"
            )
        if self.ipv6 and self.ext.public_ipv6 != self.ext.address6:
            raise BackendError(
                f"--public-ipv6: {str(self.ext.public_ipv6)!r}: differs from {self.ext.name}'s address "
                f"{self.ext.address6}; host-gw cannot work behind NAT"
            )
        return None

    def configure(self, own: LeaseLike, network: Network | None, network_v6: Network | None = None) -> None:
        return None

    def _check_on_link(self, subnet: Network, gw: Address) -> None:
        route = routes.get(self.ipr, gw)
        if route is None:
            raise PeerNotOnLink(
                f"host-gw: peer {subnet} (public IP {gw}): no route to it; "
                f"host-gw needs every node on the same L2 network (use vxlan otherwise)"
            )
        if route.gateway is not None or route.oif != self.ext.index:
            how = f"via router {route.gateway}" if route.gateway else f"through interface index {route.oif}"
            raise PeerNotOnLink(
                f"host-gw: peer {subnet} (public IP {gw}) is reached {how}, not "
                f"directly on {self.ext.name}; host-gw needs every node on the same L2 network "
                f"(use vxlan otherwise)"
            )

    def add_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            log.info("host-gw: ignoring peer %s: backend type %r", lease.subnet, lease.backend_type)
            return
        with self._lock:
            for subnet, gw in plan_routes(lease, ipv4=self.ipv4, ipv6=self.ipv6):
                try:
                    self._check_on_link(subnet, gw)
                    old = self._peers.get(subnet)
                    if old is not None and old != gw:
                        routes.delete(self.ipr, subnet, gateway=old)
                    routes.replace(self.ipr, subnet, gateway=gw, oif=self.ext.index)
                except Exception as exc:
                    self.errors[subnet] = str(exc)
                    log.error("%s", exc)
                    continue
                self.errors.pop(subnet, None)
                self._peers[subnet] = gw

    def remove_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            return
        with self._lock:
            for subnet, gw_given in plan_routes(lease, ipv4=self.ipv4, ipv6=self.ipv6):
                gw = self._peers.pop(subnet, gw_given)
                self.errors.pop(subnet, None)
                try:
                    routes.delete(self.ipr, subnet, gateway=gw, oif=self.ext.index)
                except Exception as exc:
                    log.error("host-gw: removing peer %s: %s", subnet, exc)

    def resync(self) -> None:
        """Put back routes someone deleted or changed (flannel checks every 10 s). One dump per family;
        nothing is written when every route is in place."""
        with self._lock:
            have: set[tuple[Network, Address | None, int | None]] = set()
            families = [socket.AF_INET] if self.ipv4 else []
            families += [socket.AF_INET6] if self.ipv6 else []
            for fam in families:
                have |= {(r.dst, r.gateway, r.oif) for r in routes.list_routes(self.ipr, family=fam)}
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
