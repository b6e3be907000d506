"""flannel's network config (net-conf.json, stored at /coreos.com/network/config): parse, default, validate.

Parsing follows Go's encoding/json as flannel uses it, because operators bring their existing files:
key names match case-insensitively (`{"network": ...}` works), unknown keys are ignored, wrong JSON types
are errors. Defaults and limits are flannel's CheckNetworkConfig: SubnetLen 24 for networks of /22 or
larger, prefix+2 otherwise; the first subnet is skipped by default (SubnetMin = Network + one subnet).

Unlike flannel, every problem is reported at once, each naming its field and value, and a config that
fails validation is never half-used: callers get a NetConf or a ValidationError.

Kept flannel quirk: a config without "Backend" means the udp backend (flannel's code; its docs say vxlan,
see flannel issue #1221). podnet's udp backend works on every architecture, so the quirk costs nothing.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from podnet.errors import PodnetError, Problem, ValidationError

if TYPE_CHECKING:
    from podnet.store import Store

SUPPORTED_BACKENDS = ("vxlan", "host-gw", "udp")
# Backends flannel has that podnet does not implement: refused with a clearer message than "unknown".
FLANNEL_ONLY_BACKENDS = ("wireguard", "ipip", "ipsec", "alloc", "extension", "tencent-vpc")

# Backend options podnet understands, with their JSON type and allowed range (None = no bound).
_BACKEND_OPTIONS: dict[str, dict[str, tuple[type, int | None, int | None]]] = {
    "vxlan": {
        "VNI": (int, 0, (1 << 24) - 1),
        "Port": (int, 0, 65535),
        "MTU": (int, 0, 65535),
        "DirectRouting": (bool, None, None),
        "GBP": (bool, None, None),
        "Learning": (bool, None, None),
    },
    "udp": {"Port": (int, 0, 65535)},
    "host-gw": {},
}


@dataclass(frozen=True, slots=True)
class NetConf:
    """A validated network config with flannel's defaults filled in."""

    network: ipaddress.IPv4Network | None
    subnet_len: int
    subnet_min: ipaddress.IPv4Address | None
    subnet_max: ipaddress.IPv4Address | None
    backend_type: str
    backend: dict[str, Any] = field(default_factory=dict)  # the "Backend" object as given (for the backend)
    enable_ipv4: bool = True
    enable_ipv6: bool = False
    enable_nftables: bool = False
    ipv6_network: ipaddress.IPv6Network | None = None
    ipv6_subnet_len: int = 0
    ipv6_subnet_min: ipaddress.IPv6Address | None = None
    ipv6_subnet_max: ipaddress.IPv6Address | None = None

    def subnet_fits(self, subnet: ipaddress.IPv4Network) -> bool:
        """flannel's isSubnetConfigCompat: a lease is usable under this config (right size, in range)."""
        if self.network is None or self.subnet_min is None or self.subnet_max is None:
            return False
        return (
            subnet.prefixlen == self.subnet_len
            and self.subnet_min <= subnet.network_address <= self.subnet_max
        )

    def candidate_subnets(self) -> Iterator[ipaddress.IPv4Network]:
        """Every allocatable subnet, SubnetMin to SubnetMax in SubnetLen steps (flannel's walk order)."""
        assert self.subnet_min is not None and self.subnet_max is not None
        size = 1 << (32 - self.subnet_len)
        start, end = int(self.subnet_min), int(self.subnet_max)
        return (ipaddress.IPv4Network((ip, self.subnet_len)) for ip in range(start, end + 1, size))

    def subnet_v6_fits(self, subnet: ipaddress.IPv6Network) -> bool:
        """isSubnetConfigCompat's IPv6 half."""
        if self.ipv6_network is None or self.ipv6_subnet_min is None or self.ipv6_subnet_max is None:
            return False
        return (
            subnet.prefixlen == self.ipv6_subnet_len
            and self.ipv6_subnet_min <= subnet.network_address <= self.ipv6_subnet_max
        )

    def candidate_subnets_v6(self) -> Iterator[ipaddress.IPv6Network]:
        """Every allocatable IPv6 subnet, IPv6SubnetMin to IPv6SubnetMax in IPv6SubnetLen steps (lazily:
        a /56 of /64s is 256, a /48 65,536)."""
        assert self.ipv6_subnet_min is not None and self.ipv6_subnet_max is not None
        size = 1 << (128 - self.ipv6_subnet_len)
        start, end = int(self.ipv6_subnet_min), int(self.ipv6_subnet_max)
        return (ipaddress.IPv6Network((ip, self.ipv6_subnet_len)) for ip in range(start, end + 1, size))

    def subnet_count_v6(self) -> int:
        if self.ipv6_subnet_min is None or self.ipv6_subnet_max is None:
            return 0
        return (int(self.ipv6_subnet_max) - int(self.ipv6_subnet_min)) // (1 << (128 - self.ipv6_subnet_len)) + 1

    def subnet_count(self) -> int:
        if self.subnet_min is None or self.subnet_max is None:
            return 0
        return (int(self.subnet_max) - int(self.subnet_min)) // (1 << (32 - self.subnet_len)) + 1

    def summary(self) -> dict[str, Any]:
        """The effective config (defaults filled in) with flannel's field names, for `config get --effective`."""
        out: dict[str, Any] = {
            "Network": str(self.network) if self.network else None,
            "SubnetLen": self.subnet_len,
            "SubnetMin": str(self.subnet_min) if self.subnet_min else None,
            "SubnetMax": str(self.subnet_max) if self.subnet_max else None,
            "EnableIPv4": self.enable_ipv4,
            "EnableIPv6": self.enable_ipv6,
            "EnableNFTables": self.enable_nftables,
            "Backend": {**self.backend, "Type": self.backend_type},
        }
        if self.enable_ipv6:
            out.update(
                IPv6Network=str(self.ipv6_network), IPv6SubnetLen=self.ipv6_subnet_len,
                IPv6SubnetMin=str(self.ipv6_subnet_min), IPv6SubnetMax=str(self.ipv6_subnet_max),
            )
        return out


