"""`lab up --ip-family ipv4|ipv6|dual`: the addresses, net-conf, Node objects, service ranges and pod IPs a lab
of each family gets (kind's and kubeadm's dual-stack shape: IPv4 first), and the refusals."""

from __future__ import annotations

import ipaddress
import json

import pytest

from podnet.errors import ValidationError
from podnet.lab import registry, topology
from podnet.lab.agent import pod_ips
from podnet.lab.cluster import kube_proxy_config
from podnet.overlay.netconf import parse_netconf


@pytest.mark.parametrize(("family", "services", "dns", "ips"), [
    ("ipv4", "10.96.0.0/12", "10.96.0.10", ["192.168.77.11"]),
    ("ipv6", "fd00:10:96::/112", "fd00:10:96::a", ["fd00:77::11"]),
    ("dual", "10.96.0.0/12,fd00:10:96::/112", "10.96.0.10", ["192.168.77.11", "fd00:77::11"]),
])
def test_each_family_gets_its_addresses_and_ranges(family: str, services: str, dns: str, ips: list[str]) -> None:
    spec = topology.build("t", 3, "vxlan", ip_family=family)
    assert (spec.service_cidr, spec.cluster_dns) == (services, dns)
    n1 = spec.node_specs[0]
    assert n1.internal_ips(family) == ips
    assert n1.underlay_ip == "192.168.77.11"  # the underlay is dual-stack in every lab: the lab's own plumbing
    assert bool(n1.underlay_ip6) == (family != "ipv4")
    node = registry.node_object(spec, 0)
    assert [a.address for a in node.status.addresses if a.type == "InternalIP"] == ips
    assert f"clusterCIDR: {','.join(spec.pod_networks)}" in kube_proxy_config(spec, "node1")
    # the lab's spec survives its state file
    assert topology.LabSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec


def test_net_conf_is_flannels_for_each_family() -> None:
    for family, want in [("ipv4", {"Network": "10.244.0.0/16"}),
                         ("dual", {"Network": "10.244.0.0/16", "EnableIPv6": True, "IPv6Network": "fd00:10:244::/56"}),
                         ("ipv6", {"EnableIPv4": False, "EnableIPv6": True, "IPv6Network": "fd00:10:244::/56"})]:
        spec = topology.build("t", 2, "host-gw", ip_family=family)
        data = registry.net_conf(spec)
        assert json.loads(data) == want | {"Backend": {"Type": "host-gw"}}
        conf = parse_netconf(data)  # flannel's own rules accept it
        assert conf.enable_ipv6 == (family != "ipv4") and conf.enable_ipv4 == (family != "ipv6")


@pytest.mark.parametrize(("kwargs", "field", "reason"), [
    ({"ip_family": "ipv5"}, "--ip-family", "unknown IP family"),
    ({"ip_family": "dual", "backend": "udp"}, "--backend", "IPv4 only"),
    ({"ip_family": "ipv6", "service_cidr": "10.100.0.0/16"}, "--ip-family", "needs IPv6"),
    ({"ip_family": "ipv4", "service_cidr": "fd00:1::/112"}, "--ip-family", "needs IPv4"),
])
def test_refusals_name_the_option(kwargs: dict[str, str], field: str, reason: str) -> None:
    with pytest.raises(ValidationError) as e:
        topology.build("t", 2, **kwargs)  # type: ignore[arg-type]
    assert any(p.field == field and reason in p.reason for p in e.value.problems), e.value.problems


def test_an_ipv4_service_cidr_of_the_environment_is_kept_and_paired() -> None:
    spec = topology.build("t", 2, service_cidr="10.100.0.0/16", ip_family="dual")
    assert spec.service_cidr == "10.100.0.0/16,fd00:10:96::/112" and spec.cluster_dns == "10.100.0.10"


def test_pod_ips_follow_the_cluster_family_order() -> None:
    result = {"ips": [{"address": "fd00:10:244:1::5/64"}, {"address": "10.244.1.5/24"}]}
    assert pod_ips(result, (4, 6)) == ["10.244.1.5", "fd00:10:244:1::5"]
    assert pod_ips(result, (6,)) == ["fd00:10:244:1::5"]
    with pytest.raises(RuntimeError, match="no IPv6 address"):
        pod_ips({"ips": [{"address": "10.244.1.5/24"}]}, (4, 6))
    for ip in pod_ips(result, (6, 4)):
        ipaddress.ip_address(ip)


def test_a_lab_of_another_family_on_the_same_store_recreates_kube_dns(tmp_path) -> None:
    """kube-dns belongs to the lab: an IPv6 lab on the store an IPv4 lab left gets its own kube-dns (a
    ClusterIP cannot change in place), and the old address is free again; a lab of the same range keeps it."""
    from podnet.controllers.allocators import AllocatorConfig
    from podnet.controllers.apply import apply_objects
    from podnet.lab import dns
    from podnet.store import keys, open_store

    store = open_store(f"sqlite:///{tmp_path}/s.db")
    try:
        def kube_dns() -> dict:
            kv = store.get(keys.resource("Service", "kube-system", "kube-dns"))
            assert kv is not None
            return json.loads(kv.value)["spec"]

        v4 = topology.build("t", 2, "vxlan")
        dns.ensure_service(store, v4)
        assert (kube_dns()["clusterIPs"], kube_dns()["ipFamilies"]) == (["10.96.0.10"], ["IPv4"])
        rev = store.revision()
        dns.ensure_service(store, v4)  # the same lab again: nothing written
        assert store.revision() == rev
        v6 = topology.build("t", 2, "vxlan", ip_family="ipv6")
        dns.ensure_service(store, v6)
        assert (kube_dns()["clusterIPs"], kube_dns()["ipFamilies"]) == (["fd00:10:96::a"], ["IPv6"])
        # 10.96.0.10 is free again: a Service may take it
        svc = dns.service(v4).model_copy(update={"metadata": dns.service(v4).metadata.model_copy(update={"name": "x"})})
        apply_objects(store, [svc], AllocatorConfig(v4.service_cidr))
        kv = store.get(keys.resource("Service", "kube-system", "x"))
        assert kv is not None and json.loads(kv.value)["spec"]["clusterIP"] == "10.96.0.10"
    finally:
        store.close()
