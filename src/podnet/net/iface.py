"""The node's external (underlay) interface, as flannel picks it (`--iface` name or IP, else the
interface of the default route) and the facts backends need about it: index, address, MTU."""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from pyroute2 import IPRoute

from podnet.errors import PodnetError


@dataclass(frozen=True, slots=True)
class ExternalInterface:
    """Where encapsulated traffic leaves the node (flannel's ExtIface).

    `address` is the interface's own IPv4 address (the udp socket binds it, vxlan uses it as `local`);
    `public_ip` is what peers send to (--public-ip, defaults to `address`). `address6` / `public_ipv6`
    are the IPv6 twins (flannel's IfaceV6Addr / ExtV6Addr), looked up only for an IPv6 pod network.
    """

    name: str
    index: int
    address: ipaddress.IPv4Address
    public_ip: ipaddress.IPv4Address
    mtu: int
    address6: ipaddress.IPv6Address | None = None
    public_ipv6: ipaddress.IPv6Address | None = None


def _first_ipv4(ipr: IPRoute, index: int) -> ipaddress.IPv4Address | None:
    addrs = ipr.addr("dump", index=index, family=socket.AF_INET)
    # flannel prefers global over link-local scope; scope 0 = universe/global.
    for msg in sorted(addrs, key=lambda m: m["scope"]):
        value = msg.get_attr("IFA_ADDRESS")
        if value:
            return ipaddress.IPv4Address(value)
    return None


def first_global_ipv6(ipr: IPRoute, index: int) -> ipaddress.IPv6Address | None:
    """The interface's first global-scope IPv6 address that is not tentative or deprecated (flannel's
    choice for the IPv6 underlay; link-local fe80:: addresses cannot carry a VXLAN to another node)."""
    for msg in ipr.addr("dump", index=index, family=socket.AF_INET6):
        if msg["index"] != index or msg["scope"] != 0:
            continue
        flags = msg.get_attr("IFA_FLAGS") or msg["flags"]
        if flags & (0x40 | 0x20):  # IFA_F_TENTATIVE | IFA_F_DEPRECATED
            continue
        value = msg.get_attr("IFA_ADDRESS")
        if value:
            return ipaddress.IPv6Address(value)
    return None


def _default_route_index(ipr: IPRoute, family: int = socket.AF_INET) -> int | None:
    for route in ipr.route("dump", family=family):
        if route["dst_len"] == 0 and route["table"] == 254 and route.get_attr("RTA_OIF"):
            return int(route.get_attr("RTA_OIF"))
    return None


def index_of(ipr: IPRoute, name: str) -> int | None:
    """The index of the link called `name`, or None when there is none."""
    found = ipr.link_lookup(ifname=name)
    return int(found[0]) if found else None


def set_up(ipr: IPRoute, index: int, *, mtu: int | None = None) -> None:
    """Bring a link up (and set its MTU, if given)."""
    if mtu is None:
        ipr.link("set", index=index, state="up")
    else:
        ipr.link("set", index=index, mtu=mtu, state="up")


def lookup_external_interface(
    ipr: IPRoute, iface: str | None = None, public_ip: str | None = None, *,
    ipv6: bool = False, public_ipv6: str | None = None, ipv4: bool = True,
) -> ExternalInterface:
    """Resolve `iface` (a name or one of its IPv4 or IPv6 addresses; None = default route's interface).
    With `ipv6` also its global IPv6 address (an error names the interface when it has none) and the
    public IPv6 (--public-ipv6, defaulting to that address). With `ipv4` False (an IPv6-only pod network)
    the interface needs no IPv4 address (`address` is then 0.0.0.0 if it has none) and without --iface
    the IPv6 default route picks it."""
    index: int | None = None
    address: ipaddress.IPv4Address | None = None
    if iface:
        try:
            wanted = ipaddress.ip_address(iface)
        except ValueError:
            found = ipr.link_lookup(ifname=iface)
            if not found:
                raise PodnetError(f"--iface: {iface!r}: no such interface") from None
            index = found[0]
        else:
            family = socket.AF_INET6 if wanted.version == 6 else socket.AF_INET
            for msg in ipr.addr("dump", family=family):
                if ipaddress.ip_address(msg.get_attr("IFA_ADDRESS")) == wanted:
                    index = msg["index"]
                    if isinstance(wanted, ipaddress.IPv4Address):
                        address = wanted
                    break
            if index is None:
                raise PodnetError(f"--iface: {iface!r}: no interface has this address")
    else:
        index = _default_route_index(ipr)
        if index is None and not ipv4:
            index = _default_route_index(ipr, socket.AF_INET6)
        if index is None:
            raise PodnetError("--iface: not given and there is no IPv4 default route to pick one from"
                              + ("" if ipv4 else " (nor an IPv6 one)"))
    if address is None:
        address = _first_ipv4(ipr, index)
        if address is None and not ipv4:
            address = ipaddress.IPv4Address("0.0.0.0")  # IPv6-only: flannel leaves the IPv4 side empty
        if address is None:
            raise PodnetError(f"--iface: {iface or index!r}: interface has no IPv4 address")
    link = ipr.link("get", index=index)[0]
    try:
        pub = ipaddress.IPv4Address(public_ip) if public_ip else address
    except ValueError:
        raise PodnetError(f"--public-ip: {public_ip!r}: not an IPv4 address") from None
    name = link.get_attr("IFLA_IFNAME")
    address6 = pub6 = None
    if ipv6:
        address6 = first_global_ipv6(ipr, index)
        if address6 is None:
            raise PodnetError(f"--iface: {name!r}: interface has no global IPv6 address, which the IPv6 pod "
                              "network (EnableIPv6) needs for its underlay")
        try:
            pub6 = ipaddress.IPv6Address(public_ipv6) if public_ipv6 else address6
        except ValueError:
            raise PodnetError(f"--public-ipv6: {public_ipv6!r}: not an IPv6 address") from None
    return ExternalInterface(
        name=name, index=index, address=address, public_ip=pub, mtu=int(link.get_attr("IFLA_MTU")),
        address6=address6, public_ipv6=pub6,
    )
