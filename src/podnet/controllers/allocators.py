"""ClusterIP and NodePort allocation: which value a service gets, and whether an explicit one is allowed.

The allocators here are pure: they see the current allocations (read from the store under
keys.ALLOC_CLUSTER_IP_PREFIX / ALLOC_NODE_PORT_PREFIX, value = owner `Service/ns/name`) and answer.
Atomicity comes from the caller (controllers/apply.py): it writes each new allocation key with
only-if-absent in the same commit as the Service, so two processes that pick the same value cannot both
succeed, and a failed apply leaves no allocation behind. The loser re-reads and picks again.

Like Kubernetes (KEP-3070 for ClusterIPs, KEP-3668 for NodePorts), values are chosen at random, and
dynamic allocation prefers the upper part of the range so that the lower "static band" stays free for
explicit requests. The usable ClusterIP range excludes the network and broadcast addresses, as the API
server's allocator does; the first address (10.96.0.1 by default) is left out of dynamic allocation
because a real cluster gives it to the `kubernetes` service, so podnet's addresses look like a cluster's
(it can still be requested explicitly).

A dual-stack cluster has two service CIDRs, one per IP family (kube-apiserver's
`--service-cluster-ip-range=10.96.0.0/12,fd00:10:96::/112`): the first one's family is the cluster's
default, and the planner keeps one ClusterIPAllocator per family.
"""

from __future__ import annotations

import ipaddress
import os
import random
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from podnet.errors import AllocationError, Problem, ValidationError

DEFAULT_SERVICE_CIDR = "10.96.0.0/12"
DEFAULT_NODE_PORT_RANGE = (30000, 32767)
_MAX_SCAN = 1 << 24  # an IPv6 service CIDR is huge: only this much of it is ever considered


def parse_port_range(text: str) -> tuple[int, int]:
    """`30000-32767` (inclusive, as --service-node-port-range). Raises ValueError with a reason."""
    low_s, sep, high_s = text.partition("-")
    try:
        low, high = int(low_s), int(high_s if sep else low_s)
    except ValueError:
        raise ValueError(f"{text!r}: expected FIRST-LAST, e.g. 30000-32767") from None
    if not 1 <= low <= high <= 65535:
        raise ValueError(f"{text!r}: ports must satisfy 1 <= first <= last <= 65535")
    return low, high


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def family_of_network(net: Network) -> str:
    return "IPv6" if net.version == 6 else "IPv4"


@dataclass(frozen=True)
class AllocatorConfig:
    """The cluster's allocation ranges (kube-apiserver's --service-cluster-ip-range and
    --service-node-port-range). Every writer must use the same values: the CLI reads them from options
    or the PODNET_SERVICE_CIDR / PODNET_NODE_PORT_RANGE environment.

    service_cidr is one CIDR or two of different families, comma-separated (dual-stack); it is kept in
    canonical form, and `cidrs` / `families` give them parsed, the default family first."""

    service_cidr: str = DEFAULT_SERVICE_CIDR
    node_port_range: tuple[int, int] = DEFAULT_NODE_PORT_RANGE

    def __post_init__(self) -> None:
        nets = check_service_cidrs(self.service_cidr)
        object.__setattr__(self, "service_cidr", ",".join(map(str, nets)))
        low, high = self.node_port_range
        if not 1 <= low <= high <= 65535:
            raise ValueError(f"node port range {low}-{high}: ports must satisfy 1 <= first <= last <= 65535")

    @property
    def cidrs(self) -> tuple[Network, ...]:
        return tuple(ipaddress.ip_network(c) for c in self.service_cidr.split(","))

    @property
    def families(self) -> tuple[str, ...]:
        """The IP families services can have here, the cluster's default (the first CIDR's) first."""
        return tuple(family_of_network(n) for n in self.cidrs)

    def cidr_of(self, family: str) -> Network | None:
        return next((n for n in self.cidrs if family_of_network(n) == family), None)

    @classmethod
    def from_env(cls, service_cidr: str | None = None, node_port_range: str | None = None) -> AllocatorConfig:
        """From the --service-cidr / --node-port-range options, else the environment. A bad service CIDR
        raises ValidationError naming where it came from; a bad port range, ValueError."""
        if service_cidr:
            check_service_cidrs(service_cidr, "--service-cidr")
        elif os.environ.get("PODNET_SERVICE_CIDR"):
            check_service_cidrs(os.environ["PODNET_SERVICE_CIDR"], "PODNET_SERVICE_CIDR")
        cidr = service_cidr or os.environ.get("PODNET_SERVICE_CIDR") or DEFAULT_SERVICE_CIDR
        ports = node_port_range or os.environ.get("PODNET_NODE_PORT_RANGE")
        return cls(cidr, parse_port_range(ports) if ports else DEFAULT_NODE_PORT_RANGE)


