"""/run/flannel/subnet.env: what the overlay tells the CNI plugin (and what it remembers across restarts).

The format is flannel's WriteSubnetFile, byte for byte, because the flannel CNI plugin, mk-docker-opts and
operators' scripts read it:

    FLANNEL_NETWORK=10.244.0.0/16
    FLANNEL_SUBNET=10.244.1.1/24      <- first address of the lease, with the lease's prefix
    FLANNEL_MTU=1450
    FLANNEL_IPMASQ=true

(IPv6 lines FLANNEL_IPV6_NETWORK / FLANNEL_IPV6_SUBNET follow the IPv4 ones when enabled.) The file is
replaced atomically (temp file + rename in the same directory) so a CNI ADD never reads half a file.
Readers accept comma-separated CIDR lists and skip entries that do not parse, as flanneld does.
"""

from __future__ import annotations

import ipaddress
import os
import tempfile
from dataclasses import dataclass

DEFAULT_PATH = "/run/flannel/subnet.env"


@dataclass(frozen=True, slots=True)
class SubnetEnv:
    network: ipaddress.IPv4Network | None
    subnet: ipaddress.IPv4Network | None  # the lease subnet (10.244.1.0/24); rendered as its first address
    mtu: int
    ipmasq: bool
    ipv6_network: ipaddress.IPv6Network | None = None
    ipv6_subnet: ipaddress.IPv6Network | None = None

    def render(self) -> str:
        lines = []
        if self.network is not None and self.subnet is not None:
            lines.append(f"FLANNEL_NETWORK={self.network}")
            lines.append(f"FLANNEL_SUBNET={_first_address(self.subnet)}")
        if self.ipv6_network is not None and self.ipv6_subnet is not None:
            lines.append(f"FLANNEL_IPV6_NETWORK={self.ipv6_network}")
            lines.append(f"FLANNEL_IPV6_SUBNET={_first_address(self.ipv6_subnet)}")
        lines.append(f"FLANNEL_MTU={self.mtu}")
        lines.append(f"FLANNEL_IPMASQ={'true' if self.ipmasq else 'false'}")
        return "".join(line + "\n" for line in lines)


def _first_address(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> str:
    return f"{net.network_address + 1}/{net.prefixlen}"


def write(path: str, env: SubnetEnv) -> None:
    """Replace `path` atomically with env's text (directory 0755, file 0644, like flanneld)."""
    write_atomic(path, env.render())


def write_atomic(path: str, text: str) -> None:
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


__all__ = ["DEFAULT_PATH", "SubnetEnv", "parse_cidrs", "previous_subnet", "read_vars", "write", "write_atomic"]
