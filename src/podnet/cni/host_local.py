"""host-local IPAM: hand out addresses from configured ranges, state in plain files on this host.

Compatible with the reference plugin's on-disk store so the two can take over from each other:
`<dataDir>/<network>/<ip>` holds "<containerID>\\r\\n<ifname>", `last_reserved_ip.<rangeSetIndex>`
remembers where round-robin continues, and `lock` is flock'ed around every read-modify-write, which is
what keeps concurrent ADDs from handing out one address twice (the O_EXCL create is the second guard).
"""

from __future__ import annotations

import fcntl
import ipaddress
import os

from podnet.cni import spec
from podnet.cni.spec import CniError, Request, internal

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~5 ms per pod at import, collections.abc ~2 ms
    from collections.abc import Iterator
    from typing import Any

DEFAULT_DATA_DIR = "/var/lib/cni/networks"
LAST_IP_PREFIX = "last_reserved_ip."
LINE_BREAK = "\r\n"

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


# ---------------------------------------------------------------------------------------------------
# Configuration


def _ip(v: Any) -> IPAddress:
    try:
        if not isinstance(v, str):
            raise ValueError
        return ipaddress.ip_address(v)
    except ValueError:
        raise internal(f"invalid IP address: {v}") from None


def _cidr(v: Any) -> ipaddress.IPv4Interface | ipaddress.IPv6Interface:
    """A CIDR as written (host bits kept, so validation can complain about them)."""
    try:
        if not isinstance(v, str) or "/" not in v:
            raise ValueError
        return ipaddress.ip_interface(v)
    except ValueError:
        raise internal(f"invalid CIDR address: {v}") from None


def cidr_str(iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface) -> str:
    return f"{iface.ip}/{iface.network.prefixlen}"


class Range:
    __slots__ = ("subnet", "start", "end", "gateway")

    def __init__(self, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network, start: IPAddress, end: IPAddress,
                 gateway: IPAddress) -> None:
        self.subnet, self.start, self.end, self.gateway = subnet, start, end, gateway

    def contains(self, ip: IPAddress) -> bool:
        # ordered as integers: the version check makes that the address order, and mypy cannot see it
        return ip.version == self.subnet.version and ip in self.subnet and int(self.start) <= int(ip) <= int(self.end)

    def __str__(self) -> str:
        return f"{self.start}-{self.end}"


def _canonical_range(raw: Any) -> Range:
    if not isinstance(raw, dict):
        raise internal("json: cannot unmarshal range: not an object")
    sub = _cidr(raw.get("subnet"))
    net = sub.network
    if net.prefixlen > net.max_prefixlen - 2:
        raise internal(f"Network {cidr_str(sub)} too small to allocate from")
    if sub.ip != net.network_address:
        raise internal(f"Network has host bits set. For a subnet mask of length {net.prefixlen} "
                       f"the network address is {net.network_address}")
    gw = _ip(raw["gateway"]) if raw.get("gateway") else net.network_address + 1

    def inside(ip: IPAddress, lo: IPAddress | None, hi: IPAddress | None) -> bool:
        return (ip.version == net.version and ip in net and (lo is None or int(ip) >= int(lo))
                and (hi is None or int(ip) <= int(hi)))

    # As in the reference, each bound is checked against the range as it stands at that moment: the start
    # against a given end, the end against the (given or default) start.
    given_end = _ip(raw["rangeEnd"]) if raw.get("rangeEnd") else None
    if raw.get("rangeStart"):
        start = _ip(raw["rangeStart"])
        if not inside(start, None, given_end):
            raise internal(f"RangeStart {start} not in network {cidr_str(sub)}")
    else:
        start = net.network_address + 1
    if given_end is not None:
        end = given_end
        if not inside(end, start, None):
            raise internal(f"RangeEnd {end} not in network {cidr_str(sub)}")
    else:
        end = net.broadcast_address - 1 if net.version == 4 else net.broadcast_address
    return Range(net, start, end, gw)


def _overlaps(a: Range, b: Range) -> bool:
    return a.subnet.version == b.subnet.version and (
        a.contains(b.start) or a.contains(b.end) or b.contains(a.start) or b.contains(a.end))


def _canonical_rangeset(raw: Any) -> list[Range]:
    if not isinstance(raw, list) or not raw:
        raise internal("empty range set")
    rs = [_canonical_range(r) for r in raw]
    if len({r.start.version for r in rs}) > 1:
        raise internal("mixed address families")
    for i, a in enumerate(rs):
        for b in rs[i + 1 :]:
            if _overlaps(a, b):
                raise internal(f"subnets {a} and {b} overlap")
    return rs


