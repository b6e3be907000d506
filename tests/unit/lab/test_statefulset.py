"""The StatefulSet controller's state machine (lab/statefulset.py): ordered creation, ordered scale down,
failed pods replaced, rolling update by revision; and the lab controller carrying its decisions out."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.api import Pod, StatefulSet, from_json, load_objects, to_json
from podnet.controllers.apply import apply_objects, default_statefulset, delete_objects
from podnet.lab import statefulset as ss
from podnet.lab import topology
from podnet.lab.controller import LabController
from podnet.lab.state import LabState
from podnet.store import keys, open_store

from .test_controller import BARRIER, BARRIER_VALUE


def sts(replicas: int = 3, *, policy: str | None = None, update: str | None = None, partition: int | None = None,
        start: int | None = None, image: str = "a") -> StatefulSet:
    extra = ""
    if policy:
        extra += f"\n  podManagementPolicy: {policy}"
    if update == "OnDelete":
        extra += "\n  updateStrategy: {type: OnDelete}"
    elif partition is not None:
        extra += f"\n  updateStrategy: {{type: RollingUpdate, rollingUpdate: {{partition: {partition}}}}}"
    if start is not None:
        extra += f"\n  ordinals: {{start: {start}}}"
    (obj,) = load_objects(f"""
apiVersion: apps/v1
kind: StatefulSet
metadata: {{name: web, namespace: default, uid: u-1, generation: 2}}
spec:
  replicas: {replicas}
  serviceName: nginx
  selector: {{matchLabels: {{app: nginx}}}}
  template:
    metadata: {{labels: {{app: nginx}}}}
    spec: {{containers: [{{name: nginx, image: {image}, ports: [{{containerPort: 80, name: web}}]}}]}}{extra}
