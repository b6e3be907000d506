"""The apply/delete write path: defaulting, what survives a re-apply, derived slices in the same commit."""

from __future__ import annotations

import json
import secrets
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.api import EndpointSlice, Pod, Service, from_json, load_objects, to_json
from podnet.api.service import LoadBalancerIngress
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
    (gone,) = delete_objects(store, [("Service", "default", "web")])  # clusterIPs ["None"] frees nothing
    assert gone.action == "deleted" and store.get(keys.resource("Service", "default", "web")) is None


def test_reapplied_service_keeps_its_load_balancer_status(store) -> None:  # type: ignore[no-untyped-def]
    """status.loadBalancer is the load-balancer controller's: a manifest without status leaves it alone."""
    lb = SVC.replace("ports:", "type: LoadBalancer\n  ports:")
    apply_objects(store, load_objects(lb))
    key = keys.resource("Service", "default", "web")
    live = from_json(store.get(key).value)
    assert isinstance(live, Service)
    live.status.load_balancer.ingress = [LoadBalancerIngress(ip="192.168.77.192")]
    store.put(key, to_json(live))
    (r,) = apply_objects(store, load_objects(lb))
    assert r.action == "unchanged"
    svc = from_json(store.get(key).value)
    assert isinstance(svc, Service) and svc.load_balancer_ips == ["192.168.77.192"]
    apply_objects(store, load_objects(lb + "status: {}\n"))  # a status given, even empty, is a status write
    svc = from_json(store.get(key).value)
    assert isinstance(svc, Service) and svc.load_balancer_ips == []


def test_external_name_service_gets_no_ip_no_families_and_no_slices(store) -> None:  # type: ignore[no-untyped-def]
    text = SVC.replace("ports:", "type: ExternalName\n  externalName: db.example.com\n  ports:")
    r, _ = apply_objects(store, load_objects(text + "---" + pod_yaml("a", "10.32.0.5")))
    spec = r.obj.spec  # type: ignore[attr-defined]
    assert spec.cluster_ip is None and spec.cluster_ips == [] and spec.ip_families == []
    assert spec.ip_family_policy is None and spec.internal_traffic_policy is None
    assert store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items == []
    assert slices(store) == []  # a CNAME has no endpoints, even with a selector that matches a pod


def test_a_service_that_becomes_external_name_gives_its_cluster_ip_back(store) -> None:  # type: ignore[no-untyped-def]
    (r,) = apply_objects(store, load_objects(SVC))
    ip = r.obj.spec.cluster_ip  # type: ignore[attr-defined]
    assert [kv.key for kv in store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items] == [keys.cluster_ip(ip)]
    (r,) = apply_objects(store, load_objects(
        SVC.replace("ports:", "type: ExternalName\n  externalName: db.example.com\n  ports:")))
    assert r.obj.spec.cluster_ip is None  # type: ignore[attr-defined]
    assert store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items == []
    assert slices(store) == []


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


# ---- reads proportional to the change ----------------------------------------------------------------


class CountingStore:
    """Wraps a store and records the prefixes listed and the keys got, to see what a plan reads. It hides
    the store's bucket table (the planner lists, as on etcd) unless told buckets=True."""

    def __init__(self, inner, on_list=None, buckets: bool = False) -> None:  # type: ignore[no-untyped-def]
        self.inner = inner
        self.keeps_buckets = buckets and getattr(inner, "keeps_buckets", False)
        self.lists: list[str] = []
        self.gets: list[str] = []
        self.on_list = on_list

    def list(self, prefix: str):  # type: ignore[no-untyped-def]
        self.lists.append(prefix)
        if self.on_list is not None:
            self.on_list(prefix)
        return self.inner.list(prefix)

    def get(self, key: str):  # type: ignore[no-untyped-def]
        self.gets.append(key)
        return self.inner.get(key)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        return getattr(self.inner, name)


def ns_yaml(kind_doc: str, ns: str) -> str:
    return kind_doc.replace("metadata: {name:", f"metadata: {{namespace: {ns}, name:")


USER_SLICE = """
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: ext-a, labels: {kubernetes.io/service-name: ext}}
addressType: IPv4
endpoints: [{addresses: [192.0.2.10]}]
ports: [{name: http, port: 9000}]
"""