def rangeset_str(rs: list[Range]) -> str:
    return ",".join(str(r) for r in rs)


class IpamConfig:
    __slots__ = ("name", "ranges", "routes", "data_dir", "requested", "resolv_conf")

    def __init__(self, name: str, ranges: list[list[Range]], routes: list[dict[str, str]], data_dir: str,
                 requested: list[IPAddress], resolv_conf: str) -> None:
        self.name, self.ranges, self.routes, self.data_dir = name, ranges, routes, data_dir
        self.requested, self.resolv_conf = requested, resolv_conf


def _route(r: Any) -> dict[str, str]:
    if not isinstance(r, dict):
        raise internal("json: cannot unmarshal route: not an object")
    out = {"dst": cidr_str(_cidr(r.get("dst")))}
    if r.get("gw"):
        out["gw"] = str(_ip(r["gw"]))
    return out


def _list(value: Any, field: str, go_type: str) -> list[Any]:
    """value if it is a JSON array (absent/null: empty), else Go's unmarshal error for the field."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise internal(f"failed to load netconf: json: cannot unmarshal {spec._json_kind(value)} into Go struct "
                       f"field {field} of type {go_type}")
    return value


def load_config(req: Request) -> IpamConfig:
    """The reference's LoadIPAMConfig: every source of ranges and requested IPs, validated."""
    conf = req.conf
    ipam = conf.get("ipam")
    if not isinstance(ipam, dict):
        raise internal("IPAM config missing 'ipam' key")
    requested: list[IPAddress] = []
    args = spec.parse_cni_args(req.args, ("IP",))
    if args.get("IP"):
        for item in args["IP"].split(","):
            try:
                requested.append(ipaddress.ip_address(item.strip()))
            except ValueError:
                raise internal(f"invalid IP {spec.go_quote(item.strip())}") from None
    cni_args = (conf.get("args") or {}).get("cni") if isinstance(conf.get("args"), dict) else None
    if isinstance(cni_args, dict) and cni_args.get("ips"):
        requested += [_ip(v) for v in _list(cni_args["ips"], "IPAMArgs.ips", "[]types.IP")]
    rt_conf = conf.get("runtimeConfig")
    rt = rt_conf if isinstance(rt_conf, dict) else {}
    if rt.get("ips"):
        requested += [_ip(v) for v in _list(rt["ips"], "IPAMRuntimeConfig.ips", "[]types.IP")]
    raw_ranges: list[Any] = list(_list(ipam.get("ranges"), "IPAMConfig.ipam.ranges", "[]allocator.RangeSet"))
    if ipam.get("subnet"):
        raw_ranges.insert(0, [{k: ipam.get(k) for k in ("subnet", "rangeStart", "rangeEnd", "gateway")}])
    if rt.get("ipRanges"):
        raw_ranges = list(_list(rt["ipRanges"], "IPAMRuntimeConfig.ipRanges", "[]allocator.RangeSet")) + raw_ranges
    if not raw_ranges:
        raise internal("no IP ranges specified")
    for rs in raw_ranges:  # unparseable addresses fail while decoding, before any range-set context
        for r in rs if isinstance(rs, list) else []:
            if isinstance(r, dict):
                _cidr(r.get("subnet"))
    ranges = []
    for i, raw in enumerate(raw_ranges):
        try:
            ranges.append(_canonical_rangeset(raw))
        except CniError as e:
            raise internal(f"invalid range set {i}: {e.msg}") from None
    fams = [rs[0].start.version for rs in ranges]
    if (fams.count(4) > 1 or fams.count(6) > 1) and spec.version_tuple(req.version) < (0, 3, 0):
        raise internal(f"CNI version {req.version} does not support more than 1 address per family")
    for i, a in enumerate(ranges):
        for j in range(i + 1, len(ranges)):
            if any(_overlaps(x, y) for x in a for y in ranges[j]):
                raise internal(f"range set {i} overlaps with {j}")
    routes = [_route(r) for r in _list(ipam.get("routes"), "IPAMConfig.ipam.routes", "[]*types.Route")]
    data_dir = ipam.get("dataDir") or DEFAULT_DATA_DIR
    if not isinstance(data_dir, str):
        raise internal("json: cannot unmarshal dataDir: not a string")
    return IpamConfig(conf["name"], ranges, routes, data_dir, requested, str(ipam.get("resolvConf") or ""))