""")
    assert isinstance(obj, StatefulSet)
    default_statefulset(obj)
    return obj


def pod(s: StatefulSet, ordinal: int, state: str = "ready", revision: str | None = None) -> Pod:
    """A pod of s in one of the states the agent writes: pending, running (not ready), ready, failed."""
    p = ss.new_pod(s, ordinal)
    if revision is not None:
        p.metadata.labels[ss.REVISION_LABEL] = revision
    status = {
        "pending": {"phase": "Pending"},
        "running": {"phase": "Running", "podIP": "10.244.1.9", "conditions": [{"type": "Ready", "status": "False"}]},
        "ready": {"phase": "Running", "podIP": "10.244.1.9", "conditions": [{"type": "Ready", "status": "True"}]},
        "failed": {"phase": "Failed"},
    }[state]
    return Pod.model_validate({**p.to_dict(), "status": status})


def names(pods: list[Pod]) -> list[str]:
    return [p.name for p in pods]


# ---- ordered creation ---------------------------------------------------------------------------------


def test_first_pod_only_then_each_after_its_predecessor_runs_and_is_ready() -> None:
    s = sts(3)
    p = ss.plan(s, [])
    assert names(p.create) == ["web-0"] and p.delete == [] and p.waiting_for == "web-0"
    for state in ("pending", "running"):  # created, but not Running and Ready: nothing more
        p = ss.plan(s, [pod(s, 0, state)])
        assert p.create == [] and p.delete == [] and p.waiting_for == "web-0", state
    p = ss.plan(s, [pod(s, 0)])
    assert names(p.create) == ["web-1"]
    p = ss.plan(s, [pod(s, 0), pod(s, 1, "pending")])
    assert p.create == [] and p.waiting_for == "web-1"
    p = ss.plan(s, [pod(s, 0), pod(s, 1)])
    assert names(p.create) == ["web-2"]
    p = ss.plan(s, [pod(s, 0), pod(s, 1), pod(s, 2)])
    assert p.create == [] and p.delete == [] and p.waiting_for == ""
    assert (p.status.replicas, p.status.ready_replicas, p.status.updated_replicas) == (3, 3, 3)
    assert p.status.current_revision == p.status.update_revision == ss.revision(s)
    assert p.status.observed_generation == 2


def test_a_lost_pod_in_the_middle_is_created_again_before_anything_else() -> None:
    s = sts(3)
    p = ss.plan(s, [pod(s, 0), pod(s, 2)])
    assert names(p.create) == ["web-1"] and p.delete == []


def test_pod_identity_hostname_subdomain_labels_and_owner() -> None:
    s = sts(3)
    p = ss.new_pod(s, 1)
    assert p.name == "web-1" and p.namespace == "default"
    assert p.spec.hostname == "web-1" and p.spec.subdomain == "nginx"
    assert p.metadata.labels == {"app": "nginx", ss.POD_NAME_LABEL: "web-1", ss.POD_INDEX_LABEL: "1",
                                 ss.REVISION_LABEL: ss.revision(s)}
    assert p.metadata.owner_references == [{"apiVersion": "apps/v1", "kind": "StatefulSet", "name": "web",
                                            "uid": "u-1", "controller": True, "blockOwnerDeletion": True}]
    assert [c.name for c in p.spec.containers] == ["nginx"] and p.spec.node_name is None
    assert ss.controller_of(p) == ("StatefulSet", "web", "u-1")


def test_ordinals_start_and_names_of_other_sets_are_ignored() -> None:
    s = sts(2, start=5)
    other = ss.new_pod(sts(1), 0)
    other.metadata.name = "webx-0"
    assert names(ss.plan(s, [other]).create) == ["web-5"]
    assert ss.ordinal("web", "web-12") == 12 and ss.ordinal("web", "web-a") is None
    assert ss.ordinal("web", "my-web-1") is None


def test_parallel_creates_and_removes_everything_at_once() -> None:
    s = sts(3, policy="Parallel")
    assert names(ss.plan(s, []).create) == ["web-0", "web-1", "web-2"]
    down = sts(1, policy="Parallel")
    p = ss.plan(down, [pod(down, 0), pod(down, 1, "pending"), pod(down, 2)])
    assert sorted(p.delete) == ["web-1", "web-2"]


def test_a_failed_pod_is_deleted_so_that_it_comes_back() -> None:
    s = sts(3)
    p = ss.plan(s, [pod(s, 0), pod(s, 1, "failed"), pod(s, 2)])
    assert p.delete == ["web-1"] and p.create == [] and p.waiting_for == "web-1"


# ---- scale down ---------------------------------------------------------------------------------------


def test_scale_down_removes_the_highest_ordinal_first_one_per_round() -> None:
    s = sts(1)
    p = ss.plan(s, [pod(s, 0), pod(s, 1), pod(s, 2)])
    assert p.delete == ["web-2"]
    p = ss.plan(s, [pod(s, 0), pod(s, 1)])
    assert p.delete == ["web-1"]
    assert ss.plan(s, [pod(s, 0)]).delete == []


def test_scale_down_waits_while_a_wanted_pod_is_not_ready() -> None:
    s = sts(2)
    p = ss.plan(s, [pod(s, 0), pod(s, 1, "running"), pod(s, 2)])
    assert p.delete == [] and p.waiting_for == "web-1"


def test_an_unready_condemned_pod_blocks_unless_it_is_the_first_unhealthy_one() -> None:
    s = sts(1)
    # web-2 is not ready, web-1 neither: web-1 (the lowest) is the first unhealthy, so web-2 blocks
    p = ss.plan(s, [pod(s, 0), pod(s, 1, "running"), pod(s, 2, "running")])
    assert p.delete == [] and p.waiting_for == "web-1"
    # only web-2 is unhealthy: it may go
    assert ss.plan(s, [pod(s, 0), pod(s, 1), pod(s, 2, "running")]).delete == ["web-2"]


# ---- updates ------------------------------------------------------------------------------------------


def test_rolling_update_replaces_from_the_highest_ordinal_one_at_a_time() -> None:
    old = sts(3, image="a")
    new = sts(3, image="b")
    assert ss.revision(old) != ss.revision(new)
    rev = ss.revision(old)
    pods = [pod(new, i, revision=rev) for i in range(3)]
    p = ss.plan(new, pods)
    assert p.delete == ["web-2"] and p.create == []
    assert (p.status.updated_replicas, p.status.update_revision) == (0, ss.revision(new))
    # web-2 came back at the new revision but is not ready yet: wait for it
    pods[2] = pod(new, 2, "pending")
    assert ss.plan(new, pods).delete == [] and ss.plan(new, pods).waiting_for == "web-2"
    pods[2] = pod(new, 2)
    assert ss.plan(new, pods).delete == ["web-1"]


def test_partition_and_on_delete_hold_pods_back() -> None:
    rev = ss.revision(sts(3, image="a"))
    part = sts(3, image="b", partition=2)
    pods = [pod(part, 0, revision=rev), pod(part, 1, revision=rev), pod(part, 2)]
    assert ss.plan(part, pods).delete == []  # web-2 is updated; 0 and 1 are below the partition
    on_delete = sts(3, image="b", update="OnDelete")
    assert ss.plan(on_delete, [pod(on_delete, i, revision=rev) for i in range(3)]).delete == []


# ---- the lab controller carrying it out ---------------------------------------------------------------


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[LabController]:
    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    c = LabController(LabState(spec=topology.build("pn-ss-lab", 2), store_url=url), store)
    c.informer.start()
    try:
        yield c
    finally:
        c.informer.stop()
        store.close()


def settle(c: LabController) -> None:
    """Rounds until the store is quiet (the informer caught up and a round wrote nothing)."""
    for _ in range(30):
        target = c.store.put(BARRIER, BARRIER_VALUE)  # see test_controller.settle
        deadline = time.monotonic() + 5
        while c.informer.revision < target:
            assert time.monotonic() < deadline, "informer did not catch up"
            time.sleep(0.005)
        before = c.store.revision()
        c.round()
        if c.store.revision() == before and not c.tracker.dirty:
            return
    raise AssertionError("no quiet store after many rounds")


def _set_status(store, name: str, state: str) -> None:  # type: ignore[no-untyped-def]
    """What the node agent writes about a pod (a plain put of the status, as agent.write_status does)."""
    key = keys.resource("Pod", "default", name)
    live = from_json(store.get(key).value)
    assert isinstance(live, Pod)
    live.status = pod(sts(), 0, state).status
    store.put(key, to_json(live))


def _pods(store) -> dict[str, Pod]:  # type: ignore[no-untyped-def]
    out = {}
    for kv in store.list(keys.kind_prefix("Pod")).items:
        p = from_json(kv.value)
        assert isinstance(p, Pod)
        out[p.name] = p
    return out


def _history(store, since: int) -> list:  # type: ignore[no-untyped-def, type-arg]
    """The store's own record of what happened to resources after revision `since`, in order."""
    import threading

    end = store.revision()
    w = store.watch(keys.RESOURCES_PREFIX, since + 1)
    guard = threading.Timer(10, w.close)  # a safety net only: the loop ends at `end`
    guard.start()
    out = []
    try:
        for ev in w:
            if ev.key.startswith(keys.kind_prefix("Pod")):
                out.append(ev)
            if ev.revision >= end:
                break
    finally:
        guard.cancel()
        w.close()
    return out


