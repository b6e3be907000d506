"""Unknown-field warnings: the same texts, paths and order however the loader finds them.

The loader only walks an object for unknown fields when model building saw one; these cases pin what the
walk reports, so a shortcut that misses an extra (nested in a list, under a quiet model, after a type
error) fails here.
"""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel

from podnet.api import EndpointSlice, Pod, load, loader
from podnet.api.meta import K8sModel, UnknownFieldProbe

SERVICE = {
    "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
    "spec": {"clusterIP": "10.96.0.10", "ports": [{"name": "http", "port": 80}, {"name": "dns", "port": 53}]},
}
SLICE = {
    "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
    "metadata": {"name": "web-1", "labels": {"kubernetes.io/service-name": "web"}},
    "ports": [{"name": "http", "port": 8080}],
    "endpoints": [{"addresses": ["10.0.0.1"]}, {"addresses": ["10.0.0.2"], "conditions": {"ready": True}}],
}


def _warnings(*docs: dict) -> list[str]:
    loaded = load(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(docs)}), check=False)
    assert loaded.problems == []
    return loaded.warnings


def test_clean_objects_have_no_warnings() -> None:
    assert _warnings(SERVICE, SLICE) == []


def test_extras_everywhere_in_walk_order() -> None:
    svc = json.loads(json.dumps(SERVICE))
    svc["zzz"] = 1
    svc["metadata"]["lables"] = {"a": "b"}
    svc["spec"]["ports"][1]["nodeport"] = 30000
    svc["spec"]["selctor"] = {"app": "web"}
    svc["status"] = {"loadBalancer": {"ingress": [{"ip": "1.2.3.4"}, {"ip": "1.2.3.5", "ipmode": "VIP"}]}}
    assert _warnings(svc) == [
        "Service/default/web: unknown field 'zzz'",
        "Service/default/web: unknown field 'metadata.lables'",
        "Service/default/web: unknown field 'spec.selctor'",
        "Service/default/web: unknown field 'spec.ports[1].nodeport'",
        "Service/default/web: unknown field 'status.loadBalancer.ingress[1].ipmode'",
    ]


def test_extra_deep_in_an_endpoint_of_one_object_of_a_list() -> None:
    sl = json.loads(json.dumps(SLICE))
    sl["endpoints"][1]["conditions"]["redy"] = True
    assert _warnings(SERVICE, sl, SERVICE | {"metadata": {"name": "other"}}) == [
        "EndpointSlice/default/web-1: unknown field 'endpoints[1].conditions.redy'",
    ]


def test_quiet_models_stay_quiet_but_their_children_warn() -> None:
    pod = {
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
        "spec": {"priority": 1, "containers": [
            {"name": "c", "resources": {"limits": {"cpu": "1"}}, "ports": [{"containerPort": 80, "hostport": 1}]},
        ]},
    }
    assert _warnings(pod) == ["Pod/default/p: unknown field 'spec.containers[0].ports[0].hostport'"]
    quiet = json.loads(json.dumps(pod))
    del quiet["spec"]["containers"][0]["ports"][0]["hostport"]
    assert _warnings(quiet) == []


def test_warnings_survive_a_type_error_elsewhere() -> None:
    svc = json.loads(json.dumps(SERVICE))
    svc["spec"]["ports"][0]["port"] = "80"
    svc["spec"]["selctor"] = {"app": "web"}
    loaded = load(json.dumps(svc), check=False)
    assert [p.field for p in loaded.problems] == ["spec.ports[0].port"]
    assert loaded.warnings == ["Service/default/web: unknown field 'spec.selctor'"]


def test_only_objects_with_a_warning_are_walked(monkeypatch: pytest.MonkeyPatch) -> None:
    walked: list[str] = []
    real = loader.unknown_fields

    def spy(model: BaseModel, path: str = "") -> list[str]:
        walked.append(model.name)  # type: ignore[attr-defined]
        return real(model, path)

    monkeypatch.setattr(loader, "unknown_fields", spy)
    sl = json.loads(json.dumps(SLICE))
    sl["endpoints"][1]["conditions"]["redy"] = True
    quiet_pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
                 "spec": {"priority": 1, "containers": [{"name": "c", "resources": {}}]}}
    assert len(_warnings(SERVICE, sl, quiet_pod)) == 1
    assert walked == ["web-1"]


def test_probe_notes_unknown_fields_at_any_depth_of_warning_models() -> None:
    def found(cls: type[K8sModel], data: dict) -> bool:
        probe = UnknownFieldProbe()
        cls.model_validate(data, context=probe)
        return probe.found

    assert not found(EndpointSlice, SLICE)
    assert found(EndpointSlice, {**SLICE, "endpoints": [{"addresses": [], "conditions": {"x": 1}}]})
    assert not found(Pod, {"spec": {"containers": [{"name": "c", "resources": {}}]}})
    assert found(Pod, {"spec": {"containers": [{"ports": [{"hostport": 1}]}]}})
    EndpointSlice.model_validate({**SLICE, "bogus": 1})  # without a probe: no error, nothing noted
