"""Unit tests of the desired state: parsing Services/EndpointSlices as kube-proxy does, categorising."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from podnet.api.decode import decode_endpoint_slice as parse_endpoint_slice
from podnet.api.ipaddr import parse_cidr, parse_ip
from podnet.errors import ValidationError
from podnet.proxy.model import (
    DesiredState,
    Endpoint,
    ServicePort,
    ServicePortName,
    changed_service_ports,
    changed_services,
    needs_full_sync,
)
from podnet.proxy.topology import categorize_endpoints
from podnet.proxy.tracker import desired_state_from_objects, parse_service


def svc(name="svc1", ns="ns1", **spec):
    spec.setdefault("clusterIP", "172.30.0.41")
    spec.setdefault("ports", [{"name": "p80", "port": 80, "protocol": "TCP"}])
    return {"kind": "Service", "metadata": {"namespace": ns, "name": name}, "spec": spec}


def eps(endpoints, name="svc1", ns="ns1", ports=None, family="IPv4", slice_name=None):
    return {"kind": "EndpointSlice",
            "metadata": {"namespace": ns, "name": slice_name or f"{name}-1", "labels": {"kubernetes.io/service-name": name}},
            "addressType": family, "endpoints": endpoints,
            "ports": ports if ports is not None else [{"name": "p80", "port": 80, "protocol": "TCP"}]}


def test_parse_ip_is_sloppy_like_kubernetes():
    assert str(parse_ip("10.180.00.001")) == "10.180.0.1"
    assert str(parse_ip("::ffff:1.2.3.4")) == "1.2.3.4"
    assert str(parse_ip("2001:DB8::1")) == "2001:db8::1"
    for bad in ("", "1.2.3", "1.2.3.256", "a.b.c.d", "1.2.3.4 ", "1.2.3.0004", None, 7):
        assert parse_ip(bad) is None
    assert str(parse_cidr("203.0.113.000/025")) == "203.0.113.0/25"
    assert str(parse_cidr("10.1.2.3/8")) == "10.0.0.0/8"
    assert parse_cidr("10.0.0.0/33") is None and parse_cidr("10.0.0.0") is None


@given(st.ip_addresses(v=4))
def test_parse_ip_agrees_with_ipaddress_on_canonical_v4(ip):
    assert parse_ip(str(ip)) == ip


def test_service_ports_from_a_service():
    p = parse_service(svc(
        type="LoadBalancer", externalTrafficPolicy="Local", healthCheckNodePort=30000,
        ports=[{"name": "p80", "port": 80, "nodePort": 3001}, {"name": "dns", "port": 53, "protocol": "UDP"}],
        externalIPs=["192.168.99.11", "2001:db8::5", "bogus"],
        loadBalancerSourceRanges=[" 203.0.113.0/25", "2001:db8::/64", "nonsense"],
        sessionAffinity="ClientIP",
    ) | {"status": {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "5.6.7.8", "ipMode": "Proxy"},
                                                 {"hostname": "lb.example"}]}}})
    assert [str(sp.name) for sp in p.ports] == ["ns1/svc1:p80", "ns1/svc1:dns"]
    sp = p.ports[0]
    assert sp.protocol == "TCP" and sp.node_port == 3001 and sp.cluster_ip == "172.30.0.41"
    assert sp.external_ips == ("192.168.99.11",)
    assert sp.load_balancer_ips == ("1.2.3.4",)
    assert sp.load_balancer_source_ranges == ("203.0.113.0/25",)
    assert sp.client_ip_affinity and sp.sticky_max_age_seconds == 10800
    assert sp.external_policy_local and sp.health_check_node_port == 30000
    assert p.ports[1].protocol == "UDP"


def test_external_policy_only_for_externally_accessible_services():
    # apiservice.ExternalPolicyLocal: NodePort, LoadBalancer, or ClusterIP with externalIPs.
    sp = parse_service(svc(externalTrafficPolicy="Local", externalIPs=["192.168.99.11"])).ports[0]
    assert sp.external_policy_local and sp.health_check_node_port == 0  # health checks: LoadBalancer only
    assert not parse_service(svc(externalTrafficPolicy="Local")).ports[0].external_policy_local
    np = parse_service(svc(type="NodePort", externalTrafficPolicy="Local", healthCheckNodePort=30000)).ports[0]
    assert np.external_policy_local and np.health_check_node_port == 0


@pytest.mark.parametrize("spec", [{"clusterIP": "None"}, {"clusterIP": ""}, {"type": "ExternalName", "externalName": "x.example"}])
def test_headless_and_external_name_services_are_ignored(spec):
    assert parse_service(svc(**spec)).ports == ()


def test_dual_stack_cluster_ip_by_family():
    s = svc(ipFamilies=["IPv4", "IPv6"], clusterIPs=["172.30.0.41", "fd00::41"])
    assert parse_service(s, "IPv6").ports[0].cluster_ip == "fd00::41"
    assert parse_service(s, "IPv4").ports[0].cluster_ip == "172.30.0.41"
    assert parse_service(svc(clusterIP="fd00::41"), "IPv4").ports == ()
    # ipFamilies without clusterIPs (hand-written YAML): the clusterIP still counts
    assert parse_service(svc(ipFamilies=["IPv4"]), "IPv4").ports[0].cluster_ip == "172.30.0.41"


def test_bad_service_names_every_field():
    with pytest.raises(ValidationError) as e:
        parse_service(svc(type="Weird", ports=[{"name": "a", "port": "80"}, {"name": "a", "port": 70000, "protocol": "ICMP"}],
                          sessionAffinity="Sticky", clusterIP="1.2.3"))
    text = str(e.value)
    for part in ("spec.type: 'Weird'", "spec.ports[0].port: '80'", "spec.ports[1].port: 70000",
                 "spec.ports[1].protocol: 'ICMP'", "spec.sessionAffinity: 'Sticky'", "spec.clusterIP: '1.2.3'",
                 "spec.ports[1].name: 'a': duplicate", "Service/ns1/svc1"):
        assert part in text, (part, text)


def test_bad_slice_names_fields():
    bad = eps([{"addresses": "10.0.0.1"}, {"addresses": ["10.0.0.2"], "conditions": {"ready": "yes"}}],
              ports=[{"name": "p80", "port": -1}])
    bad["metadata"]["labels"] = {}
    with pytest.raises(ValidationError) as e:
        parse_endpoint_slice(bad)
    text = str(e.value)
    for part in ("metadata.labels[kubernetes.io/service-name]", "endpoints[0].addresses",
                 "endpoints[1].conditions.ready", "ports[0].port: -1"):
        assert part in text, (part, text)


def test_endpoints_joined_deduplicated_sorted_and_local():
    objs = [
        svc(),
        eps([{"addresses": ["10.0.0.10"]}, {"addresses": ["10.0.0.9", "10.9.9.9"], "nodeName": "me"},
             {"addresses": ["fd00::1"]}, {"addresses": ["10.0.0.010"]}]),
        eps([{"addresses": ["10.0.0.10"], "nodeName": "me"}], slice_name="svc1-2"),
        eps([{"addresses": ["10.0.0.99"]}], ports=[{"name": "other", "port": 80}], slice_name="svc1-3"),
        eps([{"addresses": ["10.0.0.98"]}], ports=[{"name": "p80", "port": 80, "protocol": "UDP"}], slice_name="svc1-4"),
        eps([{"addresses": ["10.0.0.97"]}], ports=[{"name": "p80", "port": 0}], slice_name="svc1-5"),
    ]
    d = desired_state_from_objects(objs, "me")
    sp = d.services[ServicePortName("ns1", "svc1", "p80", "TCP")]
    assert [str(e) for e in sp.endpoints] == ["10.0.0.10:80", "10.0.0.9:80"]
    assert all(e.local for e in sp.endpoints)  # the local duplicate wins
    assert len(d.services) == 1  # the UDP slice port matches no service port


def test_endpoint_conditions_default_like_kube_proxy():
    s = parse_endpoint_slice(eps([{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {
        "ready": False, "serving": True, "terminating": True}}]))
    a, b = s.endpoints
    assert (a.ready, a.serving, a.terminating) == (True, True, False)
    assert (b.ready, b.serving, b.terminating) == (False, True, True)


def test_unnamed_slice_port_matches_unnamed_service_port():
    objs = [svc(ports=[{"port": 80}]), eps([{"addresses": ["10.0.0.1"]}], ports=[{"port": 8080}])]
    d = desired_state_from_objects(objs, "n")
    (sp,) = d.services.values()
    assert str(sp.name) == "ns1/svc1" and [str(e) for e in sp.endpoints] == ["10.0.0.1:8080"]


def _sp(endpoints, **kw):
    return ServicePort(name=ServicePortName("ns", "s", "p", "TCP"), cluster_ip="10.96.0.1", port=80,
                       endpoints=tuple(endpoints), **kw)


def E(ip, local=False, ready=True, serving=True, terminating=False, zones=(), nodes=()):  # noqa: N802
    return Endpoint(ip, 80, ready, serving, terminating, local, zone_hints=frozenset(zones), node_hints=frozenset(nodes))


def test_categorize_cluster_falls_back_to_serving_terminating():
    c = categorize_endpoints(_sp([E("10.0.0.1", ready=False, terminating=True),
                                  E("10.0.0.2", ready=False, serving=False, terminating=True)]), "n")
    assert [e.ip for e in c.cluster] == ["10.0.0.1"] and c.has_any and c.local == ()


def test_categorize_local_policy_and_merge():
    sp = _sp([E("10.0.0.1", local=True, ready=False, terminating=True), E("10.0.0.2")],
             external_policy_local=True, node_port=30000)
    c = categorize_endpoints(sp, "n")
    assert [e.ip for e in c.cluster] == ["10.0.0.2"]
    assert [e.ip for e in c.local] == ["10.0.0.1"]
    assert [e.ip for e in c.reachable] == ["10.0.0.1", "10.0.0.2"]


def test_categorize_topology_hints():
    eps_ = [E("10.0.0.1", zones=["a"]), E("10.0.0.2", zones=["b"])]
    assert [e.ip for e in categorize_endpoints(_sp(eps_), "n", "a").cluster] == ["10.0.0.1"]
    assert len(categorize_endpoints(_sp(eps_), "n", "c").cluster) == 2  # no hint for our zone: ignore hints
    assert len(categorize_endpoints(_sp([*eps_, E("10.0.0.3")]), "n", "a").cluster) == 3  # one unhinted
    by_node = [E("10.0.0.1", nodes=["n"], zones=["a"]), E("10.0.0.2", nodes=["m"], zones=["a"])]
    assert len(categorize_endpoints(_sp(by_node), "n", "a").cluster) == 2  # gate off (v1.33 default)
    assert [e.ip for e in categorize_endpoints(_sp(by_node), "n", "a", prefer_same_node=True).cluster] == ["10.0.0.1"]


def test_changed_services_and_full_sync_triggers():
    a = desired_state_from_objects([svc(), eps([{"addresses": ["10.0.0.1"]}]), svc("other", ports=[{"port": 1}])], "n")
    b = desired_state_from_objects([svc(), eps([{"addresses": ["10.0.0.2"]}]), svc("other", ports=[{"port": 1}])], "n")
    c = desired_state_from_objects([svc(), eps([{"addresses": ["10.0.0.2"]}])], "n")
    assert changed_services(a, a) == frozenset()
    assert changed_services(a, b) == {"ns1/svc1"}
    assert changed_services(b, c) == {"ns1/other"}
    assert changed_services(None, c) == {"ns1/svc1"}
    assert changed_service_ports(a, b) == {ServicePortName("ns1", "svc1", "p80", "TCP")}
    assert changed_service_ports(b, c) == {ServicePortName("ns1", "other", "", "TCP")}
    assert changed_service_ports(None, c) == set(c.services) and changed_service_ports(c, c) == frozenset()
    assert needs_full_sync(None, a) and not needs_full_sync(a, b)
    assert needs_full_sync(a, DesiredState(node_name="n", services=a.services, topology_zone="z"))


def test_models_from_the_api_package_are_accepted():
    from podnet.api import load_objects

    text = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  clusterIP: 10.96.0.10
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: default, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [10.244.1.5], nodeName: n1, conditions: {ready: true}}]
ports: [{name: http, port: 8080}]
---
apiVersion: v1
kind: Node
metadata: {name: n1, labels: {topology.kubernetes.io/zone: z1}}
spec: {podCIDR: 10.244.1.0/24}
"""
    d = desired_state_from_objects(load_objects(text, check=False), "n1")
    (sp,) = d.services.values()
    assert str(sp.name) == "default/web:http" and sp.endpoints[0].local
    assert d.topology_zone == "z1" and d.node_pod_cidrs == ("10.244.1.0/24",)


