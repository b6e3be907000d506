"""Merge patch, strategic-merge patch and field ownership, as pure functions."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.apiserver import fieldmanager, patch

scalars = st.one_of(st.integers(-5, 5), st.text(max_size=3), st.booleans())
docs = st.recursive(scalars, lambda inner: st.dictionaries(st.sampled_from("abcd"), inner, max_size=3), max_leaves=8)
maps = st.dictionaries(st.sampled_from("abcd"), docs, max_size=4)


def diff(a: Any, b: Any) -> Any:
    """The merge patch that turns a into b (RFC 7386's inverse)."""
    if not isinstance(a, dict) or not isinstance(b, dict):
        return b
    out: dict[str, Any] = {k: None for k in a if k not in b}
    for k, v in b.items():
        if k not in a or a[k] != v:
            out[k] = diff(a.get(k), v)
    return out


@settings(max_examples=200, deadline=None)
@given(maps, maps)
def test_merge_patch_of_a_diff_gives_the_target(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert patch.merge_patch(a, diff(a, b)) == b


@settings(max_examples=200, deadline=None)
@given(maps, maps)
def test_strategic_merge_equals_merge_patch_where_no_list_has_a_key(a: dict[str, Any], b: dict[str, Any]) -> None:
    p = diff(a, b)
    assert patch.strategic_merge_patch(a, p, "ConfigMap") == patch.merge_patch(a, p)


def test_service_ports_merge_on_port_and_obey_directives() -> None:
    live = {"spec": {"ports": [{"port": 80, "targetPort": 80}, {"port": 443, "targetPort": 443}]}}
    out = patch.strategic_merge_patch(live, {"spec": {"ports": [{"port": 80, "targetPort": 8080}]}}, "Service")
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 8080}, {"port": 443, "targetPort": 443}]
    out = patch.strategic_merge_patch(live, {"spec": {"ports": [{"port": 443, "$patch": "delete"}]}}, "Service")
    assert out["spec"]["ports"] == [{"port": 80, "targetPort": 80}]
    out = patch.strategic_merge_patch(live, {"spec": {"$setElementOrder/ports": [{"port": 443}, {"port": 80}],
                                                      "ports": [{"port": 80, "name": "http"}]}}, "Service")
    assert [p["port"] for p in out["spec"]["ports"]] == [443, 80]
    out = patch.strategic_merge_patch({"spec": {"a": 1, "b": 2}}, {"spec": {"$retainKeys": ["a"], "a": 3}}, "X")
    assert out == {"spec": {"a": 3}}
    with pytest.raises(patch.PatchError, match="merge key 'port'"):
        patch.strategic_merge_patch(live, {"spec": {"ports": [{"targetPort": 1}]}}, "Service")


def test_json_patch_errors_name_the_problem() -> None:
    assert patch.json_patch({"a": 1}, [{"op": "replace", "path": "/a", "value": 2}]) == {"a": 2}
    with pytest.raises(patch.PatchError):
        patch.json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    with pytest.raises(patch.PatchError):
        patch.json_patch({"a": 1}, {"op": "add"})


SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"app": "web"}},
       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80, "targetPort": 80}]}}


def test_fieldsv1_round_trip_and_display() -> None:
    f = fieldmanager.fields(SVC, "Service")
    assert ("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:targetPort") in f
    assert fieldmanager.from_fieldsv1(fieldmanager.to_fieldsv1(f)) == f
    assert fieldmanager.display(("f:spec", "f:ports", 'k:{"port":80,"protocol":"TCP"}', "f:targetPort")) == \
        '.spec.ports[port=80,protocol="TCP"].targetPort'


def test_apply_conflicts_force_and_removal() -> None:
    live = fieldmanager.apply(None, SVC, manager="a", force=False, kind="Service")
    same = fieldmanager.apply(live, SVC, manager="b", force=False, kind="Service")  # same values: co-owned
    assert {e["manager"] for e in same["metadata"]["managedFields"]} == {"a", "b"}
    other = {**SVC, "spec": {**SVC["spec"], "ports": [{"port": 80, "targetPort": 9090}]}}
    with pytest.raises(fieldmanager.ApplyConflict) as e:
        fieldmanager.apply(live, other, manager="b", force=False, kind="Service")
    assert e.value.conflicts == [("a", '.spec.ports[port=80,protocol="TCP"].targetPort')]
    forced = fieldmanager.apply(live, other, manager="b", force=True, kind="Service")
    assert forced["spec"]["ports"][0]["targetPort"] == 9090
    shrunk = {**SVC, "metadata": {"name": "web"}}
    after = fieldmanager.apply(live, shrunk, manager="a", force=False, kind="Service")
    assert "labels" not in after["metadata"] or "app" not in after["metadata"]["labels"]


def test_an_update_takes_the_fields_it_changes() -> None:
    live = fieldmanager.apply(None, SVC, manager="a", force=False, kind="Service")
    new = {**live, "spec": {**live["spec"], "selector": {"app": "other"}}}
    fieldmanager.track_update(live, new, manager="editor", kind="Service")
    owners = {e["manager"]: fieldmanager.from_fieldsv1(e["fieldsV1"]) for e in new["metadata"]["managedFields"]}
    assert ("f:spec", "f:selector", "f:app") in owners["editor"]
    assert ("f:spec", "f:selector", "f:app") not in owners["a"]
