"""Overlay backends, looked up by flannel's Backend.Type (case-insensitive, as flannel does).

`create_backend(type, ext_iface, options)` is the one entry point the daemon uses; `options` is the
net-conf `Backend` object as parsed JSON (flannel's key names: VNI, Port, DirectRouting, MTU, ...).
The interface every backend implements is in base.py.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from podnet.overlay.backends.base import Backend, BackendError, ExternalInterface

BACKEND_TYPES = ("vxlan", "host-gw", "udp")


def create_backend(
    backend_type: str, ext: ExternalInterface, options: Mapping[str, Any] | None = None,
    *, netns: str | None = None, ipv4: bool = True, ipv6: bool = False,
) -> Backend:
    """Build the backend named `backend_type` for the node whose underlay interface is `ext`.

    `netns` binds all kernel work to a named namespace (tests); the daemon runs inside the node's
    namespace and leaves it None. `ipv4` / `ipv6` are the net-conf's EnableIPv4 / EnableIPv6: which
    families the backend carries (udp carries IPv4 only).
    """
    opts = {k.lower(): v for k, v in (options or {}).items()}
    kind = backend_type.lower()
    if kind == "vxlan":
        from podnet.overlay.backends.vxlan import VxlanBackend

        return VxlanBackend.from_options(ext, opts, netns=netns, ipv4=ipv4, ipv6=ipv6)
    if kind == "host-gw":
        from podnet.overlay.backends.hostgw import HostGwBackend

        return HostGwBackend.from_options(ext, opts, netns=netns, ipv4=ipv4, ipv6=ipv6)
    if kind == "udp":
        from podnet.overlay.backends.udp import UdpBackend

        return UdpBackend.from_options(ext, opts, netns=netns, ipv4=ipv4, ipv6=ipv6)
    raise BackendError(f"Backend.Type: {backend_type!r}: unknown backend type (known: {', '.join(BACKEND_TYPES)})")


__all__ = ["BACKEND_TYPES", "Backend", "BackendError", "ExternalInterface", "create_backend"]
