"""An undecodable Service deleted by key frees what it held, and the repair pass frees allocations no
object holds (kube-apiserver's ClusterIP and NodePort repair controllers), restores missing records and
drops orphaned EndpointSlices."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from podnet.api import load_objects
from podnet.controllers.allocators import AllocatorConfig
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.repair import repair_allocations
from podnet.store import Store, keys, open_store

MANIFEST = """
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: p1, labels: {app: web}}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.5, phase: Running, conditions: [{type: Ready, status: "True"}]}
"""
WEB = keys.resource("Service", "default", "web")


def alloc_keys(store: Store) -> dict[str, str]:
    return {kv.key: kv.value.decode() for p in (keys.ALLOC_CLUSTER_IP_PREFIX, keys.ALLOC_NODE_PORT_PREFIX)
            for kv in store.list(p).items}


def slices(store: Store) -> list[str]:
    return [kv.key for kv in store.list(keys.kind_prefix("EndpointSlice")).items]


def corrupt(store: Store, key: str) -> None:
    store.put(key, b"\x00\xff not an object")


def test_delete_by_key_of_an_undecodable_service_frees_ip_port_and_slice(store: Store) -> None:
    apply_objects(store, load_objects(MANIFEST))
    assert len(alloc_keys(store)) == 2 and len(slices(store)) == 1
    corrupt(store, WEB)
    (r,) = delete_objects(store, [("Service", "default", "web")])
    assert (r.obj.kubectl_name, r.action) == ("service/web", "deleted")
    assert store.get(WEB) is None and alloc_keys(store) == {} and slices(store) == []
    assert store.get(keys.resource("Pod", "default", "p1")) is not None


def test_apply_over_an_undecodable_service_frees_what_the_old_one_held(store: Store) -> None:
    apply_objects(store, load_objects(MANIFEST))
    before = alloc_keys(store)
    corrupt(store, WEB)
    apply_objects(store, load_objects(MANIFEST))
    after = alloc_keys(store)
    assert len(after) == 2 and set(after.values()) == {"Service/default/web"}
    assert not set(before) & set(after) or set(before) == set(after)


def test_repair_frees_leaks_restores_records_keeps_undecodable_owners(store: Store) -> None:
    apply_objects(store, load_objects(MANIFEST + MANIFEST.replace("web", "api").replace("p1", "p2")))
    held = alloc_keys(store)
    web_ip = next(k for k, v in held.items() if v == "Service/default/web" and "clusterips" in k)
    store.delete(web_ip)  # a record lost
    store.put(keys.cluster_ip("10.96.0.9"), b"Service/default/gone")  # owner gone
    store.put(keys.node_port(30001), b"Service/default/web")  # owner does not hold it
    store.put(keys.node_port(30002), b"garbage owner")  # unparsable owner
    corrupt(store, keys.resource("Service", "default", "api"))  # undecodable: keeps its records
    store.put(keys.resource("EndpointSlice", "default", "gone-abcde"), slice_for("gone"))
    report = repair_allocations(store)
    assert sorted(report.freed) == sorted([keys.cluster_ip("10.96.0.9"), keys.node_port(30001), keys.node_port(30002)])
    assert report.restored == [web_ip] and report.slices_deleted == [keys.resource("EndpointSlice", "default",
                                                                                   "gone-abcde")]
    assert alloc_keys(store) == held
    assert not repair_allocations(store).changed  # a second pass finds nothing


def test_repair_reports_a_value_recorded_for_another_service(store: Store) -> None:
    apply_objects(store, load_objects(MANIFEST))
    ip_key = next(k for k in alloc_keys(store) if "clusterips" in k)
    store.put(ip_key, b"Service/default/other")
    store.put(keys.resource("Service", "default", "other"), store.get(WEB).value.replace(b'"web"', b'"other"', 1))
    report = repair_allocations(store)
    assert any(ip_key in c and "Service/default/web" in c for c in report.conflicts)


def test_exhausted_range_is_repaired_once_then_apply_succeeds(store: Store) -> None:
    cfg = AllocatorConfig("10.96.0.0/29")  # 6 usable, the first kept out of dynamic allocation: 5
    for i in range(2, 7):
        store.put(keys.cluster_ip(f"10.96.0.{i}"), f"Service/default/leak{i}".encode())
    (r, _) = apply_objects(store, load_objects(MANIFEST), cfg)
    assert r.action == "created" and len(alloc_keys(store)) == 2


def test_podnet_repair_command(tmp_path: Path) -> None:
    s = open_store(f"sqlite://{tmp_path}/c.db")
    s.put(keys.cluster_ip("10.96.0.9"), b"Service/default/gone")
    s.close()
    r = subprocess.run([sys.executable, "-m", "podnet.cli.main", "--store", f"sqlite://{tmp_path}/c.db", "repair"],
                       capture_output=True, text=True, timeout=60, check=False)
    assert r.returncode == 0 and r.stdout == f"freed {keys.cluster_ip('10.96.0.9')}\n", r.stderr


def slice_for(service: str) -> bytes:
    import json

    return json.dumps({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
                       "metadata": {"name": f"{service}-abcde", "namespace": "default", "labels": {
                           "kubernetes.io/service-name": service,
                           "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
                       "endpoints": [], "ports": []}).encode()
