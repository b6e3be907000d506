"""subnet.env format and reader (flannel-golden-cases.md §5)."""

from __future__ import annotations

import ipaddress
import os
import stat

from podnet.overlay import subnetenv
from podnet.overlay.subnetenv import SubnetEnv


def test_format_is_flannels() -> None:
    env = SubnetEnv(
        network=ipaddress.IPv4Network("10.42.0.0/16"), subnet=ipaddress.IPv4Network("10.42.0.0/24"), mtu=1450,
        ipmasq=True, ipv6_network=ipaddress.IPv6Network("2001:cafe:42::/56"),
        ipv6_subnet=ipaddress.IPv6Network("2001:cafe:42::/64"),
    )
    assert env.render() == (
        "FLANNEL_NETWORK=10.42.0.0/16\nFLANNEL_SUBNET=10.42.0.1/24\n"
        "FLANNEL_IPV6_NETWORK=2001:cafe:42::/56\nFLANNEL_IPV6_SUBNET=2001:cafe:42::1/64\n"
        "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n"
    )


def test_ipv4_only_and_false() -> None:
    env = SubnetEnv(ipaddress.IPv4Network("10.1.0.0/16"), ipaddress.IPv4Network("10.1.74.0/24"), 1472, False)
    assert env.render() == "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.74.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n"


def test_atomic_write_creates_dir_and_mode(tmp_path) -> None:
    path = tmp_path / "run" / "flannel" / "subnet.env"
    env = SubnetEnv(ipaddress.IPv4Network("10.1.0.0/16"), ipaddress.IPv4Network("10.1.17.0/24"), 1472, True)
    subnetenv.write(str(path), env)
    assert path.read_text() == env.render()
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o644
    assert os.listdir(path.parent) == ["subnet.env"]  # no temp file left behind
    assert subnetenv.previous_subnet(str(path)) == ipaddress.IPv4Network("10.1.17.0/24")


def test_reader_skips_bad_list_entries(tmp_path) -> None:
    path = tmp_path / "subnet.env"
    path.write_text("FLANNEL_SUBNET=10.244.1.0/24,not-a-cidr,10.244.2.0/24\nFLANNEL_IPV6_SUBNET=fd00::/64,x,fd01::/64\n")
    env = subnetenv.read_vars(str(path))
    assert [str(n) for n in subnetenv.parse_cidrs(env["FLANNEL_SUBNET"])] == ["10.244.1.0/24", "10.244.2.0/24"]
    assert [str(n) for n in subnetenv.parse_cidrs(env["FLANNEL_IPV6_SUBNET"])] == ["fd00::/64", "fd01::/64"]
    assert subnetenv.parse_cidrs("not-a-cidr") == []


def test_previous_subnet_missing_or_garbage(tmp_path) -> None:
    assert subnetenv.previous_subnet(str(tmp_path / "nope.env")) is None
    p = tmp_path / "s.env"
    p.write_text("foo=bar\n")
    assert subnetenv.previous_subnet(str(p)) is None