def _ci(obj: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """lower-case key -> (key as written, value); first spelling wins, like Go's decoder for distinct keys."""
    out: dict[str, tuple[str, Any]] = {}
    for k, v in obj.items():
        out.setdefault(k.lower(), (k, v))
    # An exact-case key wins over a case-insensitive match (Go prefers the exact field name).
    return out


class _Reader:
    """Typed, case-insensitive field access that records a Problem instead of raising."""

    def __init__(self, obj: dict[str, Any], problems: list[Problem], prefix: str = "") -> None:
        self.fields = _ci(obj)
        self.problems = problems
        self.prefix = prefix

    def raw(self, name: str) -> Any:
        hit = self.fields.get(name.lower())
        return None if hit is None else hit[1]

    def has(self, name: str) -> bool:
        return self.raw(name) is not None

    def bad(self, name: str, value: Any, reason: str) -> None:
        self.problems.append(Problem(f"{self.prefix}{name}", value, reason))

    def boolean(self, name: str, default: bool) -> bool:
        v = self.raw(name)
        if v is None:
            return default
        if not isinstance(v, bool):
            self.bad(name, v, "must be true or false")
            return default
        return v

    def uint(self, name: str, lo: int | None = 0, hi: int | None = None) -> int | None:
        v = self.raw(name)
        if v is None:
            return None
        if isinstance(v, bool) or not isinstance(v, int):
            self.bad(name, v, "must be a whole number")
            return None
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            self.bad(name, v, f"must be between {lo} and {hi}" if hi is not None else f"must be at least {lo}")
            return None
        return v

    def string(self, name: str) -> str | None:
        v = self.raw(name)
        if v is None:
            return None
        if not isinstance(v, str):
            self.bad(name, v, "must be a string")
            return None
        return v


def parse_netconf(data: bytes | str | dict[str, Any]) -> NetConf:
    """Parse and validate a net-conf (JSON text or an already-decoded object).

    Raises ValidationError with one Problem per wrong field (all of them, not just the first).
    """
    problems: list[Problem] = []
    if isinstance(data, dict):
        obj: Any = data
    else:
        try:
            obj = json.loads(data)
        except (ValueError, UnicodeDecodeError) as e:
            raise ValidationError([Problem("net-conf", None, f"not valid JSON: {e}")]) from e
    if not isinstance(obj, dict):
        raise ValidationError([Problem("net-conf", None, "must be a JSON object")])
    r = _Reader(obj, problems)

    enable_ipv4 = r.boolean("EnableIPv4", True)
    enable_ipv6 = r.boolean("EnableIPv6", False)
    enable_nftables = r.boolean("EnableNFTables", False)

    backend_type, backend = _parse_backend(r, problems)

    network = subnet_min = subnet_max = None
    subnet_len = 0
    if enable_ipv4:
        network, subnet_len, subnet_min, subnet_max = _check_v4(r)
    ipv6_network = ipv6_min = ipv6_max = None
    ipv6_len = 0
    if enable_ipv6:
        ipv6_network, ipv6_len, ipv6_min, ipv6_max = _check_v6(r)
    if not enable_ipv4 and not enable_ipv6:
        problems.append(Problem("EnableIPv4", False, "at least one of EnableIPv4 and EnableIPv6 must be true"))

    if problems:
        raise ValidationError(problems)
    return NetConf(
        network=network, subnet_len=subnet_len, subnet_min=subnet_min, subnet_max=subnet_max,
        backend_type=backend_type, backend=backend, enable_ipv4=enable_ipv4, enable_ipv6=enable_ipv6,
        enable_nftables=enable_nftables, ipv6_network=ipv6_network, ipv6_subnet_len=ipv6_len,
        ipv6_subnet_min=ipv6_min, ipv6_subnet_max=ipv6_max,
    )


def _parse_backend(r: _Reader, problems: list[Problem]) -> tuple[str, dict[str, Any]]:
    raw = r.raw("Backend")
    if raw is None:
        return "udp", {}  # flannel's parseBackendType: no Backend object means udp (see module docstring)
    if not isinstance(raw, dict):
        r.bad("Backend", raw, "must be a JSON object like {\"Type\": \"vxlan\"}")
        return "", {}
    b = _Reader(raw, problems, prefix="Backend.")
    type_value = b.raw("Type")
    if type_value is None or type_value == "":
        b.bad("Type", None, f"missing: unknown backend type (use one of {', '.join(SUPPORTED_BACKENDS)})")
        return "", raw
    if not isinstance(type_value, str):
        b.bad("Type", type_value, "must be a string")
        return "", raw
    kind = type_value.lower()
    if kind in FLANNEL_ONLY_BACKENDS:
        b.bad("Type", type_value, f"backend not supported by podnet (use one of {', '.join(SUPPORTED_BACKENDS)})")
        return kind, raw
    if kind not in SUPPORTED_BACKENDS:
        b.bad("Type", type_value, f"unknown backend type (use one of {', '.join(SUPPORTED_BACKENDS)})")
        return kind, raw
    values: dict[str, Any] = {}
    for name, (typ, lo, hi) in _BACKEND_OPTIONS[kind].items():
        values[name] = b.boolean(name, False) if typ is bool else b.uint(name, lo, hi)
    if kind == "vxlan":
        mtu = values["MTU"]
        if mtu is not None and 0 < mtu < 68 + 50:
            b.bad("MTU", mtu, "too small: the vxlan device MTU (MTU - 50) must be at least 68")
    return kind, raw


def _ip4(r: _Reader, name: str) -> ipaddress.IPv4Address | None:
    s = r.string(name)
    if s is None:
        return None
    try:
        return ipaddress.IPv4Address(s)
    except ValueError:
        r.bad(name, s, "not an IPv4 address")
        return None


def _check_v4(
    r: _Reader,
) -> tuple[ipaddress.IPv4Network | None, int, ipaddress.IPv4Address | None, ipaddress.IPv4Address | None]:
    raw = r.string("Network")
    if raw is None:
        if not r.has("Network"):
            r.bad("Network", None, "missing: please define a correct Network parameter (an IPv4 CIDR)")
        return None, 0, None, None
    try:
        # Go's ParseCIDR keeps the masked network: "10.244.1.0/16" means 10.244.0.0/16.
        network = ipaddress.IPv4Network(raw, strict=False)
        if "/" not in raw:
            raise ValueError("no prefix length")
    except ValueError:
        r.bad("Network", raw, _wrong_family(raw, 4) or "not an IPv4 CIDR (like 10.244.0.0/16)")
        given = r.uint("SubnetLen", 0, None)
        if given is not None and given > 30:
            r.bad("SubnetLen", given, "must be less than /31")
        return None, 0, None, None

    given_len = r.uint("SubnetLen", 0, None)
    plen = network.prefixlen
    subnet_len = 0
    if given_len:
        if given_len > 30:
            r.bad("SubnetLen", given_len, "must be less than /31")
        elif given_len < plen + 2:
            r.bad("SubnetLen", given_len, f"network {network} must be able to accommodate at least four subnets "
                  f"(SubnetLen must be at least /{plen + 2})")
        else:
            subnet_len = given_len
    elif plen > 28:
        r.bad("Network", raw, "network is too small. Minimum useful network prefix is /28")
    else:
        subnet_len = 24 if plen <= 22 else plen + 2
    if not subnet_len:
        return network, 0, None, None

    size = 1 << (32 - subnet_len)
    lo = ipaddress.IPv4Address(int(network.network_address) + size)
    hi = ipaddress.IPv4Address(int(network.broadcast_address) + 1 - size)
    subnet_min = _ip4(r, "SubnetMin")
    subnet_max = _ip4(r, "SubnetMax")
    ok = True
    for name, value in (("SubnetMin", subnet_min), ("SubnetMax", subnet_max)):
        if value is None:
            continue
        if value not in network:
            r.bad(name, str(value), f"not in the range of the Network {network}")
            ok = False
        elif int(value) % size:
            r.bad(name, str(value), f"not on a SubnetLen boundary (/{subnet_len})")
            ok = False
    subnet_min = subnet_min or lo
    subnet_max = subnet_max or hi
    if ok and subnet_min > subnet_max:
        r.bad("SubnetMin", str(subnet_min), f"is above SubnetMax {subnet_max}: no subnet to allocate")
    return network, subnet_len, subnet_min, subnet_max


def _wrong_family(raw: str, want: int) -> str | None:
    """The message for a CIDR of the other family in Network / IPv6Network, else None."""
    try:
        other = ipaddress.ip_network(raw, strict=False)
    except ValueError:
        return None
    if other.version == want:
        return None
    if want == 4:
        return ("not an IPv4 CIDR but an IPv6 one; Network takes the IPv4 one (an IPv6 pod network goes in IPv6Network with "
                "EnableIPv6: true, and EnableIPv4: false for IPv6-only)")
    return "not an IPv6 CIDR but an IPv4 one; IPv6Network takes the IPv6 one (the IPv4 pod network goes in Network)"


def _check_v6(
    r: _Reader,
) -> tuple[ipaddress.IPv6Network | None, int, ipaddress.IPv6Address | None, ipaddress.IPv6Address | None]:
    raw = r.string("IPv6Network")
    if raw is None:
        if not r.has("IPv6Network"):
            r.bad("IPv6Network", None, "missing: please define a correct IPv6Network parameter (an IPv6 CIDR)")
        return None, 0, None, None
    try:
        network = ipaddress.IPv6Network(raw, strict=False)
        if "/" not in raw:
            raise ValueError("no prefix length")
    except ValueError:
        r.bad("IPv6Network", raw, _wrong_family(raw, 6) or "not an IPv6 CIDR (like fc00::/48)")
        return None, 0, None, None
    given_len = r.uint("IPv6SubnetLen", 0, None)
    plen = network.prefixlen
    subnet_len = 0
    if given_len:
        if given_len > 126:
            r.bad("IPv6SubnetLen", given_len, "must be less than /127")
        elif given_len < plen + 2:
            r.bad("IPv6SubnetLen", given_len, "network must be able to accommodate at least four subnets")
        else:
            subnet_len = given_len
    elif plen > 124:
        r.bad("IPv6Network", raw, "network is too small. Minimum useful network prefix is /124")
    else:
        subnet_len = 64 if plen <= 62 else plen + 2
    if not subnet_len:
        return network, 0, None, None
    size = 1 << (128 - subnet_len)
    lo = ipaddress.IPv6Address(int(network.network_address) + size)
    hi = ipaddress.IPv6Address(int(network.broadcast_address) + 1 - size)
    values: dict[str, ipaddress.IPv6Address | None] = {}
    for name in ("IPv6SubnetMin", "IPv6SubnetMax"):
        s = r.string(name)
        values[name] = None
        if s is None:
            continue
        try:
            v = ipaddress.IPv6Address(s)
        except ValueError:
            r.bad(name, s, "not an IPv6 address")
            continue
        if v not in network:
            r.bad(name, s, f"not in the range of the IPv6Network {network}")
        elif int(v) % size:
            r.bad(name, s, f"not on an IPv6SubnetLen boundary (/{subnet_len})")
        else:
            values[name] = v
    return network, subnet_len, values["IPv6SubnetMin"] or lo, values["IPv6SubnetMax"] or hi


class ConfigNotFound(PodnetError):
    """No network config in the store yet (flanneld waits and retries)."""


def load_netconf(store: Store) -> tuple[NetConf, bytes]:
    """Read and validate the config from the store. Raises ConfigNotFound or ValidationError."""
    from podnet.store import keys

    kv = store.get(keys.NETWORK_CONFIG)
    if kv is None:
        raise ConfigNotFound(
            f"network config not found in the store at {keys.NETWORK_CONFIG} "
            "(set it with `podnet overlay config set -f net-conf.json`)"
        )
    return parse_netconf(kv.value), kv.value


def check_supported(conf: NetConf) -> None:
    """What podnet's overlay can run, beyond what flannel accepts. The daemon refuses a stored config with
    this, and `overlay config set` refuses to store one: the same problems, field named, from one place
    (a config that is stored but silently ignored would be worse than either)."""
    problems = []
    if conf.enable_ipv6 and conf.backend_type == "udp":
        # flannel's udp backend is IPv4 only (one TUN, one IPv4 socket); flannel's docs list dual-stack for
        # vxlan and host-gw (and wireguard, which podnet does not have).
        problems.append(Problem("EnableIPv6", True, "the udp backend is IPv4 only, as flannel's: use Backend.Type "
                                "vxlan or host-gw for an IPv6 or dual-stack pod network"))
    if conf.enable_nftables:
        problems.append(Problem("EnableNFTables", True,
                                "not supported by podnet's overlay (its traffic rules use iptables)"))
    if problems:
        raise ValidationError(problems)


def save_netconf(store: Any, data: bytes) -> NetConf:
    """Validate and store a net-conf as given (byte-identical, like flannel's registry). Nothing is
    written when it is invalid or asks for what podnet's overlay cannot run (check_supported)."""
    from podnet.store import keys

    conf = parse_netconf(data)
    check_supported(conf)
    store.put(keys.NETWORK_CONFIG, data)
    return conf


__all__ = ["ConfigNotFound", "NetConf", "SUPPORTED_BACKENDS", "check_supported", "load_netconf", "parse_netconf",
           "save_netconf"]
