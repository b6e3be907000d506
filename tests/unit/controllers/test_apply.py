"""The apply/delete write path: defaulting, what survives a re-apply, derived slices in the same commit."""

from __future__ import annotations

from pathlib import Path

import pytest

from podnet.api import EndpointSlice, Pod, Service, from_json, load_objects, to_json
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.endpoints import ready_addresses
from podnet.errors import NotFound, ValidationError
from podnet.store import keys, open_store

SVC = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{name: http, port: 80, targetPort: http}]
"""


def pod_yaml(name: str, ip: str, node: str | None = None) -> str:
    node_line = f"  nodeName: {node}\n" if node else ""
    return f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, labels: {{app: web}}}}
spec:
{node_line}  containers: [{{name: c, ports: [{{name: http, containerPort: 8080}}]}}]
status: {{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}
"""


@pytest.fixture
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield s
    finally:
        s.close()


def slices(store) -> list[EndpointSlice]:  # type: ignore[no-untyped-def]
    return [from_json(kv.value) for kv in store.list(keys.kind_prefix("EndpointSlice")).items]  # type: ignore[misc]


def test_service_defaults_as_the_api_server_fills_them(store) -> None:  # type: ignore[no-untyped-def]
    text = SVC.replace("ports:", "sessionAffinity: ClientIP\n  type: NodePort\n  ports:")
    (r,) = apply_objects(store, load_objects(text))
    svc = from_json(store.get(keys.resource("Service", "default", "web")).value)
    assert isinstance(svc, Service) and svc == r.obj
    assert svc.spec.cluster_ips == [svc.spec.cluster_ip] and svc.spec.ip_families == ["IPv4"]
    assert svc.spec.ip_family_policy == "SingleStack" and svc.spec.internal_traffic_policy == "Cluster"
    assert svc.spec.external_traffic_policy == "Cluster" and svc.session_affinity_timeout == 10800
    assert svc.metadata.uid and svc.metadata.creation_timestamp


def test_headless_service_gets_no_ip(store) -> None:  # type: ignore[no-untyped-def]
    (r,) = apply_objects(store, load_objects(SVC.replace("ports:", "clusterIP: None\n  ports:")))
    assert r.obj.spec.cluster_ip == "None"  # type: ignore[attr-defined]
    assert store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items == []


def test_pods_and_services_update_derived_slices_in_the_same_commit(store) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(SVC))
    (placeholder,) = slices(store)
    assert placeholder.endpoints == []
    rev = store.revision()
    apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5") + "---" + pod_yaml("b", "10.32.0.6")))
    assert store.revision() == rev + 1  # pods and slices: one commit
    assert sorted(ready_addresses(slices(store), "http")) == ["10.32.0.5:8080", "10.32.0.6:8080"]
    delete_objects(store, [("Pod", "default", "a")])
    assert ready_addresses(slices(store), "http") == ["10.32.0.6:8080"]
    delete_objects(store, [("Service", "default", "web")])
    assert slices(store) == []


def test_reapply_keeps_live_pod_status_and_node(store) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5", node="node-1")))
    key = keys.resource("Pod", "default", "a")
    live = from_json(store.get(key).value)
    assert isinstance(live, Pod)
    live.status.pod_ip = "10.244.1.7"  # what the lab's agent reports
    store.put(key, to_json(live))
    (r,) = apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5")))
    assert r.action == "unchanged"
    stored = from_json(store.get(key).value)
    assert stored.status.pod_ip == "10.244.1.7" and stored.spec.node_name == "node-1"  # type: ignore[attr-defined]


def test_selector_less_service_keeps_user_slices(store) -> None:  # type: ignore[no-untyped-def]
    text = SVC.replace("  selector: {app: web}\n", "") + """---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-ext, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.10]}]
ports: [{name: http, port: 9000}]
"""
    apply_objects(store, load_objects(text))
    apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5")))
    (es,) = slices(store)
    assert es.name == "web-ext" and ready_addresses([es], "http") == ["192.0.2.10:9000"]


def test_delete_of_missing_object_deletes_nothing(store) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(SVC))
    rev = store.revision()
    with pytest.raises(NotFound, match='services "nope" not found'):
        delete_objects(store, [("Service", "default", "web"), ("Service", "default", "nope")])
    assert store.revision() == rev
    assert [r.action for r in delete_objects(store, [("Service", "default", "web"), ("Service", "default", "nope")],
                                             ignore_not_found=True)] == ["deleted"]


NODE = """
apiVersion: v1
kind: Node
metadata: {name: node-1}
spec: {podCIDR: 10.244.1.0/24}
"""


def test_with_nodes_pods_must_name_one_and_start_pending(store) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(NODE))
    rev = store.revision()
    with pytest.raises(ValidationError) as ei:
        apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5", node="node-9")))
    (p,) = ei.value.problems
    assert (p.field, p.value) == ("spec.nodeName", "node-9") and "node-1" in p.reason
    assert store.revision() == rev
    (r,) = apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5", node="node-1")))
    pod = from_json(store.get(keys.resource("Pod", "default", "a")).value)
    assert isinstance(pod, Pod) and pod.status.phase == "Pending" and pod.ips == [] and not pod.is_ready
    # a node applied together with the pod is known
    (_, r2) = apply_objects(store, load_objects(NODE.replace("node-1", "node-2") + "---"
                                                + pod_yaml("b", "10.32.0.6", node="node-2")))
    assert r2.action == "created"
