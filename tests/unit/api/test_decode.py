"""decode_endpoint_slice: every malformed endpoint field is named, with its value; good ones decode."""

from __future__ import annotations

import pytest

from podnet.api.decode import decode_endpoint_slice
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
