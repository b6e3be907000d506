"""The overlay's dual-stack and IPv6-only pieces as pure functions: net-conf family combinations, lease
JSON and keys with IPv6Subnet/PublicIPv6/BackendV6Data, subnet choice per family, subnet.env, ip6tables
masquerade text, the vxlan / host-gw per-peer plans, and the kube annotations."""

from __future__ import annotations

import ipaddress
import random
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podnet.errors import AllocationError, ValidationError
from podnet.overlay import masq
from podnet.overlay.backends.hostgw import plan_routes
from podnet.overlay.backends.vxlan import Direct, Encap, PeerPlan, plan_peer
from podnet.overlay.kubesubnet import Annotations, lease_of, own_annotations, pod_cidrs
from podnet.overlay.lease import NO_PUBLIC_IP, NO_SUBNET, Lease, decode_lease_kv, encode_attrs
from podnet.overlay.netconf import check_supported, parse_netconf
from podnet.overlay.storesubnet import choose_subnet
from podnet.overlay.subnetenv import SubnetEnv, load, previous_subnet_v6

V4 = ipaddress.IPv4Network
V6 = ipaddress.IPv6Network
DUAL = '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "vxlan"}}'
V6ONLY = '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "host-gw"}}'


def problems(text: str) -> list[tuple[str, object, str]]:
    with pytest.raises(ValidationError) as e:
        check_supported(parse_netconf(text))
    return [(p.field, p.value, p.reason) for p in e.value.problems]


def problems_parse(text: str) -> list[tuple[str, object, str]]:
    with pytest.raises(ValidationError) as e:
        parse_netconf(text)
    return [(p.field, p.value, p.reason) for p in e.value.problems]


# ---- net-conf family combinations -------------------------------------------------------------------

def test_dual_stack_netconf_defaults() -> None:
    conf = parse_netconf(DUAL)
    check_supported(conf)
    assert (conf.network, conf.subnet_len, conf.ipv6_network, conf.ipv6_subnet_len) == (
        V4("10.244.0.0/16"), 24, V6("fd00:10:244::/56"), 64)
    # flannel skips the first subnet of each family
    assert conf.ipv6_subnet_min == ipaddress.IPv6Address("fd00:10:244:1::")
    assert conf.ipv6_subnet_max == ipaddress.IPv6Address("fd00:10:244:ff::")
    assert conf.subnet_count_v6() == 255


def test_ipv6_only_netconf_has_no_ipv4_network() -> None:
    conf = parse_netconf(V6ONLY)
    check_supported(conf)
    assert not conf.enable_ipv4 and conf.network is None and conf.ipv6_subnet_len == 64


@pytest.mark.parametrize(("text", "field", "value", "reason"), [
    ('{"EnableIPv4": false}', "EnableIPv4", False, "at least one of EnableIPv4 and EnableIPv6"),
    ('{"EnableIPv4": false, "EnableIPv6": true}', "IPv6Network", None, "missing"),
    ('{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "10.0.0.0/16"}', "IPv6Network",
     "10.0.0.0/16", "not an IPv6 CIDR but an IPv4 one"),
    ('{"Network": "fd00::/48", "EnableIPv6": true, "IPv6Network": "fd00:1::/48"}', "Network", "fd00::/48",
     "not an IPv4 CIDR but an IPv6 one"),
    ('{"EnableIPv6": true, "IPv6Network": "fd00::/48", "Network": "fd00::/48"}', "Network", "fd00::/48",
     "IPv6Network"),
    ('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/126"}', "IPv6Network", "fd00::/126",
     "too small"),
    ('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetLen": 57}',
     "IPv6SubnetLen", 57, "at least four subnets"),
    ('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/56", "IPv6SubnetMin": "fd01::"}',
     "IPv6SubnetMin", "fd01::", "not in the range"),
    ('{"EnableIPv4": false, "EnableIPv6": "yes", "IPv6Network": "fd00::/56"}', "EnableIPv6", "yes", "true or false"),
])
def test_family_mistakes_name_the_field_and_value(text: str, field: str, value: object, reason: str) -> None:
    found = problems_parse(text)
    assert any(f == field and v == value and reason in r for f, v, r in found), found