# Ranges a service CIDR may not touch: an address from them is no usable virtual IP. 0/8 holds the
# unspecified address ("this network": a ClusterIP 0.x.y.z is refused or misrouted by every stack),
# 127/8 is loopback (rules on such a VIP capture the node's own localhost traffic), 169.254/16 is
# link-local (cloud metadata, node-local DNS caches), 224/4 is multicast and 240/4 is reserved, which
# holds the limited broadcast 255.255.255.255.
FORBIDDEN_SERVICE_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (ipaddress.IPv4Network("0.0.0.0/8"), "the unspecified range 0.0.0.0/8"),
    (ipaddress.IPv4Network("127.0.0.0/8"), "the loopback range 127.0.0.0/8"),
    (ipaddress.IPv4Network("169.254.0.0/16"), "the link-local range 169.254.0.0/16"),
    (ipaddress.IPv4Network("224.0.0.0/4"), "the multicast range 224.0.0.0/4"),
    (ipaddress.IPv4Network("240.0.0.0/4"), "the reserved range 240.0.0.0/4 (with the broadcast address)"),
)


# The IPv6 ranges that cannot hold service IPs: the unspecified address (every CIDR that holds the
# loopback ::1 holds it too, as a service CIDR is at least a /126), IPv4-mapped addresses (a packet to one
# is IPv4 on the wire), link-local and multicast.
FORBIDDEN_SERVICE_RANGES_V6: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (ipaddress.IPv6Network("::/128"), "the unspecified address :: (and the loopback ::1)"),
    (ipaddress.IPv6Network("::ffff:0:0/96"), "the IPv4-mapped range ::ffff:0:0/96"),
    (ipaddress.IPv6Network("fe80::/10"), "the link-local range fe80::/10"),
    (ipaddress.IPv6Network("ff00::/8"), "the multicast range ff00::/8"),
)
# kube-apiserver refuses an IPv6 service range of more than 2^20 addresses (its allocator is a bitmap)
MAX_V6_HOST_BITS = 20


def check_service_cidr(text: str, field: str = "serviceCIDR") -> Network:
    """The one check of a service CIDR, wherever one is accepted (options, environment, config).
    Raises ValidationError naming the field and the value."""
    def bad(reason: str) -> ValidationError:
        return ValidationError([Problem(field, text, reason)])

    try:
        net = ipaddress.ip_network(text.strip() if isinstance(text, str) else text, strict=False)
    except (ValueError, TypeError):
        raise bad("not a CIDR (like 10.96.0.0/12 or fd00:10:96::/112)") from None
    if "/" not in str(text):
        raise bad("not a CIDR: no prefix length (like 10.96.0.0/12)")
    if isinstance(net, ipaddress.IPv4Network):
        if net.prefixlen > 30:
            raise bad("too small (at most /30 for IPv4)")
        forbidden: tuple[tuple[Network, str], ...] = FORBIDDEN_SERVICE_RANGES
    else:
        if net.prefixlen > 126:
            raise bad("too small (at most /126 for IPv6)")
        if net.prefixlen < 128 - MAX_V6_HOST_BITS:
            raise bad(f"too large (at least /{128 - MAX_V6_HOST_BITS} for IPv6, as kube-apiserver)")
        forbidden = FORBIDDEN_SERVICE_RANGES_V6
    for bad_net, what in forbidden:
        if net.overlaps(bad_net):  # same family by construction
            raise bad(f"overlaps {what}: its addresses cannot be service IPs")
    return net


