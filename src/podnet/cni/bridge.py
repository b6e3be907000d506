"""The bridge plugin: a veth pair from the container to a Linux bridge in the namespace the plugin runs in.

Behaves like the reference `bridge` (containernetworking/plugins v1.1.1): same config keys and
defaults, same result, same kernel state (bridge with the gateway address and a pinned MAC, veth
port, addresses and routes in the container, masquerade chains). Where the reference leaves a
half-done ADD behind or leaks rules on DEL, this one cleans up; see ipmasq.py and the ADD comments.
"""

from __future__ import annotations

import _socket as socket
import ipaddress
import os
import time

from podnet.cni import delegate, ipmasq, spec
from podnet.cni.spec import CniError, Request, internal
from podnet.net import nsfd
from podnet.net.rtnl import Link, NetlinkError, Rtnl

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~5 ms per pod at import
    from typing import Any

DEFAULT_BRIDGE = "cni0"
_PORT_UP_RETRIES_MS = (0, 50, 500, 1000, 1000)

_BOOL_KEYS = ("isGateway", "isDefaultGateway", "forceAddress", "ipMasq", "hairpinMode", "promiscMode",
              "enabledad", "macspoofchk")


class NetConf:
    def __init__(self, conf: dict[str, Any], cni_args: str) -> None:
        for k in _BOOL_KEYS:
            if k in conf and conf[k] is not None and not isinstance(conf[k], bool):
                raise internal(f"failed to load netconf: json: cannot unmarshal {_kind(conf[k])} into Go struct "
                               f"field NetConf.{k} of type bool")
        for k in ("bridge",):
            if k in conf and conf[k] is not None and not isinstance(conf[k], str):
                raise internal(f"failed to load netconf: json: cannot unmarshal {_kind(conf[k])} into Go struct "
                               f"field NetConf.{k} of type string")
        for k in ("mtu", "vlan"):
            if k in conf and conf[k] is not None and (isinstance(conf[k], bool) or not isinstance(conf[k], int)):
                raise internal(f"failed to load netconf: json: cannot unmarshal {_kind(conf[k])} into Go struct "
                               f"field NetConf.{k} of type int")
        ipam = conf.get("ipam")
        if ipam is not None and not isinstance(ipam, dict):
            raise internal(f"failed to load netconf: json: cannot unmarshal {_kind(ipam)} into Go struct "
                           "field NetConf.ipam of type types.IPAM")
        self.name: str = conf["name"]
        self.bridge: str = conf.get("bridge") or DEFAULT_BRIDGE
        self.is_default_gw = bool(conf.get("isDefaultGateway"))
        self.is_gw = bool(conf.get("isGateway")) or self.is_default_gw
        self.force_address = bool(conf.get("forceAddress"))
        self.ip_masq = bool(conf.get("ipMasq"))
        self.mtu = int(conf.get("mtu") or 0)
        self.hairpin = bool(conf.get("hairpinMode"))
        self.promisc = bool(conf.get("promiscMode"))
        self.enable_dad = bool(conf.get("enabledad"))
        ipam_type = (ipam or {}).get("type")
        if ipam_type is not None and not isinstance(ipam_type, str):
            raise internal(f"failed to load netconf: json: cannot unmarshal {_kind(ipam_type)} into Go struct "
                           "field IPAM.ipam.type of type string")
        # Checked here, before any kernel work, so a bad delegate name half-applies nothing on any command.
        self.ipam_type: str = delegate.check_plugin_name(ipam_type) if ipam_type else ""
        self.dns = conf.get("dns") if isinstance(conf.get("dns"), dict) else {}
        vlan = int(conf.get("vlan") or 0)
        if vlan < 0 or vlan > 4094:
            raise internal(f"invalid VLAN ID {vlan} (must be between 0 and 4094)")
        if vlan:
            raise CniError(spec.ERR_UNSUPPORTED_FIELD, f"unsupported field vlan: {vlan}",
                           "podnet-bridge does not implement VLAN filtering")
        if conf.get("macspoofchk"):
            raise CniError(spec.ERR_UNSUPPORTED_FIELD, "unsupported field macspoofchk: true",
                           "podnet-bridge does not implement MAC spoof checking")
        if len(self.bridge.encode()) > spec.MAX_IFNAME or "/" in self.bridge or not self.bridge.strip():
            raise CniError(spec.ERR_INVALID_NETCONF, f"invalid bridge name {spec.go_quote(self.bridge)}")
        self.mac = spec.parse_cni_args(cni_args, ("MAC",)).get("MAC", "")
        args_mac = ((conf.get("args") or {}).get("cni") or {}).get("mac") if isinstance(conf.get("args"), dict) else ""
        if args_mac:
            self.mac = args_mac
        rt_conf = conf.get("runtimeConfig")
        rt = rt_conf if isinstance(rt_conf, dict) else {}
        if rt.get("mac"):
            self.mac = rt["mac"]
        if self.mac:
            parts = self.mac.split(":")
            if len(parts) != 6 or not all(len(p) == 2 and all(c in "0123456789abcdefABCDEF" for c in p) for p in parts):
                raise internal(f"invalid MAC address: {self.mac}")


