"""flannel's vxlan backend: a VXLAN device per pod-network family; per peer a neighbour, an FDB entry, a route.

IPv4 uses `flannel.<VNI>` over the IPv4 underlay (local = the interface's IPv4 address); IPv6 (net-conf
EnableIPv6) uses `flannel-v6.<VNI>` over the IPv6 underlay (local = its global IPv6 address), with its own
MAC published as the lease's BackendV6Data. A dual-stack node has both; an IPv6-only node only the second.

Per remote lease and family, in flannel's order (so the kernel never has to resolve a VTEP or flood a frame):
  1. neighbour  <peer subnet>.0 lladdr <VtepMAC> dev flannel.<VNI> nud permanent    (IPv6: <subnet>:: ND entry)
  2. FDB        <VtepMAC> dev flannel.<VNI> dst <peer PublicIP> self permanent       (IPv6: dst PublicIPv6)
  3. route      <peer subnet> via <peer subnet>.0 dev flannel.<VNI> onlink
Removal goes in reverse (route first, so no packet is routed to a half-removed VTEP).
With DirectRouting a peer whose public address is on-link (same L2) gets `<subnet> via <PublicIP>` instead.
A peer lease without an IPv6 subnet (a node of an IPv4-only config in a mixed cluster) gets no IPv6 entries.
"""

from __future__ import annotations

import ipaddress
import logging
import socket
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
ENCAP_OVERHEAD_V6 = 70  # the outer IPv6 header is 40 bytes, not 20

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Encap:
    """What we programmed for one peer subnet through a VXLAN device."""

    mac: str
    public_ip: Address


@dataclass(frozen=True, slots=True)
class Direct:
    """DirectRouting: the peer is on our L2, plain route via its public address."""

    public_ip: Address


@dataclass(frozen=True, slots=True)
class PeerPlan:
    """One family's entries for one peer (pure: `plan_peer`)."""

    subnet: Network
    want: Encap | Direct


def vtep_address(subnet: Network) -> Address:
    """The peer VTEP's address: the subnet's first address (10.244.2.0, fd00:10:244:2::)."""
    return subnet.network_address


def plan_peer(subnet: Network | None, public: Address | None, data: BackendData, *,
              direct: bool = False) -> PeerPlan | None:
    """What to program for a peer in one family, or None when the lease lacks that family (no subnet,
    no public address) or its VtepMAC. `direct` = DirectRouting and the peer is on-link."""
    if subnet is None or public is None:
        return None
    if direct:
        return PeerPlan(subnet, Direct(public))
    mac = data.get("VtepMAC") if isinstance(data, dict) else None
    if not isinstance(mac, str) or not mac:
        return None
    return PeerPlan(subnet, Encap(mac.lower(), public))