def check_service_cidrs(text: str, field: str = "serviceCIDR") -> tuple[Network, ...]:
    """One service CIDR, or two of different families separated by a comma (a dual-stack cluster, the
    first one's family its default), each checked by check_service_cidr. Raises ValidationError."""
    if not isinstance(text, str):
        raise ValidationError([Problem(field, text, "not a CIDR (like 10.96.0.0/12)")])
    parts = [p.strip() for p in text.split(",")]
    if len(parts) > 2:
        raise ValidationError([Problem(field, text, "at most two CIDRs, one per IP family (dual-stack)")])
    nets = tuple(check_service_cidr(p, field if len(parts) == 1 else f"{field}[{i}]") for i, p in enumerate(parts))
    if len(nets) == 2 and nets[0].version == nets[1].version:
        raise ValidationError([Problem(field, text, "two CIDRs must be of different IP families (one IPv4, "
                                                    "one IPv6)")])
    return nets


def _static_band(size: int, low: int, high: int, divisor: int) -> int:
    return min(max(low, size // divisor), high)


class LazyRecords(dict[int, str]):
    """offset -> owner, read record by record: `lookup(offset)` answers one, `load_all()` every record.

    An apply that allocates one value reads one or two records instead of all of them, so its cost does not
    grow with the number of services. Every offset a pick or a check looks at is read once; after
    MAX_TAKEN offsets turned out taken (a range that full is cheaper to read at once) the rest is loaded.
    Values taken by this plan win over what is read.
    """

    MAX_TAKEN = 32

    def __init__(self, lookup: Callable[[int], str | None], load_all: Callable[[], Mapping[int, str]]) -> None:
        super().__init__()
        self._lookup, self._load_all = lookup, load_all
        self._absent: set[int] = set()
        self._mine: set[int] = set()  # offsets this plan took
        self._complete = False
        self._taken_seen = 0

    def _read(self, off: int) -> None:
        if self._complete or off in self._absent or dict.__contains__(self, off):
            return
        owner = self._lookup(off)
        if owner is None:
            self._absent.add(off)
            return
        dict.__setitem__(self, off, owner)
        self._taken_seen += 1
        if self._taken_seen > self.MAX_TAKEN:
            self._load()

    def _load(self) -> None:
        for off, owner in self._load_all().items():
            if off not in self._mine:
                dict.__setitem__(self, off, owner)
        self._complete = True

    def __contains__(self, off: object) -> bool:
        if isinstance(off, int):
            self._read(off)
        return dict.__contains__(self, off)

    def get(self, off: int, default: str | None = None) -> str | None:  # type: ignore[override]
        self._read(off)
        return dict.get(self, off, default)

    def __setitem__(self, off: int, owner: str) -> None:
        self._absent.discard(off)
        self._mine.add(off)
        dict.__setitem__(self, off, owner)

    def __len__(self) -> int:  # how many are allocated: only error messages ask, and need all of them
        if not self._complete:
            self._load()
        return dict.__len__(self)


class _Range:
    """Offsets [first, last] of a range; allocated maps offset -> owner."""

    def __init__(self, first: int, last: int, static: int, allocated: Mapping[int, str]) -> None:
        self.first, self.last, self.static = first, last, static
        self.allocated = allocated if isinstance(allocated, LazyRecords) else dict(allocated)

    def pick(self, rng: random.Random) -> int | None:
        """A free offset: random in the dynamic (upper) band, else in the static band, else None."""
        split = min(self.first + self.static, self.last + 1)
        for lo, hi in ((split, self.last), (self.first, split - 1)):
            if lo > hi:
                continue
            size = hi - lo + 1
            start = rng.randrange(size)
            for i in range(size):  # random start, then linear: the upstream bitmap allocator's walk
                off = lo + (start + i) % size
                if off not in self.allocated:
                    return off
        return None


class ClusterIPAllocator:
    def __init__(self, cidr: str, allocated: Mapping[str, str] | None = None, *,
                 lookup: Callable[[str], str | None] | None = None,
                 load_all: Callable[[], Mapping[str, str]] | None = None) -> None:
        """allocated: every record (ip -> owner); or lookup (ip -> owner or None) and load_all (every
        record, called only if needed), read lazily: see LazyRecords."""
        self.net = ipaddress.ip_network(cidr, strict=False)
        base = int(self.net.network_address)
        size = min(self.net.num_addresses, _MAX_SCAN)
        last = size - 2 if self.net.version == 4 else size - 1  # no broadcast in IPv6
        usable = last  # offsets 1..last

        def offsets(records: Mapping[str, str]) -> dict[int, str]:
            out: dict[int, str] = {}
            for ip, owner in records.items():
                try:
                    a = ipaddress.ip_address(ip)
                except ValueError:
                    continue
                if a in self.net:
                    out[int(a) - base] = owner
            return out

        taken: Mapping[int, str]
        if lookup is not None:
            taken = LazyRecords(lambda off: lookup(str(ipaddress.ip_address(base + off))),
                                lambda: offsets(load_all() if load_all is not None else {}))
        else:
            taken = offsets(allocated or {})
        # offset 1 (the `kubernetes` service's address) is never handed out dynamically
        first_dynamic = 2 if last >= 2 else 1
        self._range = _Range(first_dynamic, last, _static_band(usable, 16, 256, 16), taken)
        self._base = base
        self._last = last

    def check(self, ip: str, owner: str) -> str | None:
        """None if owner may have ip, else why not (Kubernetes' wording)."""
        try:
            a = ipaddress.ip_address(ip)
        except ValueError:
            return "must be a valid IP address"
        off = int(a) - self._base
        if a not in self.net or not 1 <= off <= self._last:
            return f"provided IP is not in the valid range. The range of valid IPs is {self.net}"
        holder = self._range.allocated.get(off)
        if holder is not None and holder != owner:
            return f"provided IP is already allocated (to {holder})"
        return None

    def take(self, ip: str, owner: str) -> None:
        self._range.allocated[int(ipaddress.ip_address(ip)) - self._base] = owner

    def allocate(self, owner: str, rng: random.Random, field: str = "spec.clusterIP") -> str:
        off = self._range.pick(rng)
        if off is None:
            raise AllocationError(
                f"{owner}: {field}: no free address left in the service CIDR {self.net} "
                f"({len(self._range.allocated)} allocated); delete a service or use a larger --service-cidr")
        self._range.allocated[off] = owner
        return str(ipaddress.ip_address(self._base + off))


class NodePortAllocator:
    def __init__(self, port_range: tuple[int, int], allocated: Mapping[int, str] | None = None, *,
                 lookup: Callable[[int], str | None] | None = None,
                 load_all: Callable[[], Mapping[int, str]] | None = None) -> None:
        """allocated: every record (port -> owner); or lookup and load_all, read lazily (LazyRecords)."""
        self.low, self.high = port_range
        size = self.high - self.low + 1
        records: Mapping[int, str] = (LazyRecords(lookup, load_all or (lambda: {})) if lookup is not None
                                      else dict(allocated or {}))
        self._range = _Range(self.low, self.high, _static_band(size, 16, 128, 32), records)

    def check(self, port: int, owner: str) -> str | None:
        if not self.low <= port <= self.high:
            return f"provided port is not in the valid range. The range of valid ports is {self.low}-{self.high}"
        holder = self._range.allocated.get(port)
        if holder is not None and holder != owner:
            return f"provided port is already allocated (to {holder})"
        return None

    def take(self, port: int, owner: str) -> None:
        self._range.allocated[port] = owner

    def allocate(self, owner: str, field: str, rng: random.Random) -> int:
        port = self._range.pick(rng)
        if port is None:
            raise AllocationError(
                f"{owner}: {field}: no free port left in the node port range {self.low}-{self.high}; "
                "delete a service or use a larger --node-port-range")
        self._range.allocated[port] = owner
        return port