def _kind(v: Any) -> str:
    return {bool: "bool", int: "number", float: "number", str: "string", list: "array", dict: "object"}.get(
        type(v), "value")


def _sysctl(path: str, value: str) -> None:
    """Best effort, as in the reference (it ignores these errors too)."""
    try:
        with open("/proc/sys/" + path, "w") as f:
            f.write(value)
    except OSError:
        pass


def _open_netns(path: str) -> int:
    try:
        return nsfd.open_netns(path)
    except nsfd.NetnsOpenError as e:
        raise internal(f"failed to open netns {spec.go_quote(path)}: {e}") from None


# ---------------------------------------------------------------------------------------------------
# host side


def _ensure_bridge(host: Rtnl, n: NetConf) -> tuple[Link, bool]:
    """Find or create the bridge; returns (link, created_now)."""
    created = False
    br = host.link_get(n.bridge)
    if br is None:
        try:
            host.bridge_add(n.bridge, n.mtu)
            created = True
        except NetlinkError as e:
            if e.errno != 17:  # EEXIST: another ADD made it meanwhile
                raise internal(f"could not add {spec.go_quote(n.bridge)}: {e.strerror.lower()}") from None
        br = host.link_get(n.bridge)
        if br is None:
            raise internal(f"could not lookup {spec.go_quote(n.bridge)}: Link not found")
    if br.kind != "bridge":
        raise internal(f"{spec.go_quote(n.bridge)} already exists but is not a bridge")
    try:
        if n.promisc and not br.promiscuity:
            host.link_set(br.index, promisc=True)
        _sysctl(f"net/ipv6/conf/{n.bridge}/accept_ra", "0")
        if not br.up:
            host.link_set(br.index, up=True)
    except BaseException:
        if created:
            _drop_new_bridge(host, br)
        raise
    return br, created


def _make_veth(host: Rtnl, cont: Rtnl, cont_fd: int, ifname: str, n: NetConf) -> str:
    """Create ifname <-> veth%08x with the container end directly in the container's namespace."""
    for _ in range(10):
        host_name = "veth" + os.urandom(4).hex()
        try:
            host.veth_add(host_name, ifname, cont_fd, n.mtu, n.mac)
            return host_name
        except NetlinkError as e:
            if e.errno != 17:
                raise internal(f"failed to make veth pair: {e.strerror.lower()}") from None
            if cont.link_get(ifname) is not None:
                raise internal(f"container veth name provided ({ifname}) already exists") from None
    raise internal("failed to move veth to host netns: too many name collisions")


def _ensure_gateway_addr(host: Rtnl, br: Link, gw: ipaddress.IPv4Interface | ipaddress.IPv6Interface,
                         force: bool, name: str) -> None:
    fam = socket.AF_INET if gw.version == 4 else socket.AF_INET6
    want = f"{gw.ip}/{gw.network.prefixlen}"
    for a in host.addrs(br.index, fam):
        if fam == socket.AF_INET6 and a.scope != 0:
            continue
        have = ipaddress.ip_interface(f"{a.address}/{a.prefixlen}")
        if f"{have.ip}/{have.network.prefixlen}" == want:
            return
        if gw.version == 4 or gw.ip in have.network or have.ip in gw.network:
            if force:
                host.addr_del(br.index, a.address, a.prefixlen)
            else:
                raise internal(f"failed to set bridge addr: {spec.go_quote(name)} already has an IP address "
                               f"different from {want}")
    bcast = str(gw.network.broadcast_address) if gw.version == 4 and gw.network.prefixlen < 31 else None
    try:
        host.addr_add(br.index, str(gw.ip), gw.network.prefixlen, broadcast=bcast)
    except NetlinkError as e:
        if e.errno != 17:
            raise internal(f"failed to set bridge addr: could not add IP address to {spec.go_quote(name)}: "
                           f"{e.strerror.lower()}") from None
    # Pin the bridge MAC: otherwise it follows the lowest port MAC and changes as pods come and go.
    cur = host.link_get(index=br.index)
    if cur is not None:
        host.link_set(br.index, mac=cur.mac)


