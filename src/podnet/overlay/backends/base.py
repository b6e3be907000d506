"""The overlay backend interface: what the daemon calls, what every backend (vxlan, host-gw, udp) provides.

Modelled on flannel's `backend.Backend` / `backend.Network`, split in two steps because the lease
JSON carries BackendData (the VTEP MAC) while the device address needs the subnet the lease gives:

    backend = create_backend(type, ext_iface, options)     # backends/__init__.py
    data = backend.register()                  # device created/reused; BackendData for our own lease
    lease = lease_manager.acquire(..., backend_type=backend.backend_type, backend_data=data)
    backend.configure(lease, network)          # device address, whole-network route (udp), data plane up
    write subnet.env with backend.mtu
    for each event: backend.add_remote(lease) / backend.remove_remote(previous_lease)
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
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from podnet.errors import PodnetError

BackendData = dict[str, Any] | None


class BackendError(PodnetError):
    """The backend cannot work on this node (device creation failed, bad option...)."""


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


@dataclass(frozen=True, slots=True)
class ExternalInterface:
    """The node's underlay interface (flannel's ExtIface): where encapsulated traffic leaves.

    `address` is the interface's own IPv4 address (the udp socket binds it, vxlan uses it as `local`);
    `public_ip` is what peers send to (--public-ip, defaults to `address`).
    """

    name: str
    index: int
    address: ipaddress.IPv4Address
    public_ip: ipaddress.IPv4Address
    mtu: int


class Backend(Protocol):
    """One overlay data plane. See the module docstring for the call order."""

    backend_type: str  # "vxlan" | "host-gw" | "udp", the lease's BackendType

    @property
    def mtu(self) -> int:
        """FLANNEL_MTU for subnet.env: the MTU pods must use so encapsulated packets fit the underlay."""
        ...

    def register(self) -> BackendData:
        """Create or reuse the backend's device; return the BackendData to publish in our lease."""
        ...

    def configure(self, own: LeaseLike, network: ipaddress.IPv4Network) -> None:
        """Finish setup once our lease is known (device address, routes, forwarding threads)."""
        ...

    def add_remote(self, lease: LeaseLike) -> None:
        """Make `lease.subnet` reachable through this backend (idempotent)."""
        ...

    def remove_remote(self, lease: LeaseLike) -> None:
        """Undo add_remote for the lease as it was last added."""
        ...

    def close(self) -> None:
        """Stop background work and release sockets; kernel state stays (restart = no wire change)."""
        ...
