"""flannel's vxlan backend: one VXLAN device flannel.<VNI>; per peer a neighbour, an FDB entry, a route.

Per remote lease, in flannel's order (so the kernel never has to ARP for a VTEP or flood a frame):
  1. neighbour  <peer subnet>.0 lladdr <VtepMAC> dev flannel.<VNI> nud permanent
  2. FDB        <VtepMAC> dev flannel.<VNI> dst <peer PublicIP> self permanent
  3. route      <peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink
Removal goes in reverse (route first, so no packet is routed to a half-removed VTEP).
With DirectRouting a peer whose PublicIP is on-link (same L2) gets `<subnet> via <PublicIP>` instead.
"""

from __future__ import annotations

import ipaddress
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from podnet.net import addr, iface, neigh, routes
from podnet.net import vxlan as vxdev
from podnet.net.iface import ExternalInterface
from podnet.net.netns import NetlinkUser
from podnet.overlay.backends.base import BackendData, BackendError, LeaseLike, option_int

log = logging.getLogger(__name__)

ENCAP_OVERHEAD = 50  # outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14


@dataclass(frozen=True, slots=True)
class Encap:
    """What we programmed for one peer subnet through the VXLAN device."""

    mac: str
    public_ip: ipaddress.IPv4Address


@dataclass(frozen=True, slots=True)
class Direct:
    """DirectRouting: the peer is on our L2, plain route via its PublicIP."""

    public_ip: ipaddress.IPv4Address


