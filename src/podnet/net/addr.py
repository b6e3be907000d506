"""Interface addresses: make one address the only one a device holds inside a network.

flannel does this for flannel.<VNI> and flannel0 (`ensureV4AddressOnLink`): after a restart with a
different lease, the stale subnet address must go, or the node answers for two subnets.
"""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute

IFA_F_NODAD = 0x02


Interface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def addresses(ipr: IPRoute, index: int, *, family: int = socket.AF_INET) -> list[Interface]:
    """The device's addresses of one family (AF_INET by default, or AF_INET6)."""
    out: list[Interface] = []
    for msg in ipr.addr("dump", index=index, family=family):
        if msg["index"] == index:
            out.append(ipaddress.ip_interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
    return out


def ensure_only(ipr: IPRoute, index: int, want: Interface, within: Network | None = None) -> None:
    """Add `want` unless present; delete other addresses of its family on the device (inside `within`
    when given). An IPv6 address is added nodad: a /128 on a VXLAN device must be usable at once."""
    family = socket.AF_INET6 if want.version == 6 else socket.AF_INET
    have = addresses(ipr, index, family=family)
    for a in have:
        if a != want and (within is None or a.ip in within):
            ipr.addr("del", index=index, address=str(a.ip), prefixlen=a.network.prefixlen)
    if want not in have:
        kw: dict[str, object] = {"index": index, "address": str(want.ip), "prefixlen": want.network.prefixlen}
        if want.version == 6:
            kw["flags"] = IFA_F_NODAD
        ipr.addr("add", **kw)