NODES = """
apiVersion: v1
kind: Node
metadata: {name: node1, labels: {podnet.io/lab: pn-ss-lab}}
---
apiVersion: v1
kind: Node
metadata: {name: node2, labels: {podnet.io/lab: pn-ss-lab}}
"""
STS = """
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  replicas: REPLICAS
  serviceName: nginx
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec: {containers: [{name: nginx, ports: [{containerPort: 80}]}]}
"""


def test_controller_creates_in_order_scales_down_in_reverse_and_deletes_with_the_set(ctl: LabController) -> None:
    s = ctl.store
    apply_objects(s, load_objects(NODES))
    apply_objects(s, load_objects(STS.replace("REPLICAS", "3")))
    settle(ctl)
    assert list(_pods(s)) == ["web-0"]  # the next waits for this one
    assert _pods(s)["web-0"].spec.node_name in ("node1", "node2")  # and the scheduler bound it
    _set_status(s, "web-0", "running")
    settle(ctl)
    assert list(_pods(s)) == ["web-0"]  # running is not enough: Ready too
    _set_status(s, "web-0", "ready")
    settle(ctl)
    assert sorted(_pods(s)) == ["web-0", "web-1"]
    _set_status(s, "web-1", "ready")
    settle(ctl)
    _set_status(s, "web-2", "ready")
    settle(ctl)
    pods = _pods(s)
    assert sorted(pods) == ["web-0", "web-1", "web-2"]
    assert {p.spec.hostname for p in pods.values()} == set(pods) and {p.spec.subdomain for p in pods.values()} == {"nginx"}
    live = from_json(s.get(keys.resource("StatefulSet", "default", "web")).value)
    assert isinstance(live, StatefulSet) and (live.status.replicas, live.status.ready_replicas) == (3, 3)
    uid = live.metadata.uid
    assert all(p.metadata.owner_references[0]["uid"] == uid for p in pods.values())

    mark = s.revision()
    apply_objects(s, load_objects(STS.replace("REPLICAS", "1")))
    settle(ctl)
    assert sorted(_pods(s)) == ["web-0"]
    gone = [ev.key.rsplit("/", 1)[-1] for ev in _history(s, mark) if ev.type == "delete"]
    assert gone == ["web-2", "web-1"]  # highest ordinal first, one after the other
    # a pod deleted behind its back comes back with the same name
    delete_objects(s, [("Pod", "default", "web-0")])
    settle(ctl)
    assert list(_pods(s)) == ["web-0"]
    delete_objects(s, [("StatefulSet", "default", "web")])
    settle(ctl)
    assert _pods(s) == {}