junk = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=8) | st.sampled_from(["TCP", "10.0.0.1", "Local"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
        st.sampled_from(["name", "port", "protocol", "clusterIP", "ports", "addresses", "conditions", "ready",
                         "type", "externalIPs", "labels", "endpoints", "nodePort", "ipFamilies", "clusterIPs",
                         "sessionAffinityConfig", "clientIP", "timeoutSeconds", "hints", "forZones", "ingress"]),
        inner, max_size=4),
    max_leaves=12,
)


@example(spec=[{"addresses": ["10.0.0.1"], "hints": ["x"]}], status=[{"port": 80}], meta=None)
@example(spec=[{"addresses": ["10.0.0.1"], "hints": {"forZones": [{"name": ["a"]}]}}], status=[], meta=None)
@example(spec={"ports": [{"port": 80, "name": 5}], "clusterIP": "10.0.0.1", "externalIPs": [None, 3],
               "sessionAffinityConfig": {"clientIP": {"timeoutSeconds": "x"}}, "sessionAffinity": "ClientIP"},
         status={"loadBalancer": {"ingress": [{"ip": 5}, "x", {"ip": "1.2.3"}]}}, meta={"name": "a", "labels": []})
@given(spec=junk, status=junk, meta=junk)
def test_malformed_objects_raise_only_validation_errors(spec, status, meta):
    # A sync loop skips a bad object by catching ValidationError; nothing else may escape.
    for obj in (
        {"kind": "Service", "metadata": meta, "spec": spec, "status": status},
        {"kind": "Service", "metadata": {"name": "x", "namespace": "y"}, "spec": spec, "status": status},
        {"kind": "EndpointSlice", "metadata": meta, "endpoints": spec, "ports": status},
        {"kind": "EndpointSlice", "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "x"}},
         "endpoints": spec if isinstance(spec, list) else [spec], "ports": status if isinstance(status, list) else [status]},
    ):
        try:
            desired_state_from_objects([obj], "n")
        except ValidationError:
            pass
