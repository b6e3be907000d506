"""`podnet apply` and `delete` of more objects than one etcd Txn holds (128 operations): committed in parts,
each whole, after the whole set was checked, so a bad object anywhere still writes nothing."""

from __future__ import annotations

import secrets

import pytest

from podnet.api.loader import load_objects
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.endpoints import sync_ops
from podnet.errors import NotFound, PodnetError
from podnet.store import keys
from podnet.store.etcd import EtcdStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(etcd_store: EtcdStore) -> EtcdStore:
    return etcd_store  # conftest.py: one etcd member per module


def _svc(ns: str, i: int, app: str | None = None) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}, namespace: {ns}}}\n"
            f"spec: {{selector: {{app: {app or f's{i}'}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}\n")


def _pod(ns: str, i: int) -> str:
    return (f"apiVersion: v1\nkind: Pod\nmetadata: {{name: p{i}, namespace: {ns}, labels: {{app: s{i}}}}}\n"
            "spec: {containers: [{name: c}]}\n"
            f"status: {{podIP: 10.32.{i // 250}.{i % 250 + 1}, phase: Running, "
            "conditions: [{type: Ready, status: 'True'}]}\n")


def _count(store: EtcdStore, kind: str, ns: str) -> int:
    return len(store.list(keys.kind_prefix(kind, ns)).items)


def test_hundreds_of_services_and_pods_in_one_apply_are_all_stored_with_their_slices(store: EtcdStore) -> None:
    ns = f"big-{secrets.token_hex(3)}"
    results = apply_objects(store, load_objects("---\n".join(_svc(ns, i) for i in range(300))))
    assert [r.action for r in results] == ["created"] * 300
    apply_objects(store, load_objects("---\n".join(_pod(ns, i) for i in range(300))))
    assert (_count(store, "Service", ns), _count(store, "Pod", ns), _count(store, "EndpointSlice", ns)) == (
        300, 300, 300)
    assert sync_ops(store) == []
    results = delete_objects(store, [("Pod", ns, f"p{i}") for i in range(300)])
    assert len(results) == 300 and _count(store, "Pod", ns) == 0
    assert sync_ops(store) == []


def test_a_bad_object_at_the_end_of_a_big_apply_writes_nothing(store: EtcdStore) -> None:
    ns = f"bad-{secrets.token_hex(3)}"
    apply_objects(store, load_objects("---\n".join(_svc(ns, i) for i in range(200))), must="create")
    before = store.revision()
    more = load_objects("---\n".join(_svc(ns, i) for i in range(200, 400)) + "---\n" + _svc(ns, 5))
    with pytest.raises(PodnetError, match="already exists"):
        apply_objects(store, more, must="create")
    assert _count(store, "Service", ns) == 200 and store.revision() == before


def test_a_big_delete_naming_a_missing_object_deletes_nothing(store: EtcdStore) -> None:
    ns = f"del-{secrets.token_hex(3)}"
    apply_objects(store, load_objects("---\n".join(_svc(ns, i) for i in range(150))))
    with pytest.raises(NotFound, match="s999"):
        delete_objects(store, [("Service", ns, f"s{i}") for i in range(150)] + [("Service", ns, "s999")])
    assert _count(store, "Service", ns) == 150


def test_one_object_whose_write_passes_one_txn_is_refused_by_name(store: EtcdStore) -> None:
    """A pod selected by 130 services changes 130 slices: no Txn holds that, and it cannot be split."""
    ns = f"one-{secrets.token_hex(3)}"
    apply_objects(store, load_objects("---\n".join(_svc(ns, i, app="web") for i in range(130))))
    pod = _pod(ns, 0).replace("app: s0", "app: web")
    with pytest.raises(PodnetError, match=r"Pod p0: .* over the store's 128 per transaction"):
        apply_objects(store, load_objects(pod))
    assert _count(store, "Pod", ns) == 0