# ---------------------------------------------------------------------------------------------------
# The disk store


class Store:
    """`<dataDir>/<network>/`: one file per reserved IP, last_reserved_ip.<n>, and the lock file."""

    def __init__(self, data_dir: str, network: str) -> None:
        self.dir = os.path.join(data_dir, network)
        os.makedirs(self.dir, mode=0o755, exist_ok=True)
        self._lock_fd = os.open(os.path.join(self.dir, "lock"), os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o750)

    def __enter__(self) -> Store:
        fcntl.flock(self._lock_fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._lock_fd, fcntl.LOCK_UN)

    def close(self) -> None:
        os.close(self._lock_fd)

    def reserve(self, cid: str, ifname: str, ip: IPAddress, range_id: int) -> bool:
        path = os.path.join(self.dir, str(ip))
        try:
            fd = os.open(path, os.O_RDWR | os.O_EXCL | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except FileExistsError:
            return False
        try:
            os.write(fd, (cid.strip() + LINE_BREAK + ifname).encode())
        except OSError:
            os.close(fd)
            os.unlink(path)
            raise
        os.close(fd)
        self._write(LAST_IP_PREFIX + str(range_id), str(ip))
        return True

    def _write(self, name: str, text: str) -> None:
        fd = os.open(os.path.join(self.dir, name), os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o644)
        try:
            os.write(fd, text.encode())
        finally:
            os.close(fd)

    def last_reserved(self, range_id: int) -> IPAddress | None:
        try:
            with open(os.path.join(self.dir, LAST_IP_PREFIX + str(range_id))) as f:
                return ipaddress.ip_address(f.read().strip())
        except (OSError, ValueError):
            return None

    def entries(self) -> list[tuple[str, str]]:
        """(file name, stripped contents) of every reservation file."""
        out = []
        for name in sorted(os.listdir(self.dir)):
            if name == "lock" or name.startswith(LAST_IP_PREFIX):
                continue
            try:
                with open(os.path.join(self.dir, name), "rb") as f:
                    out.append((name, f.read().decode(errors="replace").strip()))
            except OSError:
                continue
        return out

    def ips_of(self, cid: str, ifname: str) -> list[IPAddress]:
        match = cid.strip() + LINE_BREAK + ifname
        ips = []
        for name, data in self.entries():
            if data == match:
                try:
                    ips.append(ipaddress.ip_address(name))
                except ValueError:
                    pass
        return ips

    def has(self, cid: str, ifname: str) -> bool:
        match = cid.strip() + LINE_BREAK + ifname
        data = [d for _n, d in self.entries()]
        return match in data or cid.strip() in data

    def release(self, name: str) -> None:
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass

    def release_by_id(self, cid: str, ifname: str) -> None:
        match = cid.strip() + LINE_BREAK + ifname
        entries = self.entries()
        hits = [n for n, d in entries if d == match]
        if not hits:  # files from old versions hold only the container id
            hits = [n for n, d in entries if d == cid.strip()]
        for n in hits:
            self.release(n)


# ---------------------------------------------------------------------------------------------------
# Allocation


def _next_ip(ip: IPAddress) -> IPAddress:
    try:
        return ip + 1
    except ipaddress.AddressValueError:
        return type(ip)(0)


def _iterate(rs: list[Range], last: IPAddress | None) -> Iterator[tuple[IPAddress, Range]]:
    """Candidates in the reference's round-robin order: after `last` (or from rangeStart), across the
    ranges of the set, skipping gateways, until back at the first candidate."""
    cur: IPAddress | None
    first: IPAddress | None
    if last is not None and any(r.contains(last) for r in rs):
        idx = next(i for i, r in enumerate(rs) if r.contains(last))
        cur, first = last, None
    else:
        idx, cur, first = 0, None, rs[0].start
    while True:
        r = rs[idx]
        if cur is None:
            cur = first = r.start
        else:
            if cur == r.end:
                idx = (idx + 1) % len(rs)
                r = rs[idx]
                cur = r.start
            else:
                cur = _next_ip(cur)
            if first is None:
                first = cur
            elif cur == first:
                return
        if cur == r.gateway:
            continue
        yield cur, r


def allocate(store: Store, rs: list[Range], range_id: int, cid: str, ifname: str,
             requested: IPAddress | None) -> tuple[IPAddress, Range]:
    if requested is not None:
        r = next((x for x in rs if x.contains(requested)), None)
        if r is None:
            raise internal(f"{requested} not in range set {rangeset_str(rs)}")
        if requested == r.gateway:
            raise internal(f"requested ip {requested} is subnet's gateway")
        if not store.reserve(cid, ifname, requested, range_id):
            raise internal(f"requested IP address {requested} is not available in range set {rangeset_str(rs)}")
        return requested, r
    for ip in store.ips_of(cid, ifname):
        if any(x.contains(ip) for x in rs):
            raise internal(f"{ip} has been allocated to {cid}, duplicate allocation is not allowed")
    for ip, r in _iterate(rs, store.last_reserved(range_id)):
        if store.reserve(cid, ifname, ip, range_id):
            return ip, r
    raise internal(f"no IP addresses available in range set: {rangeset_str(rs)}")


def _parse_resolv_conf(path: str) -> dict[str, Any]:
    dns: dict[str, Any] = {}
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise internal(f"open {path}: {(e.strerror or '').lower()}") from None
    for line in lines:
        fields = line.split()
        if not fields or fields[0].startswith(("#", ";")):
            continue
        key, rest = fields[0], fields[1:]
        if key == "nameserver" and rest:
            dns.setdefault("nameservers", []).append(rest[0])
        elif key == "domain" and rest:
            dns["domain"] = rest[0]
        elif key == "search":
            dns["search"] = rest
        elif key == "options":
            dns.setdefault("options", []).extend(rest)
    return dns


# ---------------------------------------------------------------------------------------------------
# Commands


def add(req: Request) -> dict[str, Any]:
    cfg = load_config(req)
    dns = _parse_resolv_conf(cfg.resolv_conf) if cfg.resolv_conf else {}
    store = Store(cfg.data_dir, cfg.name)
    try:
        with store:
            pending = list(cfg.requested)
            done: list[int] = []
            ips = []
            for idx, rs in enumerate(cfg.ranges):
                want = next((ip for ip in pending if any(r.contains(ip) for r in rs)), None)
                if want is not None:
                    pending.remove(want)
                try:
                    ip, r = allocate(store, rs, idx, req.container_id, req.ifname, want)
                except CniError as e:
                    for _ in done:
                        store.release_by_id(req.container_id, req.ifname)
                    raise internal(f"failed to allocate for range {idx}: {e.msg}") from None
                done.append(idx)
                ips.append({"address": f"{ip}/{r.subnet.prefixlen}", "gateway": str(r.gateway)})
            if pending:
                store.release_by_id(req.container_id, req.ifname)
                raise internal("failed to allocate all requested IPs: " + " ".join(str(i) for i in pending))
    finally:
        store.close()
    res = {"interfaces": [], "ips": ips, "routes": cfg.routes, "dns": dns}
    spec.check_result_version(res, req.version)
    return spec.render_result(res, req.version)


def delete(req: Request) -> None:
    cfg = load_config(req)
    store = Store(cfg.data_dir, cfg.name)
    try:
        with store:
            store.release_by_id(req.container_id, req.ifname)
    finally:
        store.close()
    return None


def check(req: Request) -> None:
    cfg = load_config(req)
    store = Store(cfg.data_dir, cfg.name)
    try:
        with store:
            found = store.has(req.container_id, req.ifname)
    finally:
        store.close()
    if not found:
        raise internal(f"host-local: Failed to find address added by container {req.container_id}")
    return None


def gc(req: Request) -> None:
    """Release every reservation whose (containerID, ifname) is not in cni.dev/valid-attachments."""
    cfg = load_config(req)
    valid = spec.gc_valid_attachments(req.conf)
    valid_ids = {cid for cid, _ in valid}
    store = Store(cfg.data_dir, cfg.name)
    try:
        with store:
            for name, data in store.entries():
                cid, sep, ifname = data.partition(LINE_BREAK)
                keep = (cid, ifname) in valid if sep else cid in valid_ids
                if not keep:
                    store.release(name)
    finally:
        store.close()
    return None


def status(req: Request) -> None:
    """Ready when the config is valid and the store directory is writable."""
    cfg = load_config(req)
    probe = cfg.data_dir
    while not os.path.exists(probe) and os.path.dirname(probe) != probe:
        probe = os.path.dirname(probe)  # the first existing ancestor decides whether ADD could create it
    if not os.path.isdir(probe) or not os.access(probe, os.W_OK | os.X_OK):
        raise CniError(spec.ERR_NOT_AVAILABLE, "host-local: data directory not usable", cfg.data_dir)
    return None