def test_user_slice_apply_reads_only_its_own_key(store) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(SVC + "---" + pod_yaml("a", "10.32.0.5") + "---" + USER_SLICE))
    counting = CountingStore(store)
    (r,) = apply_objects(counting, load_objects(USER_SLICE.replace("192.0.2.10", "192.0.2.11")))
    assert r.action == "configured"
    assert counting.lists == [] and counting.gets == [keys.resource("EndpointSlice", "default", "ext-a")]


def test_pod_apply_reads_only_its_namespace(store) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(ns_yaml(SVC, "pn-cv-a") + "---" + ns_yaml(SVC, "pn-cv-b")))
    counting = CountingStore(store)
    apply_objects(counting, load_objects(ns_yaml(pod_yaml("a", "10.32.0.5"), "pn-cv-a")))
    assert not any(p.endswith("/pn-cv-b/") for p in counting.lists)
    assert keys.RESOURCES_PREFIX not in counting.lists and keys.ALLOC_CLUSTER_IP_PREFIX not in counting.lists
    by_ns = {es.namespace: ready_addresses([es], "http") for es in slices(store)}
    assert by_ns == {"pn-cv-a": ["10.32.0.5:8080"], "pn-cv-b": []}


def test_pod_relabel_moves_it_between_services(store) -> None:  # type: ignore[no-untyped-def]
    other = SVC.replace("name: web", "name: api").replace("app: web", "app: api")
    apply_objects(store, load_objects(SVC + "---" + other + "---" + pod_yaml("a", "10.32.0.5")))
    apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5").replace("app: web", "app: api")))
    by_svc = {es.service_name: ready_addresses([es], "http") for es in slices(store)}
    assert by_svc == {"web": [], "api": ["10.32.0.5:8080"]}


def test_stored_json_with_escapes_is_still_matched(store) -> None:  # type: ignore[no-untyped-def]
    """The byte pre-filter must not hide an object whose JSON spells a label with \\u escapes."""
    apply_objects(store, load_objects(SVC))
    key = keys.resource("Pod", "default", "a")
    apply_objects(store, load_objects(pod_yaml("a", "10.32.0.5").replace("app: web", "app: other")))
    doc = store.get(key).value.replace(b'"app":"other"', b'"app":"\\u0077eb"')  # "web", escaped
    store.put(key, doc)
    apply_objects(store, load_objects(SVC.replace("port: 80", "port: 81")))  # recompute web's slices
    assert ready_addresses(slices(store), "http") == ["10.32.0.5:8080"]


def test_slice_named_like_a_derived_one_is_rewritten_not_conflicting(store) -> None:  # type: ignore[no-untyped-def]
    apply_objects(store, load_objects(SVC + "---" + pod_yaml("a", "10.32.0.5")))
    (derived,) = slices(store)
    derived.metadata.labels = {"x": "y"}  # no label names the service now: only the slice's name says it is web's
    store.put(keys.resource("EndpointSlice", "default", derived.name), to_json(derived))
    apply_objects(store, load_objects(pod_yaml("b", "10.32.0.6")))
    (es,) = slices(store)
    assert es.name == derived.name and es.service_name == "web"
    assert ready_addresses([es], "http") == ["10.32.0.5:8080", "10.32.0.6:8080"]


@pytest.mark.parametrize("bulk_change", [256, 8])
def test_many_services_and_pods_in_one_apply(store, monkeypatch, bulk_change: int) -> None:  # type: ignore[no-untyped-def]
    """Bulk applies take the list paths (many keys under one prefix, too many needles to pre-filter); a
    change larger than BULK_CHANGE also reads whole namespaces instead of the store's buckets."""
    import podnet.controllers.apply as planner

    monkeypatch.setattr(planner, "BULK_CHANGE", bulk_change)
    n = 40
    svcs = "---".join(SVC.replace("name: web", f"name: s{i}").replace("app: web", f"app: s{i}") for i in range(n))
    pods = "---".join(pod_yaml(f"p{i}", f"10.32.1.{i + 1}").replace("app: web", f"app: s{i}") for i in range(n))
    apply_objects(store, load_objects(svcs))
    apply_objects(store, load_objects(pods))
    got = {es.service_name: ready_addresses([es], "http") for es in slices(store)}
    assert got == {f"s{i}": [f"10.32.1.{i + 1}:8080"] for i in range(n)}
    delete_objects(store, [("Pod", "default", f"p{i}") for i in range(0, n, 2)])
    got = {es.service_name: ready_addresses([es], "http") for es in slices(store)}
    assert got == {f"s{i}": [] if i % 2 == 0 else [f"10.32.1.{i + 1}:8080"] for i in range(n)}


