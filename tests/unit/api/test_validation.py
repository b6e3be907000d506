"""Kubernetes' validation rules, one case per rule: each names the field and the value."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from podnet.api import load
from podnet.api.validation import dns1035_label, dns1123_subdomain, iana_svc_name, qualified_name

BASE: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "Service",
    "metadata": {"name": "web"},
    "spec": {"type": "NodePort", "selector": {"app": "web"},
             "ports": [{"name": "http", "port": 80, "targetPort": 8080, "nodePort": 30080}]},
}


def _fields(doc: dict[str, Any]) -> list[tuple[str, object]]:
    import json

    return [(p.field, p.value) for p in load(json.dumps(doc)).problems]


def _svc(**changes: Any) -> dict[str, Any]:
    doc = copy.deepcopy(BASE)
    for path, value in changes.items():
        node = doc
        parts = path.split("__")
        for part in parts[:-1]:
            node = node[int(part)] if part.isdigit() else node[part]
        last = parts[-1]
        node[int(last) if last.isdigit() else last] = value
    return doc


def test_valid_service_has_no_problems() -> None:
    assert _fields(BASE) == []


@pytest.mark.parametrize(
    ("changes", "field", "value"),
    [
        ({"metadata__name": "Web"}, "metadata.name", "Web"),
        ({"metadata__name": "1web"}, "metadata.name", "1web"),  # services are DNS-1035 labels
        ({"metadata__namespace": "a.b"}, "metadata.namespace", "a.b"),
        ({"metadata__labels": {"app": "-x"}}, "metadata.labels", "-x"),
        ({"spec__ports__0__port": 0}, "spec.ports[0].port", 0),
        ({"spec__ports__0__port": 65536}, "spec.ports[0].port", 65536),
        ({"spec__ports__0__protocol": "ICMP"}, "spec.ports[0].protocol", "ICMP"),
        ({"spec__ports__0__targetPort": "HTTP"}, "spec.ports[0].targetPort", "HTTP"),
        ({"spec__ports__0__targetPort": "a-very-long-port-name"}, "spec.ports[0].targetPort",
         "a-very-long-port-name"),
        ({"spec__ports__0__targetPort": 70000}, "spec.ports[0].targetPort", 70000),
        ({"spec__ports__0__nodePort": 70000}, "spec.ports[0].nodePort", 70000),
        ({"spec__type": "ClusterIP"}, "spec.ports[0].nodePort", 30080),
        ({"spec__type": "ExternalName"}, "spec.externalName", None),  # the CNAME target is required
        ({"spec__type": "ExternalName", "spec__externalName": "Not_A.Name"}, "spec.externalName", "Not_A.Name"),
        ({"spec__type": "ExternalName", "spec__externalName": "db.example.com", "spec__clusterIP": "10.96.0.5"},
         "spec.clusterIPs", ["10.96.0.5"]),
        ({"spec__type": "ExternalName", "spec__externalName": "db.example.com", "spec__ipFamilies": ["IPv4"]},
         "spec.ipFamilies", ["IPv4"]),
        ({"spec__type": "Bogus"}, "spec.type", "Bogus"),
        ({"spec__clusterIP": "10.96.0.999"}, "spec.clusterIP", "10.96.0.999"),
        ({"spec__clusterIP": "None"}, "spec.clusterIP", "None"),  # headless NodePort
        ({"spec__externalIPs": ["127.0.0.1"]}, "spec.externalIPs[0]", "127.0.0.1"),
        ({"spec__sessionAffinity": "Sticky"}, "spec.sessionAffinity", "Sticky"),
        ({"spec__sessionAffinity": "ClientIP", "spec__sessionAffinityConfig": {"clientIP": {"timeoutSeconds": 0}}},
         "spec.sessionAffinityConfig.clientIP.timeoutSeconds", 0),
        ({"spec__externalTrafficPolicy": "Node"}, "spec.externalTrafficPolicy", "Node"),
        ({"spec__loadBalancerSourceRanges": ["10.0.0.0/8"]}, "spec.loadBalancerSourceRanges", None),
        ({"spec__ports": []}, "spec.ports", None),
    ],
)
def test_service_rule(changes: dict[str, Any], field: str, value: object) -> None:
    assert (field, value) in _fields(_svc(**changes))


def test_external_name_service_needs_no_ports() -> None:
    """ExternalName: a CNAME, no virtual IP; neither ports nor a selector are required (no spurious
    `spec.ports: Required value`), and a fully qualified target with a trailing dot is valid."""
    doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "db"},
           "spec": {"type": "ExternalName", "externalName": "db.example.com."}}
    assert _fields(doc) == []


def test_pod_hostname_and_subdomain_are_dns_labels() -> None:
    doc = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
           "spec": {"hostname": "web_0", "subdomain": "Web", "containers": [{"name": "c"}]}}
    assert set(_fields(doc)) == {("spec.hostname", "web_0"), ("spec.subdomain", "Web")}


def test_duplicate_port_names_and_missing_names() -> None:
    doc = _svc()
    doc["spec"]["ports"].append({"name": "http", "port": 81, "nodePort": 30081})
    doc["spec"]["ports"].append({"port": 82})
    doc["spec"]["ports"].append({"name": "again", "port": 80, "nodePort": 30080})
    fields = _fields(doc)
    assert ("spec.ports[1].name", "http") in fields
    assert ("spec.ports[2].name", None) in fields  # several ports: every one needs a name
    assert ("spec.ports[3]", "80/TCP") in fields  # same port and protocol twice
    assert ("spec.ports[3].nodePort", 30080) in fields


def test_load_balancer_source_ranges_are_trimmed_like_kubernetes() -> None:
    doc = _svc(spec__type="LoadBalancer", spec__loadBalancerSourceRanges=[" 203.0.113.0/25", "10.0.0.1"])
    assert _fields(doc) == [("spec.loadBalancerSourceRanges[1]", "10.0.0.1")]


def test_pod_node_slice_deployment_rules() -> None:
    import json

    docs = [
        {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"},
         "spec": {"containers": [{"name": "c", "ports": [{"name": "http", "containerPort": 0},
                                                          {"name": "http", "containerPort": 81}]},
                                 {"name": "c"}]},
         "status": {"podIP": "10.1.1", "phase": "Happy", "conditions": [{"type": "Ready", "status": "Yes"}]}},
        {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "n"},
         "spec": {"podCIDR": "10.244.1.0"}, "status": {"addresses": [{"type": "InternalIP", "address": "x"}]}},
        {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "metadata": {"name": "s"},
         "addressType": "IPv4", "endpoints": [{"addresses": ["fe80::1"]}, {"addresses": []}],
         "ports": [{"name": "a", "port": 0}, {"name": "a", "port": 80}]},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "d"},
         "spec": {"replicas": -1, "selector": {"matchLabels": {"app": "a"}},
                  "template": {"metadata": {"labels": {"app": "b"}}, "spec": {"containers": []}}}},
    ]
    problems = {(p.obj, p.field) for p in load("\n---\n".join(json.dumps(d) for d in docs)).problems}
    assert problems >= {
        ("Pod/default/p", "spec.containers[0].ports[0].containerPort"),
        ("Pod/default/p", "spec.containers[0].ports[1].name"),
        ("Pod/default/p", "spec.containers[1].name"),
        ("Pod/default/p", "status.podIP"),
        ("Pod/default/p", "status.phase"),
        ("Pod/default/p", "status.conditions[0].status"),
        ("Node/n", "spec.podCIDR"),
        ("Node/n", "status.addresses[0].address"),
        ("EndpointSlice/default/s", "endpoints[0].addresses[0]"),
        ("EndpointSlice/default/s", "endpoints[1].addresses"),
        ("EndpointSlice/default/s", "ports[0].port"),
        ("EndpointSlice/default/s", "ports[1].name"),
        ("Deployment/default/d", "spec.replicas"),
        ("Deployment/default/d", "spec.template.metadata.labels"),
        ("Deployment/default/d", "spec.template.spec.containers"),
    }


@pytest.mark.parametrize(
    ("fn", "good", "bad"),
    [
        (dns1123_subdomain, ["a", "a.b-c", "0x"], ["", "A", "a_b", "-a", "a.", "a" * 254]),
        (dns1035_label, ["a", "a-1"], ["1a", "a.b", "a" * 64]),
        (qualified_name, ["app", "example.com/app", "A_b.c"], ["", "/a", "a/", "-a", "Ex.com/a", "a" * 64]),
        (iana_svc_name, ["http", "h-2"], ["", "HTTP", "123", "a--b", "-a", "a" * 16]),
    ],
)
def test_name_rules(fn: Any, good: list[str], bad: list[str]) -> None:
    assert [g for g in good if fn(g)] == []
    assert [b for b in bad if not fn(b)] == []


def test_statefulset_rules() -> None:
    import json

    bad = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "Web.1"},
           "spec": {"replicas": -1, "serviceName": "Nginx", "podManagementPolicy": "Burst",
                    "updateStrategy": {"type": "OnDelete", "rollingUpdate": {"partition": -1}},
                    "selector": {"matchLabels": {"app": "a"}},
                    "template": {"metadata": {"labels": {"app": "b"}},
                                 "spec": {"restartPolicy": "Never", "containers": [{"name": "c"}]}}}}
    problems = {(p.field, str(p.value)) for p in load(json.dumps(bad)).problems}
    assert problems == {
        ("metadata.name", "Web.1"),  # a DNS label: <name>-<ordinal> is each pod's hostname
        ("spec.replicas", "-1"),
        ("spec.serviceName", "Nginx"),
        ("spec.podManagementPolicy", "Burst"),
        ("spec.updateStrategy.rollingUpdate", "None"),
        ("spec.updateStrategy.rollingUpdate.partition", "-1"),
        ("spec.template.metadata.labels", "{'app': 'b'}"),
        ("spec.template.spec.restartPolicy", "Never"),
    }
    empty = {"apiVersion": "apps/v1", "kind": "StatefulSet", "metadata": {"name": "web"},
             "spec": {"template": {"spec": {"containers": [{"name": "c"}]}}}}
    assert [(p.field, p.reason) for p in load(json.dumps(empty)).problems] == [
        ("spec.selector", "empty selector is invalid for statefulset")]


def test_the_classic_headless_service_and_statefulset_manifest_loads() -> None:
    """The Kubernetes website's StatefulSet example (nginx + volumeClaimTemplates) is accepted whole."""
    text = """
apiVersion: v1
kind: Service
metadata: {name: nginx, labels: {app: nginx}}
spec:
  ports: [{port: 80, name: web}]
  clusterIP: None
  selector: {app: nginx}
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  selector: {matchLabels: {app: nginx}}
  serviceName: "nginx"
  replicas: 3
  minReadySeconds: 10
  template:
    metadata: {labels: {app: nginx}}
    spec:
      terminationGracePeriodSeconds: 10
      containers:
      - name: nginx
        image: registry.k8s.io/nginx-slim:0.24
        ports: [{containerPort: 80, name: web}]
        volumeMounts: [{name: www, mountPath: /usr/share/nginx/html}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec: {accessModes: ["ReadWriteOnce"], storageClassName: "my-storage-class", resources: {requests: {storage: 1Gi}}}
"""
    out = load(text)
    assert out.problems == [] and out.warnings == []
    assert [o.ref for o in out.objects] == ["Service/default/nginx", "StatefulSet/default/web"]
