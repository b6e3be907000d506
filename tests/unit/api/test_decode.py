"""The proxy's decoding path: malformed fields are named with their value; good ones decode as kube-proxy reads them."""

from __future__ import annotations

import pytest

from podnet.api.decode import decode_endpoint_slice, decode_service
from podnet.errors import ValidationError


def _slice(*endpoints: object) -> dict:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "s", "labels": {"kubernetes.io/service-name": "web"}},
            "ports": [{"name": "http", "port": 8080}], "endpoints": list(endpoints)}


def test_conditions_decode_with_kube_proxys_defaults() -> None:
    got = decode_endpoint_slice(_slice(
        {"addresses": ["10.0.0.1"]},
        {"addresses": ["010.0.0.2"], "conditions": {"ready": False, "serving": True, "terminating": True}},
    ))
    assert [(e.address, e.ready, e.serving, e.terminating) for e in got.endpoints] == [
        ("10.0.0.1", True, True, False), ("10.0.0.2", False, True, True)]


def test_every_bad_condition_is_named_with_its_value() -> None:
    with pytest.raises(ValidationError) as err:
        decode_endpoint_slice(_slice(
            {"addresses": ["10.0.0.1"], "conditions": {"ready": 1, "serving": None, "terminating": "yes"}},
            {"addresses": ["10.0.0.2"], "conditions": {"ready": True}},
            {"addresses": ["10.0.0.3"], "conditions": {"serving": 0}},
            {"addresses": ["10.0.0.4"], "conditions": ["ready"]},
        ))
    assert [(p.field, p.value, p.reason) for p in err.value.problems] == [
        ("endpoints[0].conditions.ready", 1, "must be true or false"),
        ("endpoints[0].conditions.terminating", "yes", "must be true or false"),
        ("endpoints[2].conditions.serving", 0, "must be true or false"),
        ("endpoints[3].conditions", ["ready"], "must be a mapping"),
    ]


def _service(spec: dict) -> dict:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
            "spec": {"ports": [{"name": "http", "port": 80}], **spec}}


@pytest.mark.parametrize(("spec", "family", "cluster_ip"), [
    ({"clusterIP": "10.96.0.10"}, "IPv4", "10.96.0.10"),
    ({"clusterIP": "10.096.000.010"}, "IPv4", "10.96.0.10"),  # leading zeros read as decimal
    ({"clusterIP": "::ffff:10.96.0.10"}, "IPv4", "10.96.0.10"),  # IPv4-mapped counts as IPv4
    ({"clusterIP": "fd00:0::a"}, "IPv6", "fd00::a"),
    ({"clusterIP": "fd00::a"}, "IPv4", ""),
    ({"clusterIPs": ["10.96.0.10", "fd00::a"], "ipFamilies": ["IPv4", "IPv6"]}, "IPv6", "fd00::a"),
    ({"clusterIP": "None"}, "IPv4", ""),
])
def test_cluster_ip_of_the_family_in_canonical_form(spec: dict, family: str, cluster_ip: str) -> None:
    assert decode_service(_service(spec), family).cluster_ip == cluster_ip


@pytest.mark.parametrize(("spec", "field", "value"), [
    ({"clusterIP": "10.96.0.256"}, "spec.clusterIP", "10.96.0.256"),
    ({"clusterIP": 10}, "spec.clusterIP", 10),
    ({"clusterIPs": ["x", "fd00::a"], "ipFamilies": ["IPv4", "IPv6"]}, "spec.clusterIPs[0]", "x"),
])
def test_a_cluster_ip_that_is_no_ip_is_named(spec: dict, field: str, value: object) -> None:
    with pytest.raises(ValidationError) as err:
        decode_service(_service(spec))
    assert [(p.field, p.value, p.reason) for p in err.value.problems] == [(field, value, "not an IP address")]