# ---------------------------------------------------------------------------------------------------
# commands


def add(req: Request) -> dict[str, Any]:
    n = NetConf(req.conf, req.args)
    if n.hairpin and n.promisc:
        raise internal("cannot set hairpin mode and promiscuous mode at the same time.")
    # Open the netns first: a bad CNI_NETNS must not leave a bridge behind.
    cont_fd = _open_netns(req.netns)
    own = nsfd.current_fd()
    try:
        if nsfd.same_netns(cont_fd, own):
            os.close(cont_fd)
            raise CniError(spec.ERR_INVALID_NETNS, "netns is the plugin's own network namespace", req.netns)
    finally:
        os.close(own)
    host = Rtnl()
    try:
        with nsfd.entered(cont_fd):
            cont = Rtnl()
        try:
            return _add(req, n, host, cont, cont_fd)
        finally:
            cont.close()
    finally:
        host.close()
        os.close(cont_fd)


def _add(req: Request, n: NetConf, host: Rtnl, cont: Rtnl, cont_fd: int) -> dict[str, Any]:
    if cont.link_get(req.ifname) is not None:
        raise internal(f"container veth name provided ({req.ifname}) already exists")
    br, br_created = _ensure_bridge(host, n)
    host_veth = ""
    ipam_done = False
    masq: list[str] = []
    masq_pending: ipmasq.Pending | None = None
    try:
        host_veth = _make_veth(host, cont, cont_fd, req.ifname, n)
        hv = host.link_get(host_veth)
        cv = cont.link_get(req.ifname)
        if hv is None or cv is None:
            raise internal(f"failed to lookup {spec.go_quote(host_veth)}")
        host.link_set(hv.index, up=True, master=br.index)
        _sysctl(f"net/ipv6/conf/{host_veth}/accept_ra", "0")
        if n.hairpin:
            host.brport_hairpin(hv.index, True)
        cont.link_set(cv.index, up=True)
        res: dict[str, Any] = {"interfaces": [
            {"name": n.bridge, "mac": br.mac},
            {"name": host_veth, "mac": hv.mac},
            {"name": req.ifname, "mac": cv.mac, "sandbox": req.netns},
        ], "ips": [], "routes": [], "dns": {}}
        if n.ipam_type:
            ipam = delegate.call(n.ipam_type, "ADD", req.stdin, req.env)
            ipam_done = True
            assert ipam is not None
            res["ips"], res["routes"], res["dns"] = ipam["ips"], ipam["routes"], ipam["dns"]
            if not res["ips"]:
                raise internal("IPAM plugin returned missing IP config")
            gws = _calc_gateways(res, n)  # parses every address, so a bad one fails before masquerading
            if n.ip_masq:
                # iptables-restore runs while the addresses, routes and gateway go in; waited for below
                masq = [ip["address"] for ip in res["ips"]]
                masq_pending = ipmasq.start_setup(masq, n.name, req.container_id)
            with nsfd.entered(cont_fd):
                if not n.enable_dad:
                    _sysctl(f"net/ipv6/conf/{req.ifname}/accept_dad", "0")
                _sysctl(f"net/ipv4/conf/{req.ifname}/arp_notify", "1")
            _configure_iface(cont, cv, req.ifname, res)
            _wait_port_up(host, host_veth)
            if n.is_gw:
                for fam in (4, 6):
                    fam_gws = [g for g in gws if g.version == fam]
                    for g in fam_gws:
                        _ensure_gateway_addr(host, br, g, n.force_address, n.bridge)
                    if fam_gws:
                        _sysctl("net/ipv4/ip_forward" if fam == 4 else "net/ipv6/conf/all/forwarding", "1")
            if masq_pending is not None:
                pending, masq_pending = masq_pending, None
                pending.wait()
        # The bridge MAC can change when the first port joins or an address is set: read it last.
        br_now = host.link_get(index=br.index)
        if br_now is not None:
            res["interfaces"][0]["mac"] = br_now.mac
        if n.dns:
            res["dns"] = n.dns
        spec.check_result_version(res, req.version)
        return spec.render_result(res, req.version)
    except BaseException:
        # Leave nothing half-applied: release the address, remove the pair (and a bridge made just now).
        if masq_pending is not None:
            masq_pending.reap()  # whatever it did is undone below, so it must have finished first
        if ipam_done:
            try:
                delegate.call(n.ipam_type, "DEL", req.stdin, req.env)
            except CniError:
                pass
        if host_veth:
            _quiet_del(host, host_veth)
            _quiet_del(cont, req.ifname)
        if masq:
            try:
                ipmasq.teardown(masq, n.name, req.container_id)
            except CniError:
                pass
        if br_created:
            _drop_new_bridge(host, br)
        raise


