"""kubectl's typed commands send Kubernetes protobuf (client-go's typed clients never fall back to JSON): each must
store exactly the object that the same command's JSON (`--dry-run=client -o json`) stores, and `kubectl scale`
works through the Scale subresource. (`kubectl run` sends JSON; it is here for its generated object.)"""

from __future__ import annotations

import json

import pytest

from .conftest import Api

# (the command after `kubectl`, with NAME where the object's name goes; the resource to read back; sent as protobuf)
TYPED = [
    (["create", "configmap", "NAME", "--from-literal=a=b", "--from-literal=empty="], "configmap", True),
    (["create", "namespace", "NAME"], "namespace", True),
    (["run", "NAME", "--image=busybox", "--labels=app=x,tier=t", "--port=8080", "--env=A=1", "--", "sleep", "9"],
     "pod", False),
    (["create", "deployment", "NAME", "--image=nginx", "--replicas=0", "--port=80"], "deployment", True),
    (["create", "service", "nodeport", "NAME", "--tcp=80:8080", "--tcp=81:http"], "service", True),
    (["create", "service", "clusterip", "NAME", "--tcp=5353:53"], "service", True),
]

SERVER_SET = ("uid", "resourceVersion", "creationTimestamp", "managedFields", "generation")


def _normal(obj: dict, name: str) -> dict:
    """The object without what the server sets per write, with its own name replaced by NAME."""
    meta = {k: v for k, v in obj["metadata"].items() if k not in SERVER_SET}
    text = json.dumps({**obj, "metadata": meta})
    spec = obj.get("spec") or {}
    for ip in [spec.get("clusterIP"), *(spec.get("clusterIPs") or [])] + [p.get("nodePort") for p in spec.get(
            "ports", []) if isinstance(p, dict)]:
        if ip:  # allocated per object: equal values are not expected
            text = text.replace(json.dumps(ip), '"ALLOCATED"')
    return json.loads(text.replace(name, "NAME"))


@pytest.mark.parametrize("cmd,kind,protobuf", TYPED, ids=[" ".join(c[:3]) for c, _, _ in TYPED])
def test_protobuf_body_stores_what_json_stores(api: Api, cmd: list[str], kind: str, protobuf: bool) -> None:
    pb_name, js_name = f"pb-{kind[:3]}-{len(cmd)}", f"js-{kind[:3]}-{len(cmd)}"
    r = api.kubectl("-v=8", *[pb_name if a == "NAME" else a for a in cmd], check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    # the path under test was taken
    assert ("Content-Type: application/vnd.kubernetes.protobuf" in r.stderr) == protobuf
    as_json = api.kubectl("--dry-run=client", "-o", "json", *[js_name if a == "NAME" else a for a in cmd]).stdout
    api.kubectl("create", "-f", "-", input=as_json)
    try:
        pb = json.loads(api.kubectl("get", kind, pb_name, "-o", "json").stdout)
        js = json.loads(api.kubectl("get", kind, js_name, "-o", "json").stdout)
        assert _normal(pb, pb_name) == _normal(js, js_name)
    finally:
        api.kubectl("delete", kind, pb_name, js_name, "--wait=false", check=False)


def test_protobuf_keeps_pointer_zero_values(api: Api) -> None:
    """replicas is a pointer in Go: 0 is sent and kept; it must not become the default of 1."""
    api.kubectl("create", "deployment", "zero", "--image=nginx", "--replicas=0")
    try:
        assert api.kubectl("get", "deploy", "zero", "-o", "jsonpath={.spec.replicas}").stdout == "0"
    finally:
        api.kubectl("delete", "deploy", "zero")


def test_scale_subresource(api: Api) -> None:
    api.kubectl("create", "deployment", "sc", "--image=nginx", "--replicas=1")
    try:
        assert api.kubectl("scale", "deploy", "sc", "--replicas=3").stdout.strip() == "deployment.apps/sc scaled"
        assert api.kubectl("get", "deploy", "sc", "-o", "jsonpath={.spec.replicas}").stdout == "3"
        stale = api.kubectl("scale", "deploy", "sc", "--current-replicas=2", "--replicas=1", check=False)
        assert stale.returncode != 0 and "Expected replicas to be 2, was 3" in stale.stderr
        scale = json.loads(api.kubectl("get", "--raw", "/apis/apps/v1/namespaces/default/deployments/sc/scale")
                           .stdout)
        assert scale["kind"] == "Scale" and scale["spec"] == {"replicas": 3}
        assert scale["status"]["selector"] == "app=sc"
        bad = api.kubectl("patch", "deploy", "sc", "--subresource=scale", "--type=merge", "-p",
                          '{"spec":{"replicas":-2}}', check=False)
        assert bad.returncode != 0 and "spec.replicas" in bad.stderr
        assert api.kubectl("get", "deploy", "sc", "-o", "jsonpath={.spec.replicas}").stdout == "3"
    finally:
        api.kubectl("delete", "deploy", "sc")
