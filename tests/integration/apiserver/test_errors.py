"""Bad input through the API: the real server's status codes, a Status naming the field, and a store
whose revision does not move."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

import pytest

from .conftest import Api

SVC = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web"},
       "spec": {"selector": {"app": "web"}, "ports": [{"port": 80}]}}


def call(api: Api, method: str, path: str, body: Any = None, *, ctype: str = "application/json",
         raw: bytes | None = None, cert: bool = True, token: str | None = None) -> tuple[int, dict[str, Any]]:
    data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
    req = urllib.request.Request(api.url + path, data=data, method=method, headers={"Content-Type": ctype})
    if token:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, context=api.ssl_context(client_cert=cert), timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


SERVICES = "/api/v1/namespaces/default/services"


@pytest.fixture
def clean(api: Api) -> Any:
    yield
    call(api, "DELETE", f"{SERVICES}/web")
    call(api, "DELETE", f"{SERVICES}/other")


def test_anonymous_is_refused_and_a_token_is_accepted(api: Api) -> None:
    code, status = call(api, "GET", SERVICES, cert=False)
    assert (code, status["kind"], status["reason"]) == (401, "Status", "Unauthorized")
    code, _ = call(api, "GET", SERVICES, cert=False, token="not-the-token")
    assert code == 401
    code, body = call(api, "GET", SERVICES, cert=False, token=api.token())
    assert code == 200 and body["kind"] == "ServiceList"


@pytest.mark.parametrize(("mutate", "field"), [
    (lambda s: s["spec"]["ports"][0].update(port=0), "spec.ports[0].port"),
    (lambda s: s["spec"]["ports"][0].update(port="80"), "spec.ports[0].port"),
    (lambda s: s["metadata"].update(name="Bad_Name"), "metadata.name"),
    (lambda s: s["spec"].update(type="Magic"), "spec.type"),
])
def test_invalid_objects_get_422_naming_the_field(api: Api, clean: Any, mutate: Any, field: str) -> None:
    svc = json.loads(json.dumps(SVC))
    mutate(svc)
    before = api.revision()
    code, status = call(api, "POST", SERVICES, svc)
    assert code == 422 and status["reason"] == "Invalid", status
    assert field in [c["field"] for c in status["details"]["causes"]], status
    assert api.revision() == before


def test_conflicts_and_taken_allocations(api: Api, clean: Any) -> None:
    code, created = call(api, "POST", SERVICES, SVC)
    assert code == 201
    code, status = call(api, "POST", SERVICES, SVC)
    assert (code, status["reason"]) == (409, "AlreadyExists")
    stale = json.loads(json.dumps(created))
    stale["metadata"]["resourceVersion"] = "1"
    stale["metadata"]["labels"] = {"x": "y"}
    before = api.revision()
    code, status = call(api, "PUT", f"{SERVICES}/web", stale)
    assert (code, status["reason"]) == (409, "Conflict")
    taken = {**SVC, "metadata": {"name": "other"}, "spec": {**SVC["spec"], "clusterIP": created["spec"]["clusterIP"]}}
    code, status = call(api, "POST", SERVICES, taken)
    assert api.revision() == before
    assert code == 422, status
    assert "spec.clusterIP" in [c["field"] for c in status["details"]["causes"]]
    assert "already allocated" in status["message"]
    np = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "np1"},
          "spec": {"type": "NodePort", "selector": {"app": "x"}, "ports": [{"port": 80, "nodePort": 30123}]}}
    code, _ = call(api, "POST", SERVICES, np)
    assert code == 201
    before = api.revision()
    code, status = call(api, "POST", SERVICES, {**np, "metadata": {"name": "np2"}})
    moved = api.revision() != before
    call(api, "DELETE", f"{SERVICES}/np1")
    assert code == 422, status
    assert "spec.ports[0].nodePort" in [c["field"] for c in status["details"]["causes"]]
    assert not moved


def test_malformed_oversize_and_unknown(api: Api) -> None:
    before = api.revision()
    code, status = call(api, "POST", SERVICES, raw=b"{not json")
    assert (code, status["reason"]) == (400, "BadRequest")
    code, status = call(api, "POST", SERVICES, raw=b"[]")
    assert code == 400
    big = {**SVC, "metadata": {"name": "web", "annotations": {"a": "x" * (3 * 1024 * 1024 + 10)}}}
    code, status = call(api, "POST", SERVICES, big)
    assert (code, status["reason"]) == (413, "RequestEntityTooLarge")
    # under the request limit, over the store's (etcd's 1.5 MiB): refused as too large, nothing written
    mid = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "big"}, "data": {"a": "x" * (2 << 20)}}
    code, status = call(api, "POST", "/api/v1/namespaces/default/configmaps", mid)
    assert (code, status["reason"]) == (413, "RequestEntityTooLarge"), status
    code, status = call(api, "GET", "/api/v1/namespaces/default/widgets")
    assert (code, status["reason"]) == (404, "NotFound")
    code, status = call(api, "GET", f"{SERVICES}/nothing-here")
    assert (code, status["details"]["name"]) == (404, "nothing-here")
    code, status = call(api, "POST", SERVICES, {**SVC, "kind": "Pod"})
    assert code == 400
    code, status = call(api, "POST", SERVICES + "?fieldValidation=Strict",
                        {**SVC, "spec": {**SVC["spec"], "bogus": 1}})
    assert code == 400 and "bogus" in status["message"]
    # protobuf: a cut-short body, and a well-formed Service with a port out of range (validated as JSON is)
    pb = "application/vnd.kubernetes.protobuf"
    code, status = call(api, "POST", SERVICES, raw=b"k8s\x00\x0a\x20", ctype=pb)
    assert (code, status["reason"]) == (400, "BadRequest") and "protobuf" in status["message"], status
    meta, port = b"\x0a\x03web", b"\x18" + bytes([0xff, 0xff, 0x07])  # name "web"; port 131071
    spec = b"\x0a" + bytes([len(port)]) + port
    obj = b"\x0a" + bytes([len(meta)]) + meta + b"\x12" + bytes([len(spec)]) + spec
    tm = b"\x0a\x02v1\x12\x07Service"
    body = b"k8s\x00\x0a" + bytes([len(tm)]) + tm + b"\x12" + bytes([len(obj)]) + obj
    code, status = call(api, "POST", SERVICES, raw=body, ctype=pb)
    assert (code, status["reason"]) == (422, "Invalid"), status
    assert status["details"]["causes"][0]["field"] == "spec.ports[0].port", status
    code, status = call(api, "POST", SERVICES, raw=b"\xa1\x01", ctype="application/cbor")
    assert code == 415
    assert api.revision() == before