def _drop_new_bridge(host: Rtnl, br: Link) -> None:
    """Remove a bridge this failed ADD created, unless another pod joined it meanwhile (ADDs of different
    pods run concurrently). Our own port may take a moment to leave under load: look a few times."""
    for attempt in range(5):
        try:
            if not any(link.master == br.index for link in host.links()):
                host.link_del(br.index)
                return
        except NetlinkError:
            return
        time.sleep(0.02 * (attempt + 1))


def _quiet_del(r: Rtnl, name: str) -> None:
    try:
        link = r.link_get(name)
        if link is not None:
            r.link_del(link.index)
    except NetlinkError:
        pass


def _calc_gateways(res: dict[str, Any], n: NetConf) -> list[ipaddress.IPv4Interface | ipaddress.IPv6Interface]:
    gws: list[ipaddress.IPv4Interface | ipaddress.IPv6Interface] = []
    default_found = {4: False, 6: False}
    for ipc in res["ips"]:
        addr = ipaddress.ip_interface(ipc["address"])
        ipc["interface"] = 2
        if not ipc.get("gateway") and n.is_gw:
            ipc["gateway"] = str(addr.network.network_address + 1)
        fam = addr.version
        if n.is_default_gw and not default_found[fam]:
            default = "0.0.0.0/0" if fam == 4 else "::/0"
            for r in res["routes"]:
                if r.get("gw") and _norm_cidr(r["dst"]) == default:
                    default_found[fam] = True
                    break
            if not default_found[fam]:
                route = {"dst": default}
                if ipc.get("gateway"):
                    route["gw"] = ipc["gateway"]
                res["routes"].append(route)
                default_found[fam] = True
        if n.is_gw:
            gws.append(ipaddress.ip_interface(f"{ipc['gateway']}/{addr.network.prefixlen}"))
    return gws


def _norm_cidr(c: str) -> str:
    i = ipaddress.ip_interface(c)
    return f"{i.network.network_address}/{i.network.prefixlen}"


def _configure_iface(cont: Rtnl, cv: Link, ifname: str, res: dict[str, Any]) -> None:
    v4gw = v6gw = None
    for ipc in res["ips"]:
        if ipc.get("interface") is None:
            continue
        addr = ipaddress.ip_interface(ipc["address"])
        bcast = str(addr.network.broadcast_address) if addr.version == 4 and addr.network.prefixlen < 31 else None
        try:
            cont.addr_add(cv.index, str(addr.ip), addr.network.prefixlen, broadcast=bcast)
        except NetlinkError as e:
            raise internal(f"failed to add IP addr {ipc['address']} to {spec.go_quote(ifname)}: "
                           f"{e.strerror.lower()}") from None
        gw = ipc.get("gateway")
        if gw:
            if ":" in gw and v6gw is None:
                v6gw = gw
            elif ":" not in gw and v4gw is None:
                v4gw = gw
    for r in res["routes"]:
        dst = ipaddress.ip_interface(r["dst"])
        gw = r.get("gw") or (v4gw if dst.version == 4 else v6gw)
        try:
            cont.route_add(str(dst.network.network_address), dst.network.prefixlen, cv.index, gw)
        except NetlinkError as e:
            raise internal(f"failed to add route '{_go_ipnet_value(dst)} via {gw or '<nil>'} dev {ifname}': "
                           f"{e.strerror.lower()}") from None