@pytest.mark.parametrize("text", [
    '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "10.0.0.0/16", "Backend": {"Type": "vxlan"}}',
    '{"Network": "fd00::/48", "Backend": {"Type": "vxlan"}}',
    '{"EnableIPv4": false, "Backend": {"Type": "vxlan"}}',
    '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/48", "Backend": {"Type": "udp"}}',
])
def test_mismatched_families_store_nothing(tmp_path: Any, text: str) -> None:
    from podnet.overlay.netconf import save_netconf
    from podnet.store import keys
    from podnet.store.sqlite import SqliteStore

    store = SqliteStore(f"sqlite://{tmp_path}/s.db")
    try:
        with pytest.raises(ValidationError):
            save_netconf(store, text.encode())
        assert store.get(keys.NETWORK_CONFIG) is None
    finally:
        store.close()


@pytest.mark.parametrize("text", [
    '{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48", "Backend": {"Type": "udp"}}',
    '{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/48"}',  # no Backend = udp
])
def test_udp_with_ipv6_is_refused(text: str) -> None:
    [(field, value, reason)] = problems(text)
    assert (field, value) == ("EnableIPv6", True) and "udp backend is IPv4 only" in reason


# ---- lease JSON and keys ------------------------------------------------------------------------------

def test_ipv6_only_lease_key_and_value_are_flannels() -> None:
    """flannel's MakeSubnetKey with the zero IP4Net, and LeaseAttrs with the zero PublicIP."""
    lease = Lease(subnet=NO_SUBNET, public_ip=NO_PUBLIC_IP, public_ipv6=ipaddress.IPv6Address("fd00:77::11"),
                  backend_type="vxlan", backend_v6_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"},
                  subnet_v6=V6("fd00:10:244:3::/64"))
    assert lease.key == "/coreos.com/network/subnets/0.0.0.0-0&fd00:10:244:3::-64"
    assert encode_attrs(lease) == (b'{"PublicIP":"0.0.0.0","PublicIPv6":"fd00:77::11","BackendType":"vxlan",'
                                   b'"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}}')
    back = decode_lease_kv(lease.key, encode_attrs(lease))
    assert back == lease and not back.has_v4 and back.describe() == "fd00:10:244:3::/64"


def test_dual_lease_key() -> None:
    lease = Lease(subnet=V4("10.244.3.0/24"), public_ip=ipaddress.IPv4Address("192.168.77.3"),
                  subnet_v6=V6("fd00:10:244:3::/64"))
    assert lease.key == "/coreos.com/network/subnets/10.244.3.0-24&fd00:10:244:3::-64"
    assert lease.describe() == "10.244.3.0/24+fd00:10:244:3::/64"


macs = st.binary(min_size=6, max_size=6).map(lambda b: ":".join(f"{x:02x}" for x in b))
backend_data = st.one_of(st.none(), st.builds(lambda vni, mac: {"VNI": vni, "VtepMAC": mac},
                                                 st.integers(1, (1 << 24) - 1), macs))


@given(
    v4=st.one_of(st.just(None), st.integers(0, (1 << 24) - 1).map(lambda n: V4((n << 8, 24)))),
    v6=st.one_of(st.just(None), st.integers(0, (1 << 64) - 1).map(lambda n: V6((n << 64, 64)))),
    pub=st.integers(1, (1 << 32) - 1).map(ipaddress.IPv4Address),
    pub6=st.one_of(st.none(), st.integers(1, (1 << 128) - 1).map(ipaddress.IPv6Address)),
    kind=st.sampled_from([None, "vxlan", "host-gw"]), data=backend_data, data6=backend_data,
)
def test_lease_json_and_key_round_trip(v4: V4 | None, v6: V6 | None, pub: Any, pub6: Any, kind: str | None,
                                       data: Any, data6: Any) -> None:
    lease = Lease(subnet=v4 or NO_SUBNET, public_ip=pub if v4 else NO_PUBLIC_IP, public_ipv6=pub6,
                  backend_type=kind, backend_data=data, backend_v6_data=data6, subnet_v6=v6)
    assert decode_lease_kv(lease.key, encode_attrs(lease)) == lease


