"""Interface addresses: make one address the only one a device holds inside a network.

flannel does this for flannel.<VNI> and flannel0 (`ensureV4AddressOnLink`): after a restart with a
different lease, the stale subnet address must go, or the node answers for two subnets.
"""

from __future__ import annotations

import ipaddress
import socket

from pyroute2 import IPRoute


def addresses(ipr: IPRoute, index: int) -> list[ipaddress.IPv4Interface]:
    out = []
    for msg in ipr.addr("dump", index=index, family=socket.AF_INET):
        if msg["index"] == index:
            out.append(ipaddress.IPv4Interface(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}"))
    return out


def ensure_only(
    ipr: IPRoute, index: int, want: ipaddress.IPv4Interface, within: ipaddress.IPv4Network | None = None
) -> None:
    """Add `want` unless present; delete other addresses of the device (inside `within` when given)."""
    have = addresses(ipr, index)
    for a in have:
        if a != want and (within is None or a.ip in within):
            ipr.addr("del", index=index, address=str(a.ip), prefixlen=a.network.prefixlen)
    if want not in have:
        ipr.addr("add", index=index, address=str(want.ip), prefixlen=want.network.prefixlen)
