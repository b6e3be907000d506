"""The loader reads what kubectl reads and turns every bad input into problems naming a field."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.api import (
    Deployment,
    EndpointSlice,
    Node,
    Pod,
    Service,
    dump_json,
    dump_yaml,
    from_json,
    load,
    load_objects,
    to_json,
)
from podnet.errors import ValidationError

SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: web
  labels: {app: web}
spec:
  selector: {app: web}
  ports:
  - name: http
    port: 80
    targetPort: http
  - name: dns
    port: 53
    protocol: UDP
    targetPort: 5353
"""

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: web-1, namespace: team, labels: {app: web}}
spec:
  nodeName: node-1
  containers:
  - name: web
    ports: [{name: http, containerPort: 8080}]
status:
  podIP: 10.244.1.5
  phase: Running
  conditions: [{type: Ready, status: "True"}]
"""


def test_multi_document_yaml_gives_typed_objects_with_defaults() -> None:
    svc, pod = load_objects(SERVICE + "---\n" + POD)
    assert isinstance(svc, Service) and isinstance(pod, Pod)
    assert svc.ref == "Service/default/web"
    assert pod.ref == "Pod/team/web-1"
    assert [p.protocol for p in svc.ports] == ["TCP", "UDP"]
    assert [p.effective_target_port for p in svc.ports] == ["http", 5353]
    assert pod.is_ready and pod.ips == ["10.244.1.5"] and pod.find_port("http", "TCP") == 8080
    assert pod.find_port("http", "UDP") is None


def test_kind_list_and_json() -> None:
    lst = {"apiVersion": "v1", "kind": "List", "items": [yaml.safe_load(SERVICE), yaml.safe_load(POD)]}
    objs = load_objects(json.dumps(lst))
    assert [o.KIND for o in objs] == ["Service", "Pod"]


def test_directory_reads_yaml_and_json_files_in_name_order(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text(POD)
    (tmp_path / "a.json").write_text(json.dumps(yaml.safe_load(SERVICE)))
    (tmp_path / "notes.txt").write_text("not a manifest")
    objs = load_objects(tmp_path)
    assert [o.KIND for o in objs] == ["Service", "Pod"]
    assert [o.KIND for o in load_objects(str(tmp_path / "b.yaml"))] == ["Pod"]


def test_other_kinds_parse() -> None:
    text = """
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.1.0/24}
status: {addresses: [{type: InternalIP, address: 192.168.50.11}]}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-1, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints:
- addresses: [10.1.2.3]
- addresses: [10.1.2.4]
  conditions: {ready: false, terminating: true}