# ---- choosing subnets ---------------------------------------------------------------------------------

def peer(v4: str | None, v6: str | None, pub: str = "192.168.77.9", pub6: str | None = "fd00:77::99") -> Lease:
    return Lease(subnet=V4(v4) if v4 else NO_SUBNET, public_ip=ipaddress.IPv4Address(pub if v4 else "0.0.0.0"),
                 public_ipv6=ipaddress.IPv6Address(pub6) if pub6 else None, subnet_v6=V6(v6) if v6 else None)


def test_dual_choice_takes_a_free_subnet_of_each_family() -> None:
    conf = parse_netconf('{"Network": "10.244.0.0/22", "EnableIPv6": true, "IPv6Network": "fd00::/62"}')
    taken = [peer("10.244.1.0/24", "fd00:0:0:1::/64"), peer("10.244.2.0/24", "fd00:0:0:2::/64", "192.168.77.8")]
    c = choose_subnet(conf, taken, ipaddress.IPv4Address("192.168.77.1"), rng=random.Random(1),
                      public_ipv6=ipaddress.IPv6Address("fd00:77::11"))
    assert (c.kind, c.subnet, c.subnet_v6) == ("new", V4("10.244.3.0/24"), V6("fd00:0:0:3::/64"))


def test_ipv6_only_choice_reuses_our_lease_by_public_ipv6() -> None:
    conf = parse_netconf(V6ONLY)
    mine = peer(None, "fd00:10:244:7::/64", pub6="fd00:77::11")
    other = peer(None, "fd00:10:244:8::/64", pub6="fd00:77::12")
    c = choose_subnet(conf, [other, mine], NO_PUBLIC_IP, public_ipv6=ipaddress.IPv6Address("fd00:77::11"))
    assert (c.kind, c.subnet, c.subnet_v6, c.reuse) == ("reuse", NO_SUBNET, V6("fd00:10:244:7::/64"), mine)
    # a new node never gets a subnet someone holds, and never an IPv4 one
    new = choose_subnet(conf, [other, mine], NO_PUBLIC_IP, public_ipv6=ipaddress.IPv6Address("fd00:77::13"))
    assert new.subnet == NO_SUBNET and new.subnet_v6 not in (mine.subnet_v6, other.subnet_v6)


def test_ipv4_lease_is_dropped_when_the_config_turns_dual() -> None:
    """An own lease without an IPv6 subnet does not fit a dual-stack config: it is dropped, not reused."""
    conf = parse_netconf(DUAL)
    old = peer("10.244.5.0/24", None, pub="192.168.77.1")
    c = choose_subnet(conf, [old], ipaddress.IPv4Address("192.168.77.1"), rng=random.Random(2),
                      public_ipv6=ipaddress.IPv6Address("fd00:77::11"))
    assert c.kind == "new" and c.drop == old and c.subnet_v6 is not None


def test_out_of_ipv6_subnets_names_the_range() -> None:
    conf = parse_netconf('{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/62", '
                         '"Backend": {"Type": "vxlan"}}')
    full = [peer(None, f"fd00:0:0:{i}::/64", pub6=f"fd00:77::{i}") for i in (1, 2, 3)]
    with pytest.raises(AllocationError, match="out of IPv6 subnets: all 3 /64 subnets of IPv6Network fd00::/62"):
        choose_subnet(conf, full, NO_PUBLIC_IP, public_ipv6=ipaddress.IPv6Address("fd00:77::11"))


