"""A minimal rtnetlink client on the bare socket module, for code that runs once per pod.

Why not pyroute2 here: the CNI plugins are exec'd for every pod ADD/DEL and importing pyroute2 costs
~100 ms, five times the whole reference bridge ADD. The handful of messages a bridge plugin needs
(links, veth pairs, addresses, routes, bridge-port hairpin) fit in this file and import in ~1 ms.
Daemons keep using pyroute2 through the other net/ modules, except where a restart waits on it: the
proxy's first sync reads the node's addresses here (a new Service must work within 2 s of a kill).

A socket belongs to the network namespace it was created in; see nsfd.py for entering another one.
"""

from __future__ import annotations

import _socket as socket  # the C module: `socket` builds enums at import (~2 ms)
import errno
import os
import struct

from podnet.errors import PodnetError

NETLINK_ROUTE = 0

RTM_NEWLINK, RTM_DELLINK, RTM_GETLINK, RTM_SETLINK = 16, 17, 18, 19
RTM_NEWADDR, RTM_DELADDR, RTM_GETADDR = 20, 21, 22
RTM_NEWROUTE, RTM_DELROUTE, RTM_GETROUTE = 24, 25, 26

NLM_F_REQUEST, NLM_F_MULTI, NLM_F_ACK = 0x1, 0x2, 0x4
NLM_F_DUMP = 0x300
NLM_F_REPLACE, NLM_F_EXCL, NLM_F_CREATE, NLM_F_APPEND = 0x100, 0x200, 0x400, 0x800
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLA_F_NESTED = 0x8000

IFLA_ADDRESS, IFLA_IFNAME, IFLA_MTU, IFLA_LINK, IFLA_MASTER = 1, 3, 4, 5, 10
IFLA_PROTINFO, IFLA_TXQLEN, IFLA_OPERSTATE, IFLA_LINKINFO = 12, 13, 16, 18
IFLA_NET_NS_FD, IFLA_PROMISCUITY = 28, 30
IFLA_INFO_KIND, IFLA_INFO_DATA = 1, 2
VETH_INFO_PEER = 1
IFLA_BRPORT_MODE = 4  # hairpin

IFA_ADDRESS, IFA_LOCAL, IFA_LABEL, IFA_BROADCAST = 1, 2, 3, 4
RTA_DST, RTA_OIF, RTA_GATEWAY, RTA_PRIORITY, RTA_TABLE = 1, 4, 5, 6, 15

AF_BRIDGE = 7
IFF_UP, IFF_PROMISC = 0x1, 0x100
IF_OPER_UP = 6
OPER_STATES = ["unknown", "notpresent", "down", "lowerlayerdown", "testing", "dormant", "up"]
RT_TABLE_MAIN, RTPROT_BOOT, RTN_UNICAST = 254, 3, 1
RT_SCOPE_UNIVERSE, RT_SCOPE_LINK = 0, 253

_NLMSGHDR = struct.Struct("=IHHII")
_IFINFOMSG = struct.Struct("=BxHiII")
_IFADDRMSG = struct.Struct("=BBBBi")
_RTMSG = struct.Struct("=BBBBBBBBI")


class NetlinkError(PodnetError, OSError):
    """A kernel NACK; errno tells which (ENODEV: no such link, EEXIST: already there). Still an OSError,
    as the kernel's errors are."""

    errno: int  # both always set, unlike a plain OSError's
    strerror: str

    def __init__(self, errno: int, strerror: str) -> None:
        super().__init__(errno, strerror)


def _attr(kind: int, data: bytes) -> bytes:
    n = 4 + len(data)
    return struct.pack("=HH", n, kind) + data + b"\0" * ((4 - n % 4) % 4)


def _str(kind: int, s: str) -> bytes:
    return _attr(kind, s.encode() + b"\0")


def _u32(kind: int, v: int) -> bytes:
    return _attr(kind, struct.pack("=I", v))


def _nest(kind: int, *attrs: bytes) -> bytes:
    return _attr(kind | NLA_F_NESTED, b"".join(attrs))