ports: [{name: "", port: 80, protocol: TCP}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web}]}
"""
    node, es, dep = load_objects(text)
    assert isinstance(node, Node) and node.namespace is None and node.ref == "Node/node-1"
    assert node.internal_ip == "192.168.50.11"
    assert isinstance(es, EndpointSlice) and es.service_name == "ext"
    # unset conditions mean ready/serving (as kube-proxy reads them), terminating false
    assert [(e.is_ready, e.is_serving, e.is_terminating) for e in es.endpoints] == [
        (True, True, False),
        (False, True, True),  # serving unset: true, as kube-proxy reads it
    ]
    assert isinstance(dep, Deployment) and dep.replicas == 3


def test_round_trip_through_store_json_and_kubectl_dumps() -> None:
    objs = load_objects(SERVICE + "---\n" + POD)
    for o in objs:
        assert from_json(to_json(o)) == o
    dumped = yaml.safe_load(dump_yaml(objs[0]))
    assert dumped["spec"]["ports"][0]["targetPort"] == "http"
    assert "clusterIP" not in dumped["spec"]  # unset fields are omitted, as kubectl does
    lst = json.loads(dump_json(objs))
    assert lst["kind"] == "List" and [i["kind"] for i in lst["items"]] == ["Service", "Pod"]
    assert load_objects(dump_yaml(objs)) == objs


def test_unknown_fields_are_warnings_not_errors() -> None:
    loaded = load(SERVICE.replace("  selector:", "  selctor:"))
    assert not loaded.problems
    assert loaded.warnings == ["Service/default/web: unknown field 'spec.selctor'"]


def _problems(text: str) -> list[tuple[str, str, object]]:
    with pytest.raises(ValidationError) as ei:
        load_objects(text)
    return [(p.obj, p.field, p.value) for p in ei.value.problems]


@pytest.mark.parametrize(
    ("text", "field"),
    [
        ("apiVersion: v1\nkind: Service\nmetadata: {name: [\n", "(yaml)"),
        ("apiVersion: v1\nkind: Servce\nmetadata: {name: x}\n", "kind"),
        ("apiVersion: apps/v1\nkind: Service\nmetadata: {name: x}\n", "apiVersion"),
        ("kind: Service\nmetadata: {name: x}\nspec: {ports: [{port: 80}]}\n", "apiVersion"),
        ("- just\n- a list\n", "(document)"),
        ("apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {ports: [{port: '80'}]}\n", "spec.ports[0].port"),
        ("apiVersion: v1\nkind: List\nitems: 5\n", "items"),
    ],
)
def test_malformed_documents_name_the_field(text: str, field: str) -> None:
    assert field in [f for _, f, _ in _problems(text)]


def test_every_problem_of_every_document_at_once() -> None:
    bad = SERVICE.replace("port: 80", "port: 0").replace("port: 53", "port: '53'")
    problems = _problems(bad + "---\n" + POD.replace("containerPort: 8080", "containerPort: 70000"))
    assert ("Service/default/web", "spec.ports[0].port", 0) in problems
    assert ("Service/default/web", "spec.ports[1].port", "53") in problems
    assert ("Pod/team/web-1", "spec.containers[0].ports[0].containerPort", 70000) in problems
    # the dropped, wrongly typed port must not also be reported as "port 0"
    assert ("Service/default/web", "spec.ports[1].port", 0) not in problems


def test_missing_file_is_a_problem(tmp_path: Path) -> None:
    loaded = load(tmp_path / "nope.yaml")
    assert loaded.problems and loaded.problems[0].field == "-f"


# --- property tests -------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**40), 2**40), st.floats(allow_nan=True), st.text(max_size=12),
    st.sampled_from(["v1", "Service", "Pod", "Node", "EndpointSlice", "apps/v1", "discovery.k8s.io/v1", "List",
                     "TCP", "10.96.0.1", "None", "NodePort", "http", 80, 30080]),
)
_keys = st.one_of(
    st.text(max_size=8),
    st.sampled_from(["apiVersion", "kind", "metadata", "name", "namespace", "labels", "spec", "ports", "port",
                     "targetPort", "nodePort", "protocol", "selector", "clusterIP", "items", "containers",
                     "status", "podIP", "endpoints", "addresses", "conditions", "ready", "type"]),
)
_json = st.recursive(_scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                       st.dictionaries(_keys, inner, max_size=6)), max_leaves=30)


@st.composite
def _documents(draw: st.DrawFn) -> dict[str, object]:
    doc = draw(st.dictionaries(_keys, _json, max_size=6))
    kind = draw(st.sampled_from(["Service", "Pod", "Node", "EndpointSlice", "Deployment", "List", "Foo"]))
    api = {"Service": "v1", "Pod": "v1", "Node": "v1", "EndpointSlice": "discovery.k8s.io/v1",
           "Deployment": "apps/v1", "List": "v1", "Foo": "v1"}[kind]
    if draw(st.booleans()):
        doc["kind"], doc["apiVersion"] = kind, api
    return doc


def _check_no_crash_and_fields(source: str) -> None:
    loaded = load(source)  # must not raise, whatever the input
    for p in loaded.problems:
        assert p.field, p
        assert str(p)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=200))
def test_no_text_crashes_the_loader(text: str) -> None:
    _check_no_crash_and_fields("\n" + text)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_documents(), min_size=1, max_size=3))
def test_no_structure_crashes_the_loader_and_rejections_name_a_field(docs: list[dict[str, object]]) -> None:
    text = "\n---\n".join(yaml.safe_dump(d) for d in docs)
    _check_no_crash_and_fields(text)
    loaded = load(text)
    if not loaded.problems:
        # whatever was accepted survives the store's JSON round trip unchanged
        for o in loaded.objects:
            assert from_json(to_json(o)) == o


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["port", "targetPort", "nodePort", "protocol", "name"]), _scalars)
def test_mutated_service_port_is_accepted_or_rejected_by_field(key: str, value: object) -> None:
    doc = yaml.safe_load(SERVICE)
    doc["spec"]["type"] = "NodePort"
    doc["spec"]["ports"][0][key] = value
    loaded = load(json.dumps(doc, allow_nan=True))
    for p in loaded.problems:
        assert p.field.startswith("spec.ports") or p.field == "(yaml)", p


def test_recursive_yaml_alias_is_a_problem_not_a_crash() -> None:
    loaded = load("&a\napiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selector: *a}\n")
    assert loaded.problems and all(p.field for p in loaded.problems)


SVC_JSON = (b'{"apiVersion":"v1","kind":"Service","metadata":{"name":"a","namespace":"default"},'
            b'"spec":{"ports":[{"port":80}]}}')


@pytest.mark.parametrize("value", [b'{"apiVersion":"v1","kind":"List","items":[]}', b'{"kind":"List"}',
                                   b'{"apiVersion":"v1","kind":"List","items":[' + SVC_JSON + b',' + SVC_JSON + b']}'])
def test_a_stored_list_is_refused_by_name(value):
    """A store value is one object; a List (found by the store-values fuzzer) is a ValidationError naming
    `kind`, not an IndexError."""
    with pytest.raises(ValidationError) as e:
        from_json(value)
    assert [p.field for p in e.value.problems] == ["kind"] and "one object" in str(e.value)