# ---- subnet.env -----------------------------------------------------------------------------------------

def test_subnet_env_dual_and_ipv6_only(tmp_path: Any) -> None:
    dual = SubnetEnv(V4("10.244.0.0/16"), V4("10.244.1.0/24"), 1430, True, V6("fd00:10:244::/56"),
                     V6("fd00:10:244:1::/64"))
    assert dual.render() == ("FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.1.1/24\n"
                             "FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n"
                             "FLANNEL_MTU=1430\nFLANNEL_IPMASQ=true\n")
    only = SubnetEnv(None, None, 1500, False, V6("fd00:10:244::/56"), V6("fd00:10:244:1::/64"))
    assert only.render() == ("FLANNEL_IPV6_NETWORK=fd00:10:244::/56\nFLANNEL_IPV6_SUBNET=fd00:10:244:1::1/64\n"
                             "FLANNEL_MTU=1500\nFLANNEL_IPMASQ=false\n")
    path = tmp_path / "subnet.env"
    path.write_text(only.render())
    assert load(str(path)) == only and previous_subnet_v6(str(path)) == V6("fd00:10:244:1::/64")


# ---- ip6tables masquerade ---------------------------------------------------------------------------------

def test_ipv6_masq_rules_are_flannels_layout() -> None:
    n, p = V6("fd00:10:244::/56"), V6("fd00:10:244:1::/64")
    c = '-m comment --comment "flanneld masq"'
    assert masq.masq_rules(n, p) == [
        f"-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {p} -d {n} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {n} -d {p} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG ! -s {n} -d {p} {c} -j RETURN",
        f"-A FLANNEL-POSTRTG -s {n} ! -d ff00::/8 {c} -j MASQUERADE --random-fully",
        f"-A FLANNEL-POSTRTG ! -s {n} -d {n} {c} -j MASQUERADE --random-fully",
    ]
    with pytest.raises(ValueError, match="different families"):
        masq.masq_rules(V4("10.244.0.0/16"), p)


def test_desired_rules_per_family() -> None:
    n6, p6 = V6("fd00:10:244::/56"), V6("fd00:10:244:1::/64")
    dual = masq.desired(V4("10.244.0.0/16"), V4("10.244.1.0/24"), ip_masq=True, network_v6=n6, subnet_v6=p6)
    assert [(t.family, t.table) for t in dual] == [(4, "nat"), (4, "filter"), (6, "nat"), (6, "filter")]
    only = masq.desired(None, None, ip_masq=True, network_v6=n6, subnet_v6=p6)
    assert [(t.family, t.table) for t in only] == [(6, "nat"), (6, "filter")]
    assert only[1].rules == tuple(masq.forward_rules(n6))


# ---- per-peer plans of the backends ---------------------------------------------------------------------

