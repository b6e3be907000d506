"""Permanent neighbour (ARP / IPv6 ND) and bridge FDB entries, the per-peer state of a VXLAN device.
The family of a neighbour is its address's; an FDB entry's dst may be IPv4 or IPv6 (a VXLAN over IPv6).

flannel sets both with "replace" and NUD_PERMANENT so the kernel never ARPs for a VTEP and never
floods; removing a peer deletes them by exact key (IP for ARP, MAC for FDB).
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.rtnl import ndmsg

NUD_PERMANENT = ndmsg.states["permanent"]
NUD_NOARP = ndmsg.states["noarp"]
NTF_SELF = ndmsg.flags["self"]
AF_BRIDGE = 7

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Neighbour:
    ip: IPAddress
    mac: str
    permanent: bool


@dataclass(frozen=True, slots=True)
class FdbEntry:
    mac: str
    dst: IPAddress | None
    permanent: bool


def _gone(exc: NetlinkError) -> bool:
    return exc.code in (2, 3, 19)  # ENOENT / ESRCH / ENODEV


def _family(ip: IPAddress) -> int:
    return socket.AF_INET6 if ip.version == 6 else socket.AF_INET


def neigh_replace(ipr: IPRoute, index: int, ip: IPAddress, mac: str) -> None:
    ipr.neigh("replace", ifindex=index, dst=str(ip), lladdr=mac, state=NUD_PERMANENT, family=_family(ip))


def neigh_delete(ipr: IPRoute, index: int, ip: IPAddress) -> bool:
    try:
        ipr.neigh("del", ifindex=index, dst=str(ip), family=_family(ip))
    except NetlinkError as exc:
        if _gone(exc):
            return False
        raise
    return True


def neigh_list(ipr: IPRoute, index: int, *, family: int = socket.AF_INET) -> list[Neighbour]:
    out = []
    for msg in ipr.neigh("dump", ifindex=index, family=family):
        if msg["ifindex"] != index or not msg.get_attr("NDA_LLADDR"):
            continue
        out.append(Neighbour(ipaddress.ip_address(msg.get_attr("NDA_DST")), msg.get_attr("NDA_LLADDR"),
                             bool(msg["state"] & NUD_PERMANENT)))
    return out


def fdb_replace(ipr: IPRoute, index: int, mac: str, dst: IPAddress) -> None:
    """`bridge fdb replace MAC dev DEV dst DST self permanent`."""
    ipr.neigh("replace", family=AF_BRIDGE, ifindex=index, lladdr=mac, dst=str(dst),
              state=NUD_PERMANENT | NUD_NOARP, flags=NTF_SELF)


def fdb_delete(ipr: IPRoute, index: int, mac: str, dst: IPAddress | None = None) -> bool:
    kw: dict[str, object] = {"family": AF_BRIDGE, "ifindex": index, "lladdr": mac,
                             "state": NUD_PERMANENT | NUD_NOARP, "flags": NTF_SELF}
    if dst is not None:
        kw["dst"] = str(dst)
    try:
        ipr.neigh("del", **kw)
    except NetlinkError as exc:
        if _gone(exc):
            return False
        raise
    return True


def fdb_list(ipr: IPRoute, index: int) -> list[FdbEntry]:
    out = []
    for msg in ipr.neigh("dump", family=AF_BRIDGE, ifindex=index):
        if msg["ifindex"] != index:
            continue
        dst = msg.get_attr("NDA_DST")
        out.append(FdbEntry(msg.get_attr("NDA_LLADDR"), ipaddress.ip_address(dst) if dst else None,
                            bool(msg["state"] & NUD_PERMANENT)))
    return out