def parse_attrs(data: bytes, off: int = 0) -> dict[int, bytes]:
    """Flat attribute table; the first occurrence of a type wins (enough for what we read)."""
    out: dict[int, bytes] = {}
    end = len(data)
    while off + 4 <= end:
        n, kind = struct.unpack_from("=HH", data, off)
        if n < 4:
            break
        out.setdefault(kind & 0x3FFF, data[off + 4 : off + n])
        off += (n + 3) & ~3
    return out


def _cstr(b: bytes) -> str:
    return b.split(b"\0", 1)[0].decode()


def mac_str(b: bytes) -> str:
    return ":".join(f"{x:02x}" for x in b)


class Link:
    """What we read of a link. peer_index is IFLA_LINK: a veth's peer ifindex (in the peer's namespace)."""

    __slots__ = ("index", "name", "flags", "mac", "mtu", "kind", "master", "peer_index", "operstate", "promiscuity")

    def __init__(self, index: int, name: str, flags: int, mac: str = "", mtu: int = 0, kind: str = "",
                 master: int = 0, peer_index: int = 0, operstate: int = 0, promiscuity: int = 0) -> None:
        self.index, self.name, self.flags, self.mac, self.mtu = index, name, flags, mac, mtu
        self.kind, self.master, self.peer_index = kind, master, peer_index
        self.operstate, self.promiscuity = operstate, promiscuity

    @property
    def up(self) -> bool:
        return bool(self.flags & IFF_UP)

    @property
    def oper_name(self) -> str:
        return OPER_STATES[self.operstate] if self.operstate < len(OPER_STATES) else str(self.operstate)


class Addr:
    __slots__ = ("index", "family", "address", "prefixlen", "scope")

    def __init__(self, index: int, family: int, address: str, prefixlen: int, scope: int) -> None:
        self.index, self.family, self.address, self.prefixlen, self.scope = index, family, address, prefixlen, scope


class Route:
    """A route as read; dst None means default."""

    __slots__ = ("family", "dst", "dst_len", "gateway", "oif", "table", "attrs")

    def __init__(self, family: int, dst: str | None, dst_len: int, gateway: str | None, oif: int, table: int,
                 attrs: dict[int, bytes]) -> None:
        self.family, self.dst, self.dst_len, self.gateway = family, dst, dst_len, gateway
        self.oif, self.table, self.attrs = oif, table, attrs


def _parse_link(body: bytes) -> Link:
    _fam, _type, index, flags, _change = _IFINFOMSG.unpack_from(body)
    a = parse_attrs(body, _IFINFOMSG.size)
    kind = ""
    if IFLA_LINKINFO in a:
        li = parse_attrs(a[IFLA_LINKINFO])
        if IFLA_INFO_KIND in li:
            kind = _cstr(li[IFLA_INFO_KIND])
    u32 = lambda k: struct.unpack("=I", a[k][:4])[0] if k in a else 0  # noqa: E731
    return Link(
        index=index, name=_cstr(a.get(IFLA_IFNAME, b"")), flags=flags,
        mac=mac_str(a.get(IFLA_ADDRESS, b"")), mtu=u32(IFLA_MTU), kind=kind, master=u32(IFLA_MASTER),
        peer_index=u32(IFLA_LINK), operstate=a.get(IFLA_OPERSTATE, b"\0")[0], promiscuity=u32(IFLA_PROMISCUITY),
    )


def _family(ip: str) -> int:
    return socket.AF_INET6 if ":" in ip else socket.AF_INET


