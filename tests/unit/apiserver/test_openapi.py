"""The OpenAPI v3 documents: what kubectl looks for before it writes, and merge keys equal to the server's."""

from __future__ import annotations

from podnet.apiserver import openapi, patch


def test_every_patch_operation_takes_field_validation() -> None:
    doc = openapi.document("", "v1")
    assert doc is not None
    item = doc["paths"]["/api/v1/namespaces/{namespace}/services/{name}"]
    assert item["patch"]["x-kubernetes-group-version-kind"] == {"group": "", "version": "v1", "kind": "Service"}
    assert "fieldValidation" in [p["name"] for p in item["patch"]["parameters"]]
    assert "/api/v1/nodes/{name}" in doc["paths"]  # cluster-scoped kinds have no namespace segment
    assert openapi.document("nosuch.group", "v1") is None


def test_schemas_carry_the_merge_keys_patch_py_merges_with() -> None:
    svc = openapi.document("", "v1")["components"]["schemas"]["io.k8s.api.core.v1.Service"]  # type: ignore[index]
    ports = svc["properties"]["spec"]["properties"]["ports"]
    assert ports["x-kubernetes-patch-merge-key"] == patch.merge_key("Service", "spec.ports") == "port"
    assert ports["items"]["properties"]["targetPort"]["format"] == "int-or-string"
    deploy = openapi.document("apps", "v1")["components"]["schemas"]["io.k8s.api.apps.v1.Deployment"]  # type: ignore[index]
    containers = deploy["properties"]["spec"]["properties"]["template"]["properties"]["spec"]["properties"]["containers"]
    assert containers["x-kubernetes-patch-merge-key"] == "name"


def test_index_lists_every_group_version() -> None:
    paths = openapi.index()["paths"]
    assert set(paths) == {"api/v1", "apis/apps/v1", "apis/discovery.k8s.io/v1", "apis/rbac.authorization.k8s.io/v1"}
    assert all(v["serverRelativeURL"].startswith(f"/openapi/v3/{k}?hash=") for k, v in paths.items())