def _wait_port_up(host: Rtnl, name: str) -> None:
    link = None
    for ms in _PORT_UP_RETRIES_MS:
        if ms:
            time.sleep(ms / 1000)
        link = host.link_get(name)
        if link is None:
            raise internal(f"Link not found: {name}")
        if link.oper_name == "up":
            return
    raise internal(f"bridge port in error state: {link.oper_name if link else 'unknown'}")


def delete(req: Request) -> None:
    n = NetConf(req.conf, req.args)
    prev_cidrs = _prev_cidrs(req.conf, req.ifname)

    def ipam_del() -> None:
        if n.ipam_type:
            delegate.call(n.ipam_type, "DEL", req.stdin, req.env)

    if not req.netns or not os.path.exists(req.netns):
        # The netns is gone, so is every attachment of this container: release all of its state.
        ipam_del()
        if n.ip_masq:
            ipmasq.teardown(None, n.name, req.container_id)
        return None
    cont_fd = _open_netns(req.netns)
    masq: ipmasq.Pending | None = None
    try:
        try:
            with nsfd.entered(cont_fd):
                cont = Rtnl()
            try:
                link, cidrs = _link_cidrs(cont, req.ifname)
                # The link's own addresses say what to undo; if they were already gone, prevResult still
                # knows. The restore runs while the kernel takes the veth pair down (the slow part of DEL).
                todo = cidrs or prev_cidrs
                if n.ip_masq and todo:
                    masq = ipmasq.start_teardown(todo, n.name, req.container_id)
                if link is not None:
                    _del_link(cont, link, req.ifname)
            finally:
                cont.close()
        finally:
            os.close(cont_fd)
        ipam_del()
    except BaseException:
        if masq is not None:
            masq.reap()
        raise
    if masq is not None:
        masq.wait()
    return None


def _prev_cidrs(conf: dict[str, Any], ifname: str) -> list[str]:
    prev = conf.get("prevResult")
    if not isinstance(prev, dict):
        return []
    try:
        res = spec.parse_result(prev)
    except (CniError, KeyError, TypeError):
        return []
    ifaces = res["interfaces"]
    out = []
    for ip in res["ips"]:
        idx = ip.get("interface")
        if isinstance(idx, int) and 0 <= idx < len(ifaces) and ifaces[idx].get("name") != ifname:
            continue
        out.append(ip["address"])
    return out


def _link_cidrs(cont: Rtnl, ifname: str) -> tuple[Link | None, list[str]]:
    link = cont.link_get(ifname)
    if link is None:
        return None, []
    return link, [f"{a.address}/{a.prefixlen}" for a in cont.addrs(link.index) if a.scope == 0]


def _del_link(cont: Rtnl, link: Link, ifname: str) -> None:
    try:
        cont.link_del(link.index)
    except NetlinkError as e:
        if e.errno != 19:
            raise internal(f"failed to delete {spec.go_quote(ifname)}: {e.strerror.lower()}") from None


def check(req: Request) -> None:
    n = NetConf(req.conf, req.args)
    cont_fd = _open_netns(req.netns)
    try:
        if n.ipam_type:
            delegate.call(n.ipam_type, "CHECK", req.stdin, req.env)
        prev = req.conf.get("prevResult")
        if prev is None:
            raise internal("Required prevResult missing")
        res = spec.parse_result(prev)
        with nsfd.entered(cont_fd):
            cont = Rtnl()
        host = Rtnl()
        try:
            _check(req, n, res, host, cont)
        finally:
            cont.close()
            host.close()
    finally:
        os.close(cont_fd)
    return None


