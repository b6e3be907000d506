"""VXLAN devices: create one with flannel's attributes, or reuse an existing compatible one.

Reuse matters: a restarted daemon must change nothing on the wire, so a device whose VNI, underlay
link, local address, port and learning flag already match is kept with its MAC (peers have that MAC
in their FDB). A device that differs in any of those is deleted and recreated.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from pyroute2 import IPRoute

from podnet.errors import PodnetError

DEFAULT_PORT = 8472  # Linux's historical VXLAN port, flannel's default (IANA's is 4789)


@dataclass(frozen=True, slots=True)
class VxlanSpec:
    name: str
    vni: int
    link_index: int
    local: ipaddress.IPv4Address | ipaddress.IPv6Address  # an IPv6 local makes a VXLAN over IPv6
    port: int = DEFAULT_PORT
    learning: bool = False
    gbp: bool = False
    mtu: int = 1450


@dataclass(frozen=True, slots=True)
class VxlanDevice:
    index: int
    mac: str
    reused: bool


def random_mac() -> str:
    """A random locally administered unicast MAC (what flannel generates for a new VTEP)."""
    b = bytearray(os.urandom(6))
    b[0] = (b[0] & 0xFE) | 0x02
    return ":".join(f"{x:02x}" for x in b)


def _vxlan_attrs(link) -> dict[str, object] | None:  # noqa: ANN001 - pyroute2 ifinfmsg
    info = link.get_attr("IFLA_LINKINFO")
    if info is None or info.get_attr("IFLA_INFO_KIND") != "vxlan":
        return None
    data = info.get_attr("IFLA_INFO_DATA")
    return {
        "vni": data.get_attr("IFLA_VXLAN_ID"),
        "link_index": data.get_attr("IFLA_VXLAN_LINK"),
        "local": data.get_attr("IFLA_VXLAN_LOCAL") or data.get_attr("IFLA_VXLAN_LOCAL6"),
        "port": data.get_attr("IFLA_VXLAN_PORT"),
        "learning": bool(data.get_attr("IFLA_VXLAN_LEARNING")),
        "gbp": data.get_attr("IFLA_VXLAN_GBP") is not None,
    }


def compatible(spec: VxlanSpec, attrs: dict[str, object] | None) -> bool:
    """True when an existing device's identity attributes equal the spec's (MTU does not count)."""
    return attrs is not None and attrs == {
        "vni": spec.vni, "link_index": spec.link_index, "local": str(spec.local), "port": spec.port,
        "learning": spec.learning, "gbp": spec.gbp,
    }


def ensure(ipr: IPRoute, spec: VxlanSpec, mac: str | None = None) -> VxlanDevice:
    """Return the device named spec.name, reusing it if compatible, else (re)creating it. Link up."""
    found = ipr.link_lookup(ifname=spec.name)
    if found:
        link = ipr.link("get", index=found[0])[0]
        if compatible(spec, _vxlan_attrs(link)):
            idx = found[0]
            if link.get_attr("IFLA_MTU") != spec.mtu:
                ipr.link("set", index=idx, mtu=spec.mtu)
            ipr.link("set", index=idx, state="up")
            return VxlanDevice(idx, link.get_attr("IFLA_ADDRESS"), reused=True)
        ipr.link("del", index=found[0])
    mac = mac or random_mac()
    kw: dict[str, object] = dict(
        ifname=spec.name, kind="vxlan", vxlan_id=spec.vni, vxlan_link=spec.link_index,
        **{"vxlan_local6" if spec.local.version == 6 else "vxlan_local": str(spec.local)}, vxlan_port=spec.port, vxlan_learning=int(spec.learning),
        address=mac, mtu=spec.mtu,
    )
    if spec.gbp:
        kw["vxlan_gbp"] = True
    try:
        ipr.link("add", **kw)
    except Exception as exc:  # netlink errors carry only errno; say which device and why
        raise PodnetError(f"cannot create VXLAN device {spec.name} (vni {spec.vni}, port {spec.port}): {exc}") from exc
    idx = ipr.link_lookup(ifname=spec.name)[0]
    ipr.link("set", index=idx, state="up")
    return VxlanDevice(idx, ipr.link("get", index=idx)[0].get_attr("IFLA_ADDRESS"), reused=False)

