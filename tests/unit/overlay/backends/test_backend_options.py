"""Backend construction from net-conf options: defaults, MTU arithmetic, errors that name the field."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.net import vxlan as vxdev
from podnet.net.iface import ExternalInterface
from podnet.overlay.backends import BackendError, create_backend

EXT = ExternalInterface("eth0", 2, ipaddress.IPv4Address("192.168.77.1"), ipaddress.IPv4Address("192.168.77.1"), 1500)


@pytest.mark.parametrize(("kind", "options", "mtu"), [
    ("vxlan", {}, 1450),
    ("vxlan", {"MTU": 9000}, 8950),
    ("VXLAN", {"vni": 7}, 1450),
    ("host-gw", {}, 1500),
    ("udp", {}, 1472),
    ("udp", {"mtu": 9000}, 8972),
])
def test_mtu_follows_flannel(kind, options, mtu):
    assert create_backend(kind, EXT, options).mtu == mtu


def test_vxlan_defaults_and_device_name():
    be = create_backend("vxlan", EXT, {"VNI": 0, "Port": 0})  # 0 means default, as in flannel
    assert (be.vni, be.port, be.device_name, be.direct_routing) == (1, 8472, "flannel.1", False)
    assert create_backend("vxlan", EXT, {"VNI": 42, "DirectRouting": True}).device_name == "flannel.42"


@pytest.mark.parametrize(("options", "field"), [
    ({"VNI": 1 << 24}, "Backend.VNI"),
    ({"VNI": "one"}, "Backend.VNI"),
    ({"Port": 70000}, "Backend.Port"),
    ({"MTU": 100}, "Backend.MTU"),
])
def test_vxlan_bad_options_name_the_field(options, field):
    with pytest.raises(BackendError, match=field):
        create_backend("vxlan", EXT, options)


def test_unknown_backend_type_is_refused_by_name():
    with pytest.raises(BackendError, match="Backend.Type: 'ipsec'"):
        create_backend("ipsec", EXT, {})


@pytest.mark.parametrize(("options", "field"), [({"Port": "x"}, "Backend.Port"), ({"Port": 70000}, "Backend.Port"),
                                               ({"MTU": "big"}, "Backend.MTU"), ({"MTU": 90}, "Backend.MTU")])
def test_udp_bad_options_name_the_field(options, field):
    with pytest.raises(BackendError, match=field):
        create_backend("udp", EXT, options)


def test_hostgw_refuses_nat():
    natted = ExternalInterface("eth0", 2, ipaddress.IPv4Address("10.0.0.5"), ipaddress.IPv4Address("203.0.113.9"), 1500)
    with pytest.raises(BackendError, match="--public-ip: '203.0.113.9'"):
        create_backend("host-gw", natted, {}).register()


SPEC = vxdev.VxlanSpec("flannel.1", 1, 2, ipaddress.IPv4Address("192.168.77.1"))
SAME = {"vni": 1, "link_index": 2, "local": "192.168.77.1", "port": 8472, "learning": False, "gbp": False}


@pytest.mark.parametrize(("change", "ok"), [
    ({}, True), ({"vni": 2}, False), ({"link_index": 3}, False), ({"local": "192.168.77.9"}, False),
    ({"port": 4789}, False), ({"learning": True}, False), ({"gbp": True}, False),
])
def test_vxlan_device_reuse_rule(change, ok):
    assert vxdev.compatible(SPEC, {**SAME, **change}) is ok
    assert vxdev.compatible(SPEC, None) is False


def test_random_vtep_mac_is_local_unicast():
    for _ in range(50):
        first = int(vxdev.random_mac().split(":")[0], 16)
        assert first & 0x02 and not first & 0x01
