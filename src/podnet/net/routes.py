"""IPv4 and IPv6 routes: replace/delete one route, ask the kernel which route it would take, list routes.
The family is the destination's (an IPv6 `dst` gives an AF_INET6 route).

"replace" everywhere so re-applying a lease (flannel re-sends leases on renewal) is idempotent.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute
from pyroute2.netlink.exceptions import NetlinkError

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

RTNH_F_ONLINK = 4
MAIN_TABLE = 254


@dataclass(frozen=True, slots=True)
class Route:
    """A unicast route as podnet reads it back (main table)."""

    dst: IPNetwork
    gateway: IPAddress | None
    oif: int | None
    onlink: bool


def _parse(msg) -> Route:  # noqa: ANN001 - pyroute2 rtmsg
    v6 = msg["family"] == socket.AF_INET6
    dst = msg.get_attr("RTA_DST") or ("::" if v6 else "0.0.0.0")
    gw = msg.get_attr("RTA_GATEWAY")
    oif = msg.get_attr("RTA_OIF")
    return Route(
        dst=ipaddress.ip_network(f"{dst}/{msg['dst_len']}"),
        gateway=ipaddress.ip_address(gw) if gw else None,
        oif=int(oif) if oif is not None else None,
        onlink=bool(msg["flags"] & RTNH_F_ONLINK),
    )


def replace(
    ipr: IPRoute, dst: IPNetwork, *, gateway: IPAddress | None = None,
    oif: int | None = None, onlink: bool = False,
) -> None:
    kw: dict[str, object] = {"dst": str(dst), "table": MAIN_TABLE, "family": _family(dst)}
    if gateway is not None:
        kw["gateway"] = str(gateway)
    if oif is not None:
        kw["oif"] = oif
    if onlink:
        kw["flags"] = RTNH_F_ONLINK
    ipr.route("replace", **kw)


def delete(ipr: IPRoute, dst: IPNetwork, *, gateway: IPAddress | None = None,
           oif: int | None = None) -> bool:
    """Delete the route to `dst` (matching gateway/oif when given). False if it was not there."""
    kw: dict[str, object] = {"dst": str(dst), "table": MAIN_TABLE, "family": _family(dst)}
    if gateway is not None:
        kw["gateway"] = str(gateway)
    if oif is not None:
        kw["oif"] = oif
    try:
        ipr.route("del", **kw)
    except NetlinkError as exc:
        if exc.code in (3, 2):  # ESRCH / ENOENT: already gone
            return False
        raise
    return True


def _family(net: IPNetwork | IPAddress) -> int:
    return socket.AF_INET6 if net.version == 6 else socket.AF_INET


def lookup(ipr: IPRoute, dst: IPNetwork) -> list[Route]:
    """Routes in the main table for exactly `dst`."""
    return [r for r in list_routes(ipr, family=_family(dst)) if r.dst == dst]


def list_routes(ipr: IPRoute, *, oif: int | None = None, family: int = socket.AF_INET) -> list[Route]:
    """Unicast routes of the main table, of one family (AF_INET by default, AF_INET6)."""
    out = []
    for msg in ipr.route("dump", family=family, table=MAIN_TABLE):
        if msg["type"] != 1:  # unicast only: skip local/broadcast
            continue
        r = _parse(msg)
        if oif is None or r.oif == oif:
            out.append(r)
    return out


def get(ipr: IPRoute, address: IPAddress) -> Route | None:
    """The route the kernel would use to reach `address` (`ip route get`), None if unreachable."""
    try:
        msgs = ipr.route("get", dst=str(address), family=_family(address))
    except NetlinkError as exc:
        if exc.code in (101, 113, 22):  # ENETUNREACH / EHOSTUNREACH / EINVAL
            return None
        raise
    if not msgs:
        return None
    return _parse(msgs[0])
