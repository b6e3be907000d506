"""The planner's buckets on etcd (store/etcd_buckets.py): a one-shot `podnet apply` on etcd plans from them
instead of listing namespaces, data written before them is filled in once, and stale members (a crash
between an object's Txn and its prune) are filtered out, never returned."""

from __future__ import annotations

import json
import secrets

import pytest

from podnet.api.loader import load_objects
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.endpoints import sync_ops
from podnet.store import keys
from podnet.store.etcd import EtcdStore
from podnet.store.etcd_buckets import member_key
from tests.contract.etcd_cluster import EtcdCluster
from tests.unit.controllers.test_apply import CountingStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(etcd_store: EtcdStore) -> EtcdStore:
    return etcd_store  # conftest.py: one etcd member per module


def _members(store: EtcdStore) -> set[str]:
    return {kv.key for kv in store.list(keys.BUCKETS_PREFIX).items}


def _svc(ns: str, name: str, app: str) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {ns}}}\n"
            f"spec: {{selector: {{app: {app}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n")


def _pod(ns: str, name: str, app: str, ip: str) -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: {name}, namespace: {ns}, labels: {{app: {app}}}}}\n"
            f"spec: {{containers: [{{name: c, ports: [{{containerPort: 8080}}]}}]}}\n"
            f"status: {{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: 'True'}}]}}\n")


def test_a_one_shot_apply_on_etcd_plans_from_the_buckets_and_lists_nothing(store: EtcdStore) -> None:
    ns = f"b-{secrets.token_hex(3)}"
    apply_objects(store, load_objects(_svc(ns, "web", "web") + "---\n" + _svc(ns, "db", "db")))
    apply_objects(store, load_objects("---\n".join(_pod(ns, f"w{i}", "web", f"10.32.1.{i + 1}") for i in range(5))))
    assert store.keeps_buckets
    for change in (lambda s: apply_objects(s, load_objects(_pod(ns, "w9", "web", "10.32.1.99"))),
                   lambda s: apply_objects(s, load_objects(_pod(ns, "w0", "db", "10.32.1.1"))),  # a relabel
                   lambda s: delete_objects(s, [("Pod", ns, "w1")]),
                   lambda s: apply_objects(s, load_objects(_svc(ns, "web2", "web")))):
        counting = CountingStore(store, buckets=True)
        change(counting)
        assert counting.lists == [], counting.lists
    assert sync_ops(store) == []  # every derived slice is what a full recompute says
    slices = {kv.key for kv in store.list(keys.kind_prefix("EndpointSlice", ns)).items}
    assert len(slices) == 3


def test_a_relabel_and_a_delete_take_their_member_keys_away(store: EtcdStore) -> None:
    ns = f"r-{secrets.token_hex(3)}"
    key = keys.resource("Pod", ns, "p")
    store.put(key, json.dumps({"metadata": {"labels": {"app": "web", "tier": "fe"}}}).encode())
    mine = {k for k in _members(store) if k.endswith(key)}
    assert mine == {member_key(("pod", ns, "app", "web"), key).decode(),
                    member_key(("pod", ns, "tier", "fe"), key).decode()}
    store.put(key, json.dumps({"metadata": {"labels": {"app": "db", "tier": "fe"}}}).encode())
    assert {k for k in _members(store) if k.endswith(key)} == {
        member_key(("pod", ns, "app", "db"), key).decode(), member_key(("pod", ns, "tier", "fe"), key).decode()}
    store.delete(key)
    assert not {k for k in _members(store) if k.endswith(key)}


def test_a_lease_carries_the_members_with_the_object(store: EtcdStore) -> None:
    ns = f"l-{secrets.token_hex(3)}"
    key = keys.resource("Pod", ns, "p")
    lease = store.grant(60)
    store.put(key, json.dumps({"metadata": {"labels": {"app": "web"}}}).encode(), lease=lease)
    (member,) = [kv for kv in store.list(keys.BUCKETS_PREFIX).items if kv.key.endswith(key)]
    assert member.lease == lease
    store.revoke(lease)
    assert store.get(key) is None and not {k for k in _members(store) if k.endswith(key)}


def test_a_stale_member_is_filtered_out_and_only_counted(store: EtcdStore) -> None:
    ns = f"s-{secrets.token_hex(3)}"
    key = keys.resource("Pod", ns, "p")
    store.put(key, json.dumps({"metadata": {"labels": {"app": "db"}}}).encode())
    web = ("pod", ns, "app", "web")
    store.put(member_key(web, key).decode(), b"")  # as a crash between a relabel's Txn and its prune leaves it
    assert store.bucket_members([web]) == []
    assert store.bucket_sizes([web]) == {web: 1}  # a hint for the smallest bucket, not an answer


def test_data_written_before_the_buckets_is_filled_in_once(etcd1: EtcdCluster, store: EtcdStore) -> None:
    ns = f"f-{secrets.token_hex(3)}"
    apply_objects(store, load_objects(_svc(ns, "web", "web")))
    apply_objects(store, load_objects("---\n".join(_pod(ns, f"w{i}", "web", f"10.32.2.{i + 1}") for i in range(3))))
    for k in _members(store) | {keys.BUCKETS_READY}:  # what an etcd written by an older podnet holds
        store.delete(k)
    fresh = EtcdStore(etcd1.url)
    try:
        assert store.get(keys.BUCKETS_READY) is None
        assert fresh.keeps_buckets
        assert store.get(keys.BUCKETS_READY) is not None
        got = {kv.key for kv in fresh.bucket_members([("pod", ns, "app", "web")])}
        assert got == {keys.resource("Pod", ns, f"w{i}") for i in range(3)}
        assert [kv.key for kv in fresh.bucket_members([("selector", ns, "app", "web")])] == [
            keys.resource("Service", ns, "web")]
        assert fresh.bucket_sizes([("slice", ns, "web")]) == {("slice", ns, "web"): 1}
    finally:
        fresh.close()