def _check(req: Request, n: NetConf, res: dict[str, Any], host: Rtnl, cont: Rtnl) -> None:
    br_map: dict[str, Any] = {}
    cont_map: dict[str, Any] = {}
    for intf in res["interfaces"]:
        if intf.get("name") == n.bridge:
            br_map = intf
        elif intf.get("name") == req.ifname and intf.get("sandbox") == req.netns:
            cont_map = intf
    # bridge
    if not br_map.get("name"):
        raise internal("Interface name missing ")
    br = host.link_get(br_map["name"])
    if br is None:
        raise internal(f"Interface name {br_map['name']} not found")
    if br_map.get("sandbox"):
        raise internal(f"Interface {br_map['name']} should not be in sandbox")
    if br.kind != "bridge":
        raise internal(f"Error: Container interface {br.name} not of type bridge")
    if br_map.get("mac") and br_map["mac"] != br.mac:
        raise internal(f"Bridge interface {br_map['name']} Mac {br_map['mac']} doesn't match: {br.mac}")
    if bool(br.promiscuity) != n.promisc:
        raise internal(f"Bridge interface {br_map['name']} configured Promisc Mode {str(n.promisc).lower()} "
                       f"doesn't match current state: {str(bool(br.promiscuity)).lower()} ")
    if req.netns != cont_map.get("sandbox", ""):
        raise internal(f"Sandbox in prevResult {cont_map.get('sandbox', '')} doesn't match configured netns: "
                       f"{req.netns}")
    # container end
    cv = cont.link_get(cont_map["name"])
    if cv is None:
        raise internal(f"Interface name {cont_map['name']} not found")
    if cv.kind != "veth":
        raise internal(f"Error: Container interface {cv.name} not of type veth")
    if cont_map.get("mac") and cont_map["mac"] != cv.mac:
        raise internal(f"Interface {cont_map['name']} Mac {cont_map['mac']} doesn't match container Mac: {cv.mac}")
    # host end: the veth whose peer is the container end, enslaved to the bridge
    found = False
    for intf in res["interfaces"]:
        if intf.get("name") in (n.bridge, cont_map["name"]):
            continue
        hv = host.link_get(intf.get("name") or "")
        if hv is None or hv.kind != "veth":
            continue
        if hv.index != cv.peer_index or cv.index != hv.peer_index or hv.master != br.index:
            continue
        if intf.get("mac") and intf["mac"] != hv.mac:
            raise internal(f"Interface {intf['name']} Mac {intf['mac']} doesn't match: {hv.mac} not found")
        found = True
        break
    if not found:
        raise internal(f"CNI veth created for bridge {n.bridge} was not found")
    # addresses and routes in the container
    have = {(a.address, a.prefixlen) for a in cont.addrs(cv.index)}
    for ipc in res["ips"]:
        addr = ipaddress.ip_interface(ipc["address"])
        if (str(addr.ip), addr.network.prefixlen) not in have:
            raise internal(f"Failed to match addr {ipc['address']} on interface {req.ifname}")
    routes = cont.routes(socket.AF_INET) + cont.routes(socket.AF_INET6)
    main = [(r.dst, r.dst_len) for r in routes if r.table == 254]
    for ipc in res["ips"]:
        net = ipaddress.ip_interface(ipc["address"]).network
        if (str(net.network_address), net.prefixlen) not in main:
            raise internal(f"Failed to find Gateway {ipc.get('gateway', '<nil>')} for interface {req.ifname}")
    for r in res["routes"]:
        dst = ipaddress.ip_interface(r["dst"]).network
        key = (None, 0) if dst.prefixlen == 0 else (str(dst.network_address), dst.prefixlen)
        if key not in main:
            raise internal(f"Expected Route {_go_route(r)} not found in routing table")


def _go_ipnet_value(dst: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> str:
    """Go's %v of a net.IPNet value as the reference prints it: {IP maskhex}, v4 masks in 16-byte form."""
    mask = dst.network.netmask.packed.hex()
    if dst.version == 4:
        mask = "00000000000000000000ffff" + mask
    return f"{{{dst.ip} {mask}}}"


def _go_route(r: dict[str, Any]) -> str:
    """A route as the reference prints it in messages (Go's %+v of types.Route)."""
    dst = ipaddress.ip_interface(r["dst"])
    mask = dst.network.netmask.packed.hex()
    return f"{{Dst:{{IP:{dst.ip} Mask:{mask}}} GW:{r.get('gw') or '<nil>'}}}"


def gc(req: Request) -> None:
    """Forward GC to IPAM, then drop the masquerade chains of containers that are no longer attached."""
    n = NetConf(req.conf, req.args)
    valid = spec.gc_valid_attachments(req.conf)
    errors = []
    if n.ipam_type:
        try:
            delegate.call(n.ipam_type, "GC", req.stdin, req.env)
        except CniError as e:
            errors.append(e.msg)
    errors += ipmasq.gc(n.name, {cid for cid, _ in valid})
    if errors:
        raise internal("; ".join(errors))
    return None


def status(req: Request) -> None:
    n = NetConf(req.conf, req.args)
    if n.ipam_type:
        delegate.call(n.ipam_type, "STATUS", req.stdin, req.env)
    return None
