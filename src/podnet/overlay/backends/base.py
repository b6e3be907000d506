"""The overlay backend interface: what the daemon calls, what every backend (vxlan, host-gw, udp) provides.

Modelled on flannel's `backend.Backend` / `backend.Network`, split in two steps because the lease
JSON carries BackendData (the VTEP MAC) while the device address needs the subnet the lease gives:

    ext_iface = net.iface.lookup_external_interface(ipr, --iface, --public-ip)
    backend = create_backend(type, ext_iface, options)     # backends/__init__.py
    data = backend.register()                  # device(s) created/reused; BackendData for our own lease
                                               # (and backend.backend_v6_data for its IPv6 part)
    lease = lease_manager.acquire(..., backend_type=backend.backend_type, backend_data=data)
    backend.configure(lease, network, network_v6)  # device address, whole-network route (udp), data plane up
    write subnet.env with backend.mtu
    for each event: backend.add_remote(lease) / backend.remove_remote(previous_lease)
    every few seconds: backend.resync()        # puts back entries someone deleted
    backend.close()                            # on shutdown: stops threads; leaves the kernel state as is

Rules the daemon can rely on:
- add_remote is idempotent ("replace" semantics): a renewal re-sends the same lease, a changed lease
  (new PublicIP or VtepMAC for the same subnet) replaces the old entries.
- remove_remote gets the lease as it was last added (flannel's LeaseWatcher keeps it) so the entries
  keyed by the old MAC / public IP can be deleted. Missing entries are not an error.
- Leases whose backend_type differs from the backend's are ignored (logged), as flannel does.
- close() does not delete devices or routes: a restart must change nothing on the wire. The next
  register() reuses a compatible device.
- Errors that concern one peer (host-gw peer off-link) are logged naming the peer, never raised out of
  add_remote; errors that make the backend unusable (cannot create the device) raise BackendError.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

from podnet.errors import PodnetError
from podnet.net.iface import ExternalInterface

BackendData = dict[str, Any] | None

__all__ = ["Backend", "BackendData", "BackendError", "ExternalInterface", "LeaseLike"]


class BackendError(PodnetError):
    """The backend cannot work on this node (device creation failed, bad option...)."""


def option_int(opts: Mapping[str, Any], key: str, default: int) -> int:
    """An integer option of the net-conf Backend object (keys lower-cased); 0 or absent = default,
    as in flannel."""
    value = opts.get(key.lower())
    if value in (None, 0):
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BackendError(f"Backend.{key}: {value!r}: must be a non-negative integer")
    return value


@runtime_checkable
class LeaseLike(Protocol):
    """What a backend reads from a lease. overlay/lease.py's Lease satisfies it."""

    @property
    def subnet(self) -> ipaddress.IPv4Network: ...

    @property
    def public_ip(self) -> ipaddress.IPv4Address: ...

    @property
    def backend_type(self) -> str | None: ...

    @property
    def backend_data(self) -> BackendData: ...


class Backend(Protocol):
    """One overlay data plane. See the module docstring for the call order."""

    backend_type: str  # "vxlan" | "host-gw" | "udp", the lease's BackendType
    backend_v6_data: BackendData  # the lease's BackendV6Data after register() (vxlan over IPv6), else None

    @property
    def mtu(self) -> int:
        """FLANNEL_MTU for subnet.env: the MTU pods must use so encapsulated packets fit the underlay."""
        ...

    def register(self) -> BackendData:
        """Create or reuse the backend's device; return the BackendData to publish in our lease."""
        ...

    def configure(self, own: LeaseLike, network: ipaddress.IPv4Network | None,
                  network_v6: ipaddress.IPv6Network | None = None) -> None:
        """Finish setup once our lease is known (device address, routes, forwarding threads). `network`
        is None on an IPv6-only node, `network_v6` None without IPv6."""
        ...

    def add_remote(self, lease: LeaseLike) -> None:
        """Make `lease.subnet` reachable through this backend (idempotent)."""
        ...

    def remove_remote(self, lease: LeaseLike) -> None:
        """Undo add_remote for the lease as it was last added."""
        ...

    def resync(self) -> None:
        """Re-apply the entries of every remote added so far (flannel re-adds vanished host-gw routes
        every 10 s). The daemon calls it periodically; cheap when nothing is missing."""
        ...

    def close(self) -> None:
        """Stop background work and release sockets; kernel state stays (restart = no wire change)."""
        ...