class Rtnl:
    """One NETLINK_ROUTE socket in the namespace where it was opened. Use as a context manager."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)
        self.sock.bind((0, 0))
        self.seq = 0

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> Rtnl:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- transport -------------------------------------------------------------------------------------
    def request(self, mtype: int, flags: int, payload: bytes) -> list[tuple[int, bytes]]:
        """Send one message; return the reply bodies. Raises NetlinkError on a NACK."""
        self.seq += 1
        seq = self.seq
        flags |= NLM_F_REQUEST | NLM_F_ACK
        self.sock.send(_NLMSGHDR.pack(_NLMSGHDR.size + len(payload), mtype, flags, seq, 0) + payload)
        out: list[tuple[int, bytes]] = []
        while True:
            data = self.sock.recv(1 << 16)
            off = 0
            while off + _NLMSGHDR.size <= len(data):
                n, t, _f, s, _pid = _NLMSGHDR.unpack_from(data, off)
                body = data[off + _NLMSGHDR.size : off + n]
                off += (n + 3) & ~3
                if s != seq:
                    continue
                if t == NLMSG_DONE:
                    return out
                if t == NLMSG_ERROR:
                    err = -struct.unpack_from("=i", body)[0]
                    if err:
                        raise NetlinkError(err, os.strerror(err))
                    return out  # ACK
                out.append((t, body))  # a reply; the ACK (or DONE for dumps) follows
            if not data:
                return out

    # -- links -----------------------------------------------------------------------------------------
    def link_get(self, name: str | None = None, index: int = 0) -> Link | None:
        """The link by name or index, or None if it does not exist."""
        payload = _IFINFOMSG.pack(0, 0, index, 0, 0) + (_str(IFLA_IFNAME, name) if name else b"")
        try:
            msgs = self.request(RTM_GETLINK, 0, payload)
        except NetlinkError as e:
            if e.errno in (errno.ENODEV, errno.EINVAL):
                return None
            raise
        return _parse_link(msgs[0][1]) if msgs else None

    def links(self) -> list[Link]:
        msgs = self.request(RTM_GETLINK, NLM_F_DUMP, _IFINFOMSG.pack(0, 0, 0, 0, 0))
        return [_parse_link(b) for t, b in msgs if t == RTM_NEWLINK]

    def bridge_add(self, name: str, mtu: int = 0) -> None:
        """Create a bridge; raises NetlinkError(EEXIST) if the name is taken."""
        attrs = _str(IFLA_IFNAME, name) + _nest(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "bridge"))
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs)

    def veth_add(self, name: str, peer: str, peer_netns_fd: int | None, mtu: int = 0, peer_mac: str = "") -> None:
        """Create a veth pair here; the peer lands directly in the namespace of peer_netns_fd."""
        peer_attrs = _str(IFLA_IFNAME, peer)
        if peer_netns_fd is not None:
            peer_attrs += _u32(IFLA_NET_NS_FD, peer_netns_fd)
        if mtu:
            peer_attrs += _u32(IFLA_MTU, mtu)
        if peer_mac:
            peer_attrs += _attr(IFLA_ADDRESS, bytes(int(x, 16) for x in peer_mac.split(":")))
        peer_msg = _IFINFOMSG.pack(0, 0, 0, 0, 0) + peer_attrs
        info = _nest(IFLA_LINKINFO, _str(IFLA_INFO_KIND, "veth"),
                     _nest(IFLA_INFO_DATA, _attr(VETH_INFO_PEER | NLA_F_NESTED, peer_msg)))
        attrs = _str(IFLA_IFNAME, name) + info
        if mtu:
            attrs += _u32(IFLA_MTU, mtu)
        self.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, _IFINFOMSG.pack(0, 0, 0, 0, 0) + attrs)

    def link_set(self, index: int, *, up: bool | None = None, promisc: bool | None = None,
                 master: int | None = None, mac: str | None = None, mtu: int | None = None) -> None:
        flags = change = 0
        if up is not None:
            change |= IFF_UP
            flags |= IFF_UP if up else 0
        if promisc is not None:
            change |= IFF_PROMISC
            flags |= IFF_PROMISC if promisc else 0
        attrs = b""
        if master is not None:
            attrs += _u32(IFLA_MASTER, master)
        if mac is not None:
            attrs += _attr(IFLA_ADDRESS, bytes(int(x, 16) for x in mac.split(":")))
        if mtu is not None:
            attrs += _u32(IFLA_MTU, mtu)
        self.request(RTM_NEWLINK, 0, _IFINFOMSG.pack(0, 0, index, flags, change) + attrs)

    def link_del(self, index: int) -> None:
        self.request(RTM_DELLINK, 0, _IFINFOMSG.pack(0, 0, index, 0, 0))

    def brport_hairpin(self, index: int, on: bool) -> None:
        """Hairpin (reflective relay) on a bridge port, via AF_BRIDGE SETLINK + IFLA_PROTINFO."""
        attrs = _nest(IFLA_PROTINFO, _attr(IFLA_BRPORT_MODE, bytes([1 if on else 0])))
        self.request(RTM_SETLINK, 0, _IFINFOMSG.pack(AF_BRIDGE, 0, index, 0, 0) + attrs)

    # -- addresses -------------------------------------------------------------------------------------
    def addr_add(self, index: int, ip: str, prefixlen: int, *, broadcast: str | None = None) -> None:
        fam = _family(ip)
        raw = socket.inet_pton(fam, ip)
        attrs = _attr(IFA_LOCAL, raw) + _attr(IFA_ADDRESS, raw)
        if broadcast:
            attrs += _attr(IFA_BROADCAST, socket.inet_pton(fam, broadcast))
        self.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, _IFADDRMSG.pack(fam, prefixlen, 0, 0, index) + attrs)

    def addr_del(self, index: int, ip: str, prefixlen: int) -> None:
        fam = _family(ip)
        raw = socket.inet_pton(fam, ip)
        self.request(RTM_DELADDR, 0, _IFADDRMSG.pack(fam, prefixlen, 0, 0, index) + _attr(IFA_LOCAL, raw))

    def addrs(self, index: int = 0, family: int = 0) -> list[Addr]:
        msgs = self.request(RTM_GETADDR, NLM_F_DUMP, _IFADDRMSG.pack(family, 0, 0, 0, 0))
        out = []
        for t, body in msgs:
            if t != RTM_NEWADDR:
                continue
            fam, plen, _fl, scope, idx = _IFADDRMSG.unpack_from(body)
            if index and idx != index:
                continue
            a = parse_attrs(body, _IFADDRMSG.size)
            raw = a.get(IFA_LOCAL) or a.get(IFA_ADDRESS)
            if raw is None:
                continue
            out.append(Addr(idx, fam, socket.inet_ntop(fam, raw), plen, scope))
        return out

    # -- routes ----------------------------------------------------------------------------------------
    def route_add(self, dst: str, dst_len: int, oif: int, gateway: str | None = None, *,
                  scope: int | None = None, exclusive: bool = False) -> None:
        """Add a main-table unicast route (proto boot, as iproute2/netlink libraries default to)."""
        fam = _family(dst)
        if scope is None:
            scope = RT_SCOPE_UNIVERSE if gateway else RT_SCOPE_LINK
        attrs = _u32(RTA_OIF, oif)
        if dst_len:
            attrs += _attr(RTA_DST, socket.inet_pton(fam, dst))
        if gateway:
            attrs += _attr(RTA_GATEWAY, socket.inet_pton(fam, gateway))
        msg = _RTMSG.pack(fam, dst_len, 0, 0, RT_TABLE_MAIN, RTPROT_BOOT, scope, RTN_UNICAST, 0)
        self.request(RTM_NEWROUTE, NLM_F_CREATE | (NLM_F_EXCL if exclusive else 0), msg + attrs)

    def routes(self, family: int = socket.AF_INET) -> list[Route]:
        msgs = self.request(RTM_GETROUTE, NLM_F_DUMP, _RTMSG.pack(family, 0, 0, 0, 0, 0, 0, 0, 0))
        out = []
        for t, body in msgs:
            if t != RTM_NEWROUTE:
                continue
            fam, dlen, _sl, _tos, table, _proto, _scope, _rtype, _fl = _RTMSG.unpack_from(body)
            a = parse_attrs(body, _RTMSG.size)
            if RTA_TABLE in a:
                table = struct.unpack("=I", a[RTA_TABLE][:4])[0]
            dst = socket.inet_ntop(fam, a[RTA_DST]) if RTA_DST in a else None
            gw = socket.inet_ntop(fam, a[RTA_GATEWAY]) if RTA_GATEWAY in a else None
            oif = struct.unpack("=I", a[RTA_OIF][:4])[0] if RTA_OIF in a else 0
            out.append(Route(fam, dst, dlen, gw, oif, table, a))
        return out