class _Vtep:
    """One VXLAN device (one family) and the peers programmed through it. Callers hold the lock."""

    def __init__(self, owner: VxlanBackend, family: int, name: str, local: Address, mtu: int) -> None:
        self.owner = owner
        self.family = family
        self.name = name
        self.local = local
        self.mtu = mtu
        self.index: int | None = None
        self.mac: str | None = None
        self.spec: vxdev.VxlanSpec | None = None
        self.own_addr: ipaddress.IPv4Interface | ipaddress.IPv6Interface | None = None
        self.network: Network | None = None
        self.peers: dict[Network, Encap | Direct] = {}

    @property
    def ipr(self) -> Any:
        return self.owner.ipr

    def register(self) -> BackendData:
        o = self.owner
        spec = vxdev.VxlanSpec(name=self.name, vni=o.vni, link_index=o.ext.index, local=self.local, port=o.port,
                               learning=o.learning, gbp=o.gbp, mtu=self.mtu)
        try:
            dev = vxdev.ensure(self.ipr, spec)
        except Exception as exc:
            raise BackendError(str(exc)) from exc
        if self.family == 6:
            _no_ra(o.netns, self.name)
        self.spec, self.index, self.mac = spec, dev.index, dev.mac
        log.info("vxlan: %s %s (index %d, mac %s, local %s, mtu %d)", "reusing" if dev.reused else "created",
                 self.name, dev.index, dev.mac, self.local, self.mtu)
        return {"VNI": o.vni, "VtepMAC": dev.mac}

    def configure(self, subnet: Network, network: Network | None) -> None:
        """The device holds <own subnet>.0/32 (IPv6: <subnet>::/128), nothing else of the flannel network."""
        assert self.index is not None
        plen = 32 if self.family == 4 else 128
        want = ipaddress.ip_interface(f"{subnet.network_address}/{plen}")
        addr.ensure_only(self.ipr, self.index, want, within=network)
        self.own_addr, self.network = want, network

    def add(self, plan: PeerPlan) -> None:
        old = self.peers.get(plan.subnet)
        if old is not None and old != plan.want:
            self.unprogram(plan.subnet, old)
        try:
            self.program(plan.subnet, plan.want)
        except Exception as exc:  # one bad peer must not stop the others
            log.error("vxlan: peer %s (public IP %s): %s", plan.subnet, plan.want.public_ip, exc)
            self.peers.pop(plan.subnet, None)
            return
        self.peers[plan.subnet] = plan.want

    def program(self, subnet: Network, want: Encap | Direct) -> None:
        assert self.index is not None
        if isinstance(want, Direct):
            routes.replace(self.ipr, subnet, gateway=want.public_ip)
            return
        vtep = vtep_address(subnet)
        neigh.neigh_replace(self.ipr, self.index, vtep, want.mac)
        try:
            neigh.fdb_replace(self.ipr, self.index, want.mac, want.public_ip)
        except Exception:
            neigh.neigh_delete(self.ipr, self.index, vtep)
            raise
        try:
            routes.replace(self.ipr, subnet, gateway=vtep, oif=self.index, onlink=True)
        except Exception:
            neigh.fdb_delete(self.ipr, self.index, want.mac, want.public_ip)
            neigh.neigh_delete(self.ipr, self.index, vtep)
            raise

    def unprogram(self, subnet: Network, old: Encap | Direct) -> None:
        assert self.index is not None
        try:
            if isinstance(old, Direct):
                routes.delete(self.ipr, subnet, gateway=old.public_ip)
                return
            routes.delete(self.ipr, subnet, gateway=vtep_address(subnet), oif=self.index)
            neigh.fdb_delete(self.ipr, self.index, old.mac, old.public_ip)
            neigh.neigh_delete(self.ipr, self.index, vtep_address(subnet))
        except Exception as exc:  # removal errors are logged, as flannel does; never fatal
            log.error("vxlan: removing peer %s: %s", subnet, exc)

    def remove(self, subnet: Network, fallback: PeerPlan | None) -> None:
        old = self.peers.pop(subnet, None)
        if old is None and fallback is not None:
            old = fallback.want
        if old is not None:
            self.unprogram(subnet, old)

    def resync(self) -> None:
        if self.spec is None or self.index is None:
            return
        found = iface.index_of(self.ipr, self.name)
        if found != self.index:
            log.warning("vxlan: %s vanished; recreating it with MAC %s", self.name, self.mac)
            try:
                dev = vxdev.ensure(self.ipr, self.spec, mac=self.mac)
                self.index = dev.index
                if self.family == 6:
                    _no_ra(self.owner.netns, self.name)
                if self.own_addr is not None:
                    addr.ensure_only(self.ipr, dev.index, self.own_addr, within=self.network)
            except Exception as exc:
                log.error("vxlan: recreating %s: %s", self.name, exc)
                return
            missing = list(self.peers.items())
        else:
            snap = self._snapshot()
            missing = [(sn, w) for sn, w in self.peers.items() if not self._present(snap, sn, w)]
        for subnet, want in missing:
            log.info("vxlan: restoring entries of peer %s", subnet)
            try:
                self.program(subnet, want)
            except Exception as exc:
                log.error("vxlan: resync peer %s: %s", subnet, exc)

    def _snapshot(self) -> tuple[list[routes.Route], set[tuple[Address, str]], set[tuple[str, Address | None]]]:
        assert self.index is not None
        fam = socket.AF_INET6 if self.family == 6 else socket.AF_INET
        return (routes.list_routes(self.ipr, family=fam),
                {(n.ip, n.mac) for n in neigh.neigh_list(self.ipr, self.index, family=fam)},
                {(f.mac, f.dst) for f in neigh.fdb_list(self.ipr, self.index)})

    def _present(self, snap, subnet: Network, want: Encap | Direct) -> bool:  # noqa: ANN001
        all_routes, neighs, fdb = snap
        have = [r for r in all_routes if r.dst == subnet]
        if isinstance(want, Direct):
            return any(r.gateway == want.public_ip for r in have)
        vtep = vtep_address(subnet)
        return (any(r.gateway == vtep and r.oif == self.index and r.onlink for r in have)
                and (vtep, want.mac) in neighs and (want.mac, want.public_ip) in fdb)


