"""Lease JSON and subnet keys against flannel-golden-cases.md §2 and §3."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.overlay.lease import Lease, LeaseDecodeError, decode_attrs, encode_attrs
from podnet.store import keys

VXLAN_VALUE = (
    b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
    b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
)


def test_minimal_lease_value_is_flannels_bytes() -> None:
    lease = Lease(subnet=ipaddress.IPv4Network("10.1.5.0/24"), public_ip=ipaddress.IPv4Address("1.2.3.4"))
    assert encode_attrs(lease) == b'{"PublicIP":"1.2.3.4","PublicIPv6":null}'
    assert lease.key == "/coreos.com/network/subnets/10.1.5.0-24"


def test_vxlan_lease_round_trips_byte_for_byte() -> None:
    lease = decode_attrs("10.5.52.0/24", VXLAN_VALUE)
    assert lease.public_ip == ipaddress.IPv4Address("192.168.64.3")
    assert lease.backend_type == "vxlan"
    assert lease.backend_data == {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}
    assert encode_attrs(lease) == VXLAN_VALUE
    assert lease.key == "/coreos.com/network/subnets/10.5.52.0-24"


def test_host_gw_lease_has_no_backend_data() -> None:
    lease = Lease(
        subnet=ipaddress.IPv4Network("10.244.3.0/24"), public_ip=ipaddress.IPv4Address("10.0.0.3"),
        backend_type="host-gw",
    )
    assert encode_attrs(lease) == b'{"PublicIP":"10.0.0.3","PublicIPv6":null,"BackendType":"host-gw"}'


def test_decode_is_case_insensitive_like_go() -> None:
    lease = decode_attrs("10.1.5.0/24", b'{"publicip":"1.2.3.4","backendtype":"udp"}')
    assert str(lease.public_ip) == "1.2.3.4" and lease.backend_type == "udp"


def test_backend_data_order_and_unknown_fields_are_kept() -> None:
    value = b'{"PublicIP":"1.2.3.4","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"Dummy":"test string"}}'
    assert encode_attrs(decode_attrs("10.3.1.0/24", value)) == value


def test_go_html_escaping() -> None:
    lease = Lease(
        subnet=ipaddress.IPv4Network("10.1.5.0/24"), public_ip=ipaddress.IPv4Address("1.2.3.4"),
        backend_type="x", backend_data={"a": "<&>"},
    )
    assert b'"BackendData":{"a":"\\u003c\\u0026\\u003e"}' in encode_attrs(lease)


@pytest.mark.parametrize("value", [b"not json", b"[1]", b'{"PublicIP":"300.1.1.1"}', b'{"PublicIP":"1.1.1.1","BackendType":3}'])
def test_bad_values_are_refused(value: bytes) -> None:
    with pytest.raises(LeaseDecodeError, match="10.1.5.0/24"):
        decode_attrs("10.1.5.0/24", value)


@pytest.mark.parametrize(
    "key,v4,v6",
    [("10.12.13.0-24", "10.12.13.0/24", None), ("10.12.13.0-24&fd00:12:13::-56", "10.12.13.0/24", "fd00:12:13::/56")],
)
def test_subnet_key_round_trip(key: str, v4: str, v6: str | None) -> None:
    parsed = keys.parse_subnet_key(key)
    assert parsed is not None
    assert str(parsed[0]) == v4 and (None if parsed[1] is None else str(parsed[1])) == v6
    assert keys.subnet_lease(v4, v6) == keys.SUBNETS_PREFIX + key


@pytest.mark.parametrize(
    "key",
    ["10", "10.12.13.0", "10.12.13-24", "10.12.13.300-24", "10.12.13.0-24hi", "&2001::-56",
     "10.12.13.0-24&:12:13:-56", "10.12.13.0-24&20011::-56", "10.12.13.0-24&2001-56", "10.12.13.0-24&2001::",
     "10.12.13.0-24&2001::-56hi", "garbage", ""],
)
def test_invalid_subnet_keys(key: str) -> None:
    assert keys.parse_subnet_key(key) is None