def test_a_writer_between_the_reads_makes_the_plan_start_again(store) -> None:  # type: ignore[no-untyped-def]
    """Outputs are read before inputs: another writer that changes a pod (and its slice) after the slices
    were read moves the slice's revision, so the stale plan cannot commit and is made again."""
    from podnet.controllers.endpoints import sync_ops

    apply_objects(store, load_objects(SVC + "---" + pod_yaml("a", "10.32.0.5")))
    fired: list[str] = []

    def other_writer(prefix: str) -> None:
        if prefix == keys.kind_prefix("Pod", "default") and not fired:
            fired.append(prefix)
            apply_objects(store, load_objects(pod_yaml("b", "10.32.0.6")))  # pod b + web's slice, one commit

    counting = CountingStore(store, on_list=other_writer)
    apply_objects(counting, load_objects(SVC.replace("port: 80", "port: 81")))
    slice_reads = [p for p in counting.lists if p.startswith(keys.kind_prefix("EndpointSlice", "default"))]
    assert fired and len(slice_reads) == 2  # planned twice (the slices read by the service's name prefix)
    assert sorted(ready_addresses(slices(store), "http")) == ["10.32.0.5:8080", "10.32.0.6:8080"]
    assert sync_ops(store) == []


_NS = st.sampled_from(["pn-cv-a", "pn-cv-b"])
_APP = st.sampled_from(["a0", "a1", None])
_STEP = st.one_of(
    st.tuples(st.just("svc"), _NS, st.sampled_from(["s0", "s1"]), _APP),
    st.tuples(st.just("pod"), _NS, st.sampled_from(["p0", "p1", "p2"]), _APP),
    st.tuples(st.just("del-svc"), _NS, st.sampled_from(["s0", "s1"]), st.none()),
    st.tuples(st.just("del-pod"), _NS, st.sampled_from(["p0", "p1", "p2"]), st.none()),
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(st.tuples(_STEP, st.booleans()), min_size=1, max_size=8))
def test_after_any_apply_or_delete_the_derived_slices_are_up_to_date(tmp_path: Path, steps) -> None:  # type: ignore[no-untyped-def]
    """Reading only the touched namespaces and pre-filtered candidates, or only the store's buckets the
    change touches (each step by either path, as two kinds of writer would), finds everything a full
    re-list would: sync_ops over the whole store has nothing left to do."""
    from podnet.controllers.endpoints import sync_ops
    from tests.unit.controllers.conftest import ListingStore

    store = open_store(f"sqlite:///{tmp_path}/{secrets.token_hex(4)}.db")
    try:
        for i, ((what, ns, name, app), listing) in enumerate(steps):
            s = ListingStore(store) if listing else store
            if what == "svc":
                doc = SVC.replace("name: web", f"name: {name}").replace(
                    "  selector: {app: web}\n", f"  selector: {{app: {app}}}\n" if app else "")
                apply_objects(s, load_objects(ns_yaml(doc, ns)))
            elif what == "pod":
                doc = pod_yaml(name, f"10.32.0.{i + 1}").replace("labels: {app: web}", f"labels: {{app: {app}}}"
                                                                  if app else "labels: {}")
                apply_objects(s, load_objects(ns_yaml(doc, ns)))
            else:
                delete_objects(s, [("Service" if what == "del-svc" else "Pod", ns, name)], ignore_not_found=True)
            assert sync_ops(store) == []
    finally:
        store.close()


def test_a_deployment_generation_moves_with_its_spec_only(tmp_path):
    from podnet.api.deployment import Deployment
    from podnet.store import keys, open_store

    store = open_store(f"sqlite:///{tmp_path}/s.db")
    d = {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "web"},
         "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "web"}},
                  "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c"}]}}}}

    def gen() -> int:
        return json.loads(store.get(keys.resource("Deployment", "default", "web")).value)["metadata"]["generation"]

    apply_objects(store, [Deployment.model_validate(d)])
    assert gen() == 1
    d["metadata"]["labels"] = {"x": "y"}
    apply_objects(store, [Deployment.model_validate(d)])
    assert gen() == 1
    d["spec"]["replicas"] = 3
    apply_objects(store, [Deployment.model_validate(d)])
    assert gen() == 2
    store.close()