def _no_ra(netns: str | None, name: str) -> None:
    """flannel sets net.ipv6.conf.<dev>.accept_ra=0 on its IPv6 VXLAN device (a VTEP takes no router
    advertisements). Written in the namespace the backend works in; a failure is only logged."""
    from podnet.net import exec as nexec

    path = f"/proc/sys/net/ipv6/conf/{name}/accept_ra"
    try:
        if netns is None:
            with open(path, "w") as f:
                f.write("0")
        else:
            nexec.run(["sh", "-c", f"echo 0 > {path}"], netns=netns, timeout=10)
    except (OSError, nexec.CommandError) as exc:
        log.warning("vxlan: cannot set accept_ra=0 on %s: %s", name, exc)


class VxlanBackend(NetlinkUser):
    backend_type = "vxlan"

    def __init__(
        self, ext: ExternalInterface, *, vni: int = 1, port: int = vxdev.DEFAULT_PORT,
        direct_routing: bool = False, mtu: int | None = None, learning: bool = False, gbp: bool = False,
        netns: str | None = None, ipv4: bool = True, ipv6: bool = False,
    ) -> None:
        if not 0 < vni < 1 << 24:
            raise BackendError(f"Backend.VNI: {vni!r}: must be 1..16777215")
        if not 0 < port < 65536:
            raise BackendError(f"Backend.Port: {port!r}: must be 1..65535")
        if not ipv4 and not ipv6:
            raise BackendError("vxlan: neither IPv4 nor IPv6 is enabled")
        self.ext = ext
        self.vni = vni
        self.port = port
        self.direct_routing = direct_routing
        self.learning = learning
        self.gbp = gbp
        self.netns = netns
        self._lock = threading.Lock()
        base = mtu or ext.mtu
        self.v4: _Vtep | None = None
        self.v6: _Vtep | None = None
        if ipv4:
            if base - ENCAP_OVERHEAD < 68:
                raise BackendError(f"Backend.MTU: {base!r}: leaves {base - ENCAP_OVERHEAD} for pods, below IPv4's 68")
            self.v4 = _Vtep(self, 4, f"flannel.{vni}", ext.address, base - ENCAP_OVERHEAD)
        if ipv6:
            if ext.address6 is None:
                raise BackendError(f"vxlan: {ext.name} has no IPv6 address for flannel-v6.{vni}")
            if base - ENCAP_OVERHEAD_V6 < 1280:
                raise BackendError(f"Backend.MTU: {base!r}: leaves {base - ENCAP_OVERHEAD_V6} for pods over the "
                                   "IPv6 VXLAN, below IPv6's 1280")
            self.v6 = _Vtep(self, 6, f"flannel-v6.{vni}", ext.address6, base - ENCAP_OVERHEAD_V6)
        self.backend_v6_data: BackendData = None

    @classmethod
    def from_options(cls, ext: ExternalInterface, opts: Mapping[str, Any], *, netns: str | None = None,
                     ipv4: bool = True, ipv6: bool = False) -> VxlanBackend:
        """Build from the net-conf Backend object (keys already lower-cased)."""
        return cls(
            ext, vni=option_int(opts, "VNI", 1), port=option_int(opts, "Port", vxdev.DEFAULT_PORT),
            direct_routing=bool(opts.get("directrouting", False)),
            mtu=option_int(opts, "MTU", 0) or None, learning=bool(opts.get("learning", False)),
            gbp=bool(opts.get("gbp", False)), netns=netns, ipv4=ipv4, ipv6=ipv6,
        )

    # Kept for callers and tests that look at the IPv4 device.
    @property
    def device_name(self) -> str:
        return (self.v4 or self.v6).name  # type: ignore[union-attr]

    @property
    def mac(self) -> str | None:
        return (self.v4 or self.v6).mac  # type: ignore[union-attr]

    @property
    def mtu(self) -> int:
        """FLANNEL_MTU: the smaller device MTU, so a pod's packet fits whichever family carries it."""
        return min(v.mtu for v in (self.v4, self.v6) if v is not None)

    # -- own side ---------------------------------------------------------------------------------

    def register(self) -> BackendData:
        """Create or reuse the devices; returns BackendData (IPv4's) and sets `backend_v6_data`."""
        with self._lock:
            data = self.v4.register() if self.v4 is not None else None
            self.backend_v6_data = self.v6.register() if self.v6 is not None else None
        return data

    def configure(self, own: LeaseLike, network: Network | None, network_v6: ipaddress.IPv6Network | None = None
                  ) -> None:
        with self._lock:
            for vtep in (self.v4, self.v6):
                if vtep is not None and vtep.index is None:
                    raise BackendError("vxlan: configure() called before register()")
            if self.v4 is not None:
                self.v4.configure(own.subnet, network)
            if self.v6 is not None:
                subnet_v6 = getattr(own, "subnet_v6", None)
                if subnet_v6 is None:
                    raise BackendError("vxlan: our lease has no IPv6 subnet for flannel-v6")
                self.v6.configure(subnet_v6, network_v6)

    # -- peers -----------------------------------------------------------------------------------

    def _plans(self, lease: LeaseLike) -> tuple[PeerPlan | None, PeerPlan | None]:
        p4 = p6 = None
        if self.v4 is not None and lease.subnet.prefixlen > 0:
            p4 = plan_peer(lease.subnet, lease.public_ip, lease.backend_data,
                           direct=self.direct_routing and self._on_link(lease.public_ip))
            if p4 is None:
                log.error("vxlan: peer %s (public IP %s): lease has no BackendData.VtepMAC; skipped",
                          lease.subnet, lease.public_ip)
        if self.v6 is not None:
            sn6, pub6 = getattr(lease, "subnet_v6", None), getattr(lease, "public_ipv6", None)
            p6 = plan_peer(sn6, pub6, getattr(lease, "backend_v6_data", None),
                           direct=self.direct_routing and pub6 is not None and self._on_link(pub6))
            if p6 is None and sn6 is not None:
                log.error("vxlan: peer %s (public IPv6 %s): lease has no BackendV6Data.VtepMAC; skipped", sn6, pub6)
        return p4, p6

    def _on_link(self, ip: Address) -> bool:
        """flannel's test: `ip route get` gives a route with no gateway (same L2 subnet)."""
        route = routes.get(self.ipr, ip)
        return route is not None and route.gateway is None

    def add_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            log.info("vxlan: ignoring peer %s: backend type %r", lease.subnet, lease.backend_type)
            return
        with self._lock:
            if any(v is not None and v.index is None for v in (self.v4, self.v6)):
                raise BackendError("vxlan: add_remote() called before register()")
            for vtep, plan in zip((self.v4, self.v6), self._plans(lease), strict=True):
                if vtep is not None and plan is not None:
                    vtep.add(plan)

    def remove_remote(self, lease: LeaseLike) -> None:
        if lease.backend_type != self.backend_type:
            return
        with self._lock:
            if self.v4 is not None and self.v4.index is not None and lease.subnet.prefixlen > 0:
                self.v4.remove(lease.subnet, plan_peer(lease.subnet, lease.public_ip, lease.backend_data))
            sn6 = getattr(lease, "subnet_v6", None)
            if self.v6 is not None and self.v6.index is not None and sn6 is not None:
                self.v6.remove(sn6, plan_peer(sn6, getattr(lease, "public_ipv6", None),
                                              getattr(lease, "backend_v6_data", None)))

    def resync(self) -> None:
        """Recreate a device someone deleted (same MAC, so peers' FDB entries stay right) and put back any
        route, neighbour or FDB entry of a known peer that went missing. Nothing is written when
        everything is in place."""
        with self._lock:
            for vtep in (self.v4, self.v6):
                if vtep is not None:
                    vtep.resync()

    def close(self) -> None:
        with self._lock:
            self._close_ipr()
