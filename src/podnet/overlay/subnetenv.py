"""/run/flannel/subnet.env: what the overlay tells the CNI plugin (and what it remembers across restarts).

The format is flannel's WriteSubnetFile, byte for byte, because the flannel CNI plugin, mk-docker-opts and
operators' scripts read it:

    FLANNEL_NETWORK=10.244.0.0/16
    FLANNEL_SUBNET=10.244.1.1/24      <- first address of the lease, with the lease's prefix
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=true

(IPv6 lines FLANNEL_IPV6_NETWORK / FLANNEL_IPV6_SUBNET follow the IPv4 ones when enabled.) The file is
replaced atomically (temp file + rename in the same directory) so a CNI ADD never reads half a file.

One value type, two readers, because flannel has two: `load()` is the flannel CNI plugin's (every key
required, a bad value is an error naming the file), `read_vars()` / `previous_subnet()` are flanneld's own
look at its old file (comma lists, unparsable entries skipped). The CNI plugin imports this module once
per pod, so it uses neither dataclasses nor typing, and tempfile only when writing.
"""

from __future__ import annotations

import ipaddress
import os

from podnet.errors import PodnetError

DEFAULT_PATH = "/run/flannel/subnet.env"

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    from collections.abc import Sequence

    Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class SubnetEnvError(PodnetError):
    """subnet.env cannot be read, has a bad value, or lacks a key (the message names the file)."""


class SubnetEnv:
    """subnet.env's values. `network` is the cluster network (the overlay writes one; a reader may find a
    comma list, all of it in `networks`); `subnet` is the lease subnet (10.244.1.0/24), written as its
    first address."""

    __slots__ = ("ipmasq", "ipv6_networks", "ipv6_subnet", "mtu", "networks", "subnet")

    def __init__(self, network: Network | None, subnet: Network | None, mtu: int, ipmasq: bool,
                 ipv6_network: ipaddress.IPv6Network | None = None, ipv6_subnet: Network | None = None, *,
                 networks: Sequence[Network] | None = None, ipv6_networks: Sequence[Network] | None = None) -> None:
        self.networks: tuple[Network, ...] = tuple(networks) if networks is not None else (
            (network,) if network is not None else ())
        self.ipv6_networks: tuple[Network, ...] = tuple(ipv6_networks) if ipv6_networks is not None else (
            (ipv6_network,) if ipv6_network is not None else ())
        self.subnet = subnet
        self.ipv6_subnet = ipv6_subnet
        self.mtu = mtu
        self.ipmasq = ipmasq

    @property
    def network(self) -> Network | None:
        return self.networks[0] if self.networks else None

    @property
    def ipv6_network(self) -> Network | None:
        return self.ipv6_networks[0] if self.ipv6_networks else None

    def _key(self) -> tuple[object, ...]:
        return (self.networks, self.subnet, self.mtu, self.ipmasq, self.ipv6_networks, self.ipv6_subnet)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SubnetEnv) and self._key() == other._key()

    def __hash__(self) -> int:
        return hash(self._key())

    def __repr__(self) -> str:
        return (f"SubnetEnv(networks={list(map(str, self.networks))}, subnet={self.subnet}, mtu={self.mtu}, "
                f"ipmasq={self.ipmasq}, ipv6_networks={list(map(str, self.ipv6_networks))}, "
                f"ipv6_subnet={self.ipv6_subnet})")

    def render(self) -> str:
        lines = []
        if self.networks and self.subnet is not None:
            lines.append(f"FLANNEL_NETWORK={','.join(map(str, self.networks))}")
            lines.append(f"FLANNEL_SUBNET={_first_address(self.subnet)}")
        if self.ipv6_networks and self.ipv6_subnet is not None:
            lines.append(f"FLANNEL_IPV6_NETWORK={','.join(map(str, self.ipv6_networks))}")
            lines.append(f"FLANNEL_IPV6_SUBNET={_first_address(self.ipv6_subnet)}")
        lines.append(f"FLANNEL_MTU={self.mtu}")
        lines.append(f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}")
        return "".join(line + "\n" for line in lines)