def test_vxlan_plan_per_family() -> None:
    sn6, pub6 = V6("fd00:10:244:2::/64"), ipaddress.IPv6Address("fd00:77::12")
    assert plan_peer(sn6, pub6, {"VNI": 1, "VtepMAC": "AA:BB:CC:DD:EE:02"}) == PeerPlan(
        sn6, Encap("aa:bb:cc:dd:ee:02", pub6))
    assert plan_peer(sn6, pub6, None, direct=True) == PeerPlan(sn6, Direct(pub6))
    assert plan_peer(None, None, {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:02"}) is None  # peer without IPv6
    assert plan_peer(sn6, pub6, None) is None  # no BackendV6Data: nothing to program


def test_host_gw_routes_per_family() -> None:
    dual = peer("10.244.2.0/24", "fd00:10:244:2::/64", pub="192.168.77.2", pub6="fd00:77::12")
    assert plan_routes(dual, ipv4=True, ipv6=True) == [
        (V4("10.244.2.0/24"), ipaddress.IPv4Address("192.168.77.2")),
        (V6("fd00:10:244:2::/64"), ipaddress.IPv6Address("fd00:77::12"))]
    assert plan_routes(dual, ipv4=False, ipv6=True) == [
        (V6("fd00:10:244:2::/64"), ipaddress.IPv6Address("fd00:77::12"))]
    # a peer of a mixed cluster without an IPv6 subnet gets no IPv6 route
    assert plan_routes(peer("10.244.3.0/24", None, pub6=None), ipv4=True, ipv6=True) == [
        (V4("10.244.3.0/24"), ipaddress.IPv4Address("192.168.77.9"))]
    assert plan_routes(peer(None, "fd00:10:244:4::/64"), ipv4=True, ipv6=False) == []


# ---- kube subnet manager ----------------------------------------------------------------------------------

ANN = Annotations.for_prefix()


def node(name: str, cidrs: list[str], ann: dict[str, str] | None = None) -> Any:
    from podnet.api.loader import parse_object

    return parse_object({"apiVersion": "v1", "kind": "Node", "metadata": {"name": name, "annotations": ann or {}},
                         "spec": {"podCIDR": cidrs[0], "podCIDRs": cidrs}})


def test_own_annotations_dual_and_ipv6_only() -> None:
    data6 = {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"}
    dual = Lease(V4("10.244.1.0/24"), ipaddress.IPv4Address("192.168.77.1"), backend_type="vxlan",
                 backend_data={"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:00"},
                 public_ipv6=ipaddress.IPv6Address("fd00:77::11"), backend_v6_data=data6,
                 subnet_v6=V6("fd00:10:244:1::/64"))
    got = own_annotations(ANN, dual)
    assert got["flannel.alpha.coreos.com/backend-v6-data"] == '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}'
    assert got["flannel.alpha.coreos.com/public-ipv6"] == "fd00:77::11"
    assert got["flannel.alpha.coreos.com/public-ip"] == "192.168.77.1"
    only = Lease(NO_SUBNET, NO_PUBLIC_IP, backend_type="vxlan", public_ipv6=ipaddress.IPv6Address("fd00:77::11"),
                 backend_v6_data=data6, subnet_v6=V6("fd00:10:244:1::/64"))
    assert sorted(own_annotations(ANN, only)) == sorted([
        "flannel.alpha.coreos.com/backend-type", "flannel.alpha.coreos.com/kube-subnet-manager",
        "flannel.alpha.coreos.com/backend-v6-data", "flannel.alpha.coreos.com/public-ipv6"])


def test_peer_lease_from_a_dual_node_and_our_pod_cidrs() -> None:
    ann = {"flannel.alpha.coreos.com/kube-subnet-manager": "true", "flannel.alpha.coreos.com/backend-type": "vxlan",
           "flannel.alpha.coreos.com/backend-data": '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:00"}',
           "flannel.alpha.coreos.com/public-ip": "192.168.77.2",
           "flannel.alpha.coreos.com/backend-v6-data": '{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:01"}',
           "flannel.alpha.coreos.com/public-ipv6": "fd00:77::12"}
    n = node("n2", ["10.244.2.0/24", "fd00:10:244:2::/64"], ann)
    lease = lease_of(n, ANN)
    assert lease is not None
    assert (lease.subnet, lease.subnet_v6, lease.public_ipv6) == (
        V4("10.244.2.0/24"), V6("fd00:10:244:2::/64"), ipaddress.IPv6Address("fd00:77::12"))
    assert lease.backend_v6_data == {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:01"}
    assert pod_cidrs(n, parse_netconf(DUAL)) == (V4("10.244.2.0/24"), V6("fd00:10:244:2::/64"))
    assert pod_cidrs(n, parse_netconf(V6ONLY)) == (NO_SUBNET, V6("fd00:10:244:2::/64"))
    assert pod_cidrs(node("n3", ["10.244.3.0/24"]), parse_netconf(DUAL)) is None  # waits for the /64
