"""net-conf defaults and validation against flannel-golden-cases.md §1 (CheckNetworkConfig rules)."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.errors import ValidationError
from podnet.overlay.netconf import parse_netconf


def test_lower_case_keys_and_defaults() -> None:
    c = parse_netconf('{ "network": "10.3.0.0/16" }')
    assert str(c.network) == "10.3.0.0/16"
    assert (c.subnet_len, str(c.subnet_min), str(c.subnet_max)) == (24, "10.3.1.0", "10.3.255.0")
    assert c.backend_type == "udp"  # flannel's parseBackendType without a Backend object


def test_ipv6_defaults() -> None:
    c = parse_netconf('{ "enableIPv6": true, "ipv6Network": "fc00::/48", "enableIPv4": false }')
    assert str(c.ipv6_network) == "fc00::/48"
    assert (c.ipv6_subnet_len, str(c.ipv6_subnet_min), str(c.ipv6_subnet_max)) == (64, "fc00:0:0:1::", "fc00:0:0:ffff::")
    assert c.network is None


def test_overrides_are_kept() -> None:
    c = parse_netconf('{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.5.0", "SubnetMax": "10.3.8.0", "SubnetLen": 28 }')
    assert (c.subnet_len, str(c.subnet_min), str(c.subnet_max)) == (28, "10.3.5.0", "10.3.8.0")


def test_ipv6_overrides_are_kept() -> None:
    c = parse_netconf(
        '{ "EnableIPv6": true, "IPv6Network": "fc00::/48", "IPv6SubnetMin": "fc00:0:0:1::", '
        '"IPv6SubnetMax": "fc00:0:0:f::", "IPv6SubnetLen": 124, "enableIPv4": false }'
    )
    assert (c.ipv6_subnet_len, str(c.ipv6_subnet_min), str(c.ipv6_subnet_max)) == (124, "fc00:0:0:1::", "fc00:0:0:f::")


@pytest.mark.parametrize(
    "network,length,lo,hi",
    [
        ("10.244.0.0/16", 24, "10.244.1.0", "10.244.255.0"),
        ("10.0.0.0/8", 24, "10.0.1.0", "10.255.255.0"),
        ("192.168.0.0/22", 24, "192.168.1.0", "192.168.3.0"),
        ("192.168.0.0/23", 25, "192.168.0.128", "192.168.1.128"),
        ("10.0.0.0/28", 30, "10.0.0.4", "10.0.0.12"),
    ],
)
def test_derived_defaults(network: str, length: int, lo: str, hi: str) -> None:
    c = parse_netconf(f'{{"Network": "{network}", "Backend": {{"Type": "vxlan"}}}}')
    assert (c.subnet_len, str(c.subnet_min), str(c.subnet_max)) == (length, lo, hi)
    subnets = list(c.candidate_subnets())
    assert len(subnets) == c.subnet_count()
    assert str(subnets[0].network_address) == lo and str(subnets[-1].network_address) == hi
    assert all(s.prefixlen == length for s in subnets)


def test_network_is_masked_like_go_parsecidr() -> None:
    assert str(parse_netconf('{"Network": "10.244.7.9/16"}').network) == "10.244.0.0/16"


def _problems(text: str) -> list[tuple[str, object, str]]:
    with pytest.raises(ValidationError) as err:
        parse_netconf(text)
    return [(p.field, p.value, p.reason) for p in err.value.problems]


@pytest.mark.parametrize(
    "text,field,value,reason",
    [
        ('{"Network": "10.0.0.0/29"}', "Network", "10.0.0.0/29", "Minimum useful network prefix is /28"),
        ('{"Network": "10.0.0.0/16", "SubnetLen": 31}', "SubnetLen", 31, "less than /31"),
        ('{"Network": "10.0.0.0/16", "SubnetLen": 17}', "SubnetLen", 17, "at least four subnets"),
        ('{"Network": "banana"}', "Network", "banana", "not an IPv4 CIDR"),
        ('{"Network": "10.0.0.0"}', "Network", "10.0.0.0", "not an IPv4 CIDR"),
        ('{"Network": "fc00::/48"}', "Network", "fc00::/48", "not an IPv4 CIDR"),
        ('{"Network": 17}', "Network", 17, "must be a string"),
        ('{}', "Network", None, "missing"),
        ('{"Network": "10.3.0.0/16", "SubnetMin": "10.4.1.0"}', "SubnetMin", "10.4.1.0", "not in the range of the Network"),
        ('{"Network": "10.3.0.0/16", "SubnetMax": "11.0.0.0"}', "SubnetMax", "11.0.0.0", "not in the range of the Network"),
        ('{"Network": "10.3.0.0/16", "SubnetMin": "10.3.1.7"}', "SubnetMin", "10.3.1.7", "SubnetLen boundary"),
        ('{"Network": "10.3.0.0/16", "SubnetMin": "10.3.9.0", "SubnetMax": "10.3.2.0"}', "SubnetMin", "10.3.9.0", "above SubnetMax"),
        ('{"Network": "10.3.0.0/16", "Backend": {"Type": "carrier-pigeon"}}', "Backend.Type", "carrier-pigeon", "unknown backend type"),
        ('{"Network": "10.3.0.0/16", "Backend": {"Type": "wireguard"}}', "Backend.Type", "wireguard", "not supported by podnet"),
        ('{"Network": "10.3.0.0/16", "Backend": {}}', "Backend.Type", None, "unknown backend type"),
        ('{"Network": "10.3.0.0/16", "Backend": "vxlan"}', "Backend", "vxlan", "JSON object"),
        ('{"Network": "10.3.0.0/16", "Backend": {"Type": "vxlan", "VNI": 16777216}}', "Backend.VNI", 16777216, "between"),
        ('{"Network": "10.3.0.0/16", "Backend": {"Type": "vxlan", "Port": "8472"}}', "Backend.Port", "8472", "whole number"),
        ('{"Network": "10.3.0.0/16", "Backend": {"Type": "vxlan", "DirectRouting": 1}}', "Backend.DirectRouting", 1, "true or false"),
        ('{"Network": "10.3.0.0/16", "Backend": {"Type": "vxlan", "MTU": 100}}', "Backend.MTU", 100, "too small"),
        ('{"Network": "10.3.0.0/16", "Backend": {"Type": "udp", "Port": 70000}}', "Backend.Port", 70000, "between"),
        ('not json', "net-conf", None, "not valid JSON"),
    ],
)
def test_invalid_configs_name_the_field(text: str, field: str, value: object, reason: str) -> None:
    problems = _problems(text)
    assert any(f == field and v == value and reason in r for f, v, r in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    problems = _problems('{"Network": "10.3.0.0/16", "SubnetMin": "9.0.0.0", "Backend": {"Type": "x", "VNI": -1}}')
    fields = [p[0] for p in problems]
    assert "SubnetMin" in fields and "Backend.Type" in fields


def test_backend_options_are_kept_for_the_backend() -> None:
    c = parse_netconf('{"Network": "10.244.0.0/16", "Backend": {"Type": "VXLAN", "VNI": 42, "DirectRouting": true}}')
    assert c.backend_type == "vxlan"
    assert c.backend == {"Type": "VXLAN", "VNI": 42, "DirectRouting": True}


def test_subnet_fits() -> None:
    c = parse_netconf('{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.1.0", "SubnetMax": "10.3.25.0" }')
    assert c.subnet_fits(ipaddress.IPv4Network("10.3.6.0/24"))
    assert not c.subnet_fits(ipaddress.IPv4Network("10.3.31.0/24"))
    assert not c.subnet_fits(ipaddress.IPv4Network("10.4.1.0/24"))
    assert not c.subnet_fits(ipaddress.IPv4Network("10.3.6.0/25"))