class VxlanBackend(NetlinkUser):
    backend_type = "vxlan"

    def __init__(
        self, ext: ExternalInterface, *, vni: int = 1, port: int = vxdev.DEFAULT_PORT,
        direct_routing: bool = False, mtu: int | None = None, learning: bool = False, gbp: bool = False,
        netns: str | None = None,
    ) -> None:
        if not 0 < vni < 1 << 24:
            raise BackendError(f"Backend.VNI: {vni!r}: must be 1..16777215")
        if not 0 < port < 65536:
            raise BackendError(f"Backend.Port: {port!r}: must be 1..65535")
        self.ext = ext
        self.vni = vni
        self.port = port
        self.direct_routing = direct_routing
        self._mtu = (mtu or ext.mtu) - ENCAP_OVERHEAD
        if self._mtu < 68:
            raise BackendError(f"Backend.MTU: {mtu or ext.mtu!r}: leaves {self._mtu} for pods, below IPv4's 68")
        self.learning = learning
        self.gbp = gbp
        self.device_name = f"flannel.{vni}"
        self.netns = netns
        self._lock = threading.Lock()
        self._index: int | None = None
        self.mac: str | None = None
        self._peers: dict[ipaddress.IPv4Network, Encap | Direct] = {}
        self._spec: vxdev.VxlanSpec | None = None
        self._own_addr: ipaddress.IPv4Interface | None = None
        self._network: ipaddress.IPv4Network | None = None

    @classmethod
    def from_options(cls, ext: ExternalInterface, opts: Mapping[str, Any], *, netns: str | None = None
                     ) -> VxlanBackend:
        """Build from the net-conf Backend object (keys already lower-cased)."""
        return cls(
            ext, vni=option_int(opts, "VNI", 1), port=option_int(opts, "Port", vxdev.DEFAULT_PORT),
            direct_routing=bool(opts.get("directrouting", False)),
            mtu=option_int(opts, "MTU", 0) or None, learning=bool(opts.get("learning", False)),
            gbp=bool(opts.get("gbp", False)), netns=netns,
        )

    @property
    def mtu(self) -> int:
        return self._mtu

    # -- own side ---------------------------------------------------------------------------------

    def register(self) -> BackendData:
        spec = vxdev.VxlanSpec(
            name=self.device_name, vni=self.vni, link_index=self.ext.index, local=self.ext.address,
            port=self.port, learning=self.learning, gbp=self.gbp, mtu=self._mtu,
        )
        with self._lock:
            try:
                dev = vxdev.ensure(self.ipr, spec)
            except Exception as exc:
                raise BackendError(str(exc)) from exc
        self._spec = spec
        self._index, self.mac = dev.index, dev.mac
        log.info("vxlan: %s %s (index %d, mac %s, mtu %d)", "reusing" if dev.reused else "created",
                 self.device_name, dev.index, dev.mac, self._mtu)
        return {"VNI": self.vni, "VtepMAC": dev.mac}

    def configure(self, own: LeaseLike, network: ipaddress.IPv4Network) -> None:
        """The device holds <own subnet>.0/32, nothing else of the flannel network."""
        if self._index is None:
            raise BackendError("vxlan: configure() called before register()")
        want = ipaddress.IPv4Interface(f"{own.subnet.network_address}/32")
        with self._lock:
            addr.ensure_only(self.ipr, self._index, want, within=network)
        self._own_addr, self._network = want, network

    # -- peers -----------------------------------------------------------------------------------

    def _desired(self, lease: LeaseLike) -> Encap | Direct | None:
        if self.direct_routing and self._on_link(lease.public_ip):
            return Direct(lease.public_ip)
        data = lease.backend_data or {}
        mac = data.get("VtepMAC") if isinstance(data, dict) else None
        if not isinstance(mac, str) or not mac:
            log.error("vxlan: peer %s (public IP %s): lease has no BackendData.VtepMAC; skipped",
                      lease.subnet, lease.public_ip)
            return None
        return Encap(mac.lower(), lease.public_ip)

    def _on_link(self, ip: ipaddress.IPv4Address) -> bool:
        """flannel's test: `ip route get` gives a route with no gateway (same L2 subnet)."""
        route = routes.get(self.ipr, ip)
        return route is not None and route.gateway is None

    def add_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            log.info("vxlan: ignoring peer %s: backend type %r", lease.subnet, lease.backend_type)
            return
        if self._index is None:
            raise BackendError("vxlan: add_remote() called before register()")
        with self._lock:
            want = self._desired(lease)
            if want is None:
                return
            old = self._peers.get(lease.subnet)
            if old is not None and old != want:
                self._unprogram(lease.subnet, old)
            try:
                self._program(lease.subnet, want)
            except Exception as exc:  # one bad peer must not stop the others
                log.error("vxlan: peer %s (public IP %s): %s", lease.subnet, lease.public_ip, exc)
                self._peers.pop(lease.subnet, None)
                return
            self._peers[lease.subnet] = want

    def _program(self, subnet: ipaddress.IPv4Network, want: Encap | Direct) -> None:
        assert self._index is not None
        if isinstance(want, Direct):
            routes.replace(self.ipr, subnet, gateway=want.public_ip)
            return
        vtep = subnet.network_address
        neigh.neigh_replace(self.ipr, self._index, vtep, want.mac)
        try:
            neigh.fdb_replace(self.ipr, self._index, want.mac, want.public_ip)
        except Exception:
            neigh.neigh_delete(self.ipr, self._index, vtep)
            raise
        try:
            routes.replace(self.ipr, subnet, gateway=vtep, oif=self._index, onlink=True)
        except Exception:
            neigh.fdb_delete(self.ipr, self._index, want.mac, want.public_ip)
            neigh.neigh_delete(self.ipr, self._index, vtep)
            raise

    def _unprogram(self, subnet: ipaddress.IPv4Network, old: Encap | Direct) -> None:
        assert self._index is not None
        try:
            if isinstance(old, Direct):
                routes.delete(self.ipr, subnet, gateway=old.public_ip)
                return
            routes.delete(self.ipr, subnet, gateway=subnet.network_address, oif=self._index)
            neigh.fdb_delete(self.ipr, self._index, old.mac, old.public_ip)
            neigh.neigh_delete(self.ipr, self._index, subnet.network_address)
        except Exception as exc:  # removal errors are logged, as flannel does; never fatal
            log.error("vxlan: removing peer %s: %s", subnet, exc)

    def remove_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type or self._index is None:
            return
        with self._lock:
            old = self._peers.pop(lease.subnet, None)
            if old is None:
                old = self._desired(lease)
            if old is not None:
                self._unprogram(lease.subnet, old)

    def resync(self) -> None:
        """Recreate the device if someone deleted it (same MAC, so peers' FDB entries stay right) and
        put back any route, neighbour or FDB entry of a known peer that went missing. Three dumps;
        nothing is written when everything is in place."""
        if self._spec is None or self._index is None:
            return
        with self._lock:
            found = iface.index_of(self.ipr, self.device_name)
            if found != self._index:
                log.warning("vxlan: %s vanished; recreating it with MAC %s", self.device_name, self.mac)
                try:
                    dev = vxdev.ensure(self.ipr, self._spec, mac=self.mac)
                    self._index = dev.index
                    if self._own_addr is not None:
                        addr.ensure_only(self.ipr, dev.index, self._own_addr, within=self._network)
                except Exception as exc:
                    log.error("vxlan: recreating %s: %s", self.device_name, exc)
                    return
            if found == self._index:
                snap = self._snapshot()
                missing = [(sn, w) for sn, w in self._peers.items() if not self._present(snap, sn, w)]
            else:
                missing = list(self._peers.items())
            for subnet, want in missing:
                log.info("vxlan: restoring entries of peer %s", subnet)
                try:
                    self._program(subnet, want)
                except Exception as exc:
                    log.error("vxlan: resync peer %s: %s", subnet, exc)

    def _snapshot(self) -> tuple[list[routes.Route], set[tuple[ipaddress.IPv4Address, str]],
                                 set[tuple[str, ipaddress.IPv4Address | None]]]:
        assert self._index is not None
        return (routes.list_routes(self.ipr),
                {(n.ip, n.mac) for n in neigh.neigh_list(self.ipr, self._index)},
                {(f.mac, f.dst) for f in neigh.fdb_list(self.ipr, self._index)})

    def _present(self, snap, subnet: ipaddress.IPv4Network, want: Encap | Direct) -> bool:  # noqa: ANN001
        all_routes, neighs, fdb = snap
        have = [r for r in all_routes if r.dst == subnet]
        if isinstance(want, Direct):
            return any(r.gateway == want.public_ip for r in have)
        vtep = subnet.network_address
        return (any(r.gateway == vtep and r.oif == self._index and r.onlink for r in have)
                and (vtep, want.mac) in neighs and (want.mac, want.public_ip) in fdb)

    def close(self) -> None:
        with self._lock:
            self._close_ipr()