def _first_address(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{net.network_address + 1}/{net.prefixlen}"


def load(path: str) -> SubnetEnv:
    """subnet.env as the flannel CNI plugin reads it (loadFlannelSubnetEnv): KEY=value lines, network lists
    de-duplicated, FLANNEL_SUBNET's address taken to its network, and every missing key named at once."""
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise SubnetEnvError(f"open {path}: {(e.strerror or '').lower()}") from None
    networks: list[Network] = []
    ipv6_networks: list[Network] = []
    subnet: Network | None = None
    ipv6_subnet: Network | None = None
    mtu: int | None = None
    ipmasq: bool | None = None
    try:
        for line in lines:
            key, sep, value = line.partition("=")
            if not sep:
                continue
            if key == "FLANNEL_NETWORK":
                for cidr in value.split(","):
                    n = _network_of(cidr)
                    if n not in networks:
                        networks.append(n)
            elif key == "FLANNEL_IPV6_NETWORK":
                for cidr in value.split(","):
                    n = _network_of(cidr)
                    if n not in ipv6_networks:
                        ipv6_networks.append(n)
            elif key == "FLANNEL_SUBNET":
                subnet = _network_of(value)
            elif key == "FLANNEL_IPV6_SUBNET":
                ipv6_subnet = _network_of(value)
            elif key == "FLANNEL_MTU":
                mtu = int(value)
            elif key == "FLANNEL_IPMASQ":
                ipmasq = value == "true"
    except ValueError as e:
        raise SubnetEnvError(f"{path}: {e}") from None
    missing = []
    if not networks and not ipv6_networks:
        missing.append("FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK")
    if subnet is None and ipv6_subnet is None:
        missing.append("FLANNEL_SUBNET, FLANNEL_IPV6_SUBNET")
    if mtu is None:
        missing.append("FLANNEL_MTU")
    if ipmasq is None:
        missing.append("FLANNEL_IPMASQ")
    if missing or mtu is None or ipmasq is None:
        raise SubnetEnvError(f"{path} is missing {', '.join(missing)}")
    return SubnetEnv(None, subnet, mtu, ipmasq, None, ipv6_subnet, networks=networks, ipv6_networks=ipv6_networks)


def _network_of(cidr: str) -> Network:
    return ipaddress.ip_interface(cidr.strip()).network


def write(path: str, env: SubnetEnv) -> None:
    """Replace `path` atomically with env's text (directory 0755, file 0644, like flanneld)."""
    write_atomic(path, env.render())


def write_atomic(path: str, text: str) -> None:
    import tempfile

    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o755, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".subnet.env.", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        raise


def read_vars(path: str) -> dict[str, str]:
    """KEY=value lines (blank lines and # comments skipped, optional quotes removed). {} if no file."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return {}
    out: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        if line.startswith("export "):
            line = line[len("export "):]
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        out[key.strip()] = value
    return out


def parse_cidrs(value: str) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
    """A comma-separated CIDR list; entries that do not parse are skipped (host bits are masked)."""
    out: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for item in value.split(","):
        item = item.strip()
        if "/" not in item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            continue
    return out


def previous_subnet(path: str) -> ipaddress.IPv4Network | None:
    """Our subnet from an older subnet.env (FLANNEL_SUBNET 10.5.52.1/24 -> 10.5.52.0/24), for reuse."""
    for net in parse_cidrs(read_vars(path).get("FLANNEL_SUBNET", "")):
        if isinstance(net, ipaddress.IPv4Network):
            return net
    return None


def previous_subnet_v6(path: str) -> ipaddress.IPv6Network | None:
    """Our IPv6 subnet from an older subnet.env (FLANNEL_IPV6_SUBNET fd00:10:244:1::1/64 -> .../64)."""
    for net in parse_cidrs(read_vars(path).get("FLANNEL_IPV6_SUBNET", "")):
        if isinstance(net, ipaddress.IPv6Network):
            return net
    return None


__all__ = ["DEFAULT_PATH", "SubnetEnv", "SubnetEnvError", "load", "parse_cidrs", "previous_subnet", "previous_subnet_v6",
           "read_vars",
           "write", "write_atomic"]
