"""The lab controller's incremental logic: a change makes dirty only what it can affect, and the rounds
that follow converge the store (deployments' pods, scheduling, derived slices) as a full recompute would."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.api import EndpointSlice, Pod, from_json, load_objects, to_json
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.endpoints import ready_addresses, sync_ops
from podnet.lab import topology
from podnet.lab.controller import OWNER_LABEL, LabController, Tracker
from podnet.lab.state import LabState
from podnet.store import keys, open_store

LAB = "pn-cv-lab"


def parse(text: str):  # type: ignore[no-untyped-def]
    (obj,) = load_objects(text)
    return obj


def svc(name: str, app: str, ns: str = "default"):  # type: ignore[no-untyped-def]
    return parse(f"""
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: {ns}}}
spec: {{selector: {{app: {app}}}, ports: [{{name: http, port: 80, targetPort: 8080}}]}}
""")


def pod(name: str, app: str, ip: str | None = None, ns: str = "default", node: str | None = None,
        owner: str | None = None):  # type: ignore[no-untyped-def]
    labels = f"{{app: {app}" + (f", {OWNER_LABEL}: {owner}" if owner else "") + "}"
    status = f'{{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}' if ip else "{}"
    return parse(f"""
apiVersion: v1
kind: Pod
metadata: {{name: {name}, namespace: {ns}, labels: {labels}}}
spec: {{{f"nodeName: {node}, " if node else ""}containers: [{{name: c}}]}}
status: {status}
""")


def node(name: str, lab: str = LAB):  # type: ignore[no-untyped-def]
    return parse(f"""
apiVersion: v1
kind: Node
metadata: {{name: {name}, labels: {{podnet.io/lab: {lab}}}}}
""")


# ---- Tracker: what a change makes dirty ------------------------------------------------------------


def test_pod_change_dirties_only_services_selecting_its_old_or_new_labels() -> None:
    t = Tracker(LAB)
    for s in (svc("web", "web"), svc("api", "api"), svc("other", "web", ns="pn-cv-b")):
        t.on_change("add", None, s)
    t.take()
    a = pod("a", "web", "10.0.0.1", node="n1")
    t.on_change("add", None, a)
    assert t.take().services == {("default", "web")}
    relabelled = pod("a", "api", "10.0.0.1", node="n1")
    t.on_change("update", a, relabelled)
    assert t.take().services == {("default", "web"), ("default", "api")}
    t.on_change("delete", relabelled, None)
    assert t.take().services == {("default", "api")}
    assert t.pod_candidates([("default", "web"), ("default", "api")]) == set()


def test_owned_pod_status_updates_do_not_dirty_the_deployment() -> None:
    t = Tracker(LAB)
    pending = pod("web-1", "web", owner="web", node="n1")
    t.on_change("add", None, pending)
    assert t.take().deployments == {keys.resource("Deployment", "default", "web")}
    t.on_change("update", pending, pod("web-1", "web", "10.0.0.1", owner="web", node="n1"))
    assert t.take().deployments == set()
    assert t.owned_pods("default", "web") == {keys.resource("Pod", "default", "web-1")}


def test_unscheduled_pods_wait_for_a_node_of_this_lab() -> None:
    t = Tracker(LAB)
    t.on_change("add", None, pod("a", "web"))
    assert t.take().unscheduled == set()  # no node yet: parked, not dropped
    t.on_change("add", None, node("n1", lab="someone-else"))
    assert t.take().unscheduled == set()
    t.on_change("add", None, node("n1"))
    assert t.changed.is_set()
    assert t.take().unscheduled == {keys.resource("Pod", "default", "a")}
    assert t.node_load() == {"n1": 0}


def test_slices_are_found_by_service_label_and_by_derived_name() -> None:
    t = Tracker(LAB)
    es = parse("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-abcde, labels: {x: y}}
addressType: IPv4
endpoints: []
""")
    labelled = parse("""
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: anything, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints: []
""")
    t.on_change("add", None, es)
    t.on_change("add", None, labelled)
    assert not t.take().services  # neither is controller-managed
    assert t.slice_candidates([("default", "web")]) == {keys.resource("EndpointSlice", "default", n)
                                                        for n in ("web-abcde", "anything")}
    assert t.slice_candidates([("default", "api")]) == set()


# ---- the controller against a real store -----------------------------------------------------------


@pytest.fixture
def ctl(tmp_path: Path) -> Iterator[LabController]:
    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    st = LabState(spec=topology.build(LAB, 2), store_url=url)
    c = LabController(st, store)
    c.informer.start()
    try:
        yield c
    finally:
        c.informer.stop()
        store.close()


BARRIER = keys.resource("ConfigMap", "pn-settle", "barrier")
BARRIER_VALUE = b'{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "barrier", "namespace": "pn-settle"}}'


def settle(c: LabController, rounds: int = 20) -> list[set[tuple[str, str]]]:
    """Run rounds until the store is quiet; returns the endpoint scopes the rounds worked on."""
    scopes: list[set[tuple[str, str]]] = []
    original = c.sync_endpoints

    def spy(dirty, retry):  # type: ignore[no-untyped-def]
        if dirty.services:
            scopes.append(set(dirty.services))
        original(dirty, retry)

    c.sync_endpoints = spy  # type: ignore[method-assign]
    try:
        for _ in range(rounds):
            # One commit of many keys arrives as many events of one revision: the informer's revision
            # reaches it at the first of them. A later write of one key (a ConfigMap the controller
            # ignores) is a barrier: once the informer is past it, it has delivered everything before.
            target = c.store.put(BARRIER, BARRIER_VALUE)
            deadline = time.monotonic() + 5
            while c.informer.revision < target:
                assert time.monotonic() < deadline, "informer did not catch up"
                time.sleep(0.005)
            before = c.store.revision()
            # The informer's revision moves before its handler has told the tracker (handlers run after
            # the snapshot is updated), so a round may still see a stale index and lose a race: it gives
            # its work back (round() False) and the next round redoes it, as in the controller's loop.
            if c.round() and c.store.revision() == before and not c.tracker.dirty:
                return scopes
        raise AssertionError("no quiet store after many rounds")
    finally:
        c.sync_endpoints = original  # type: ignore[method-assign]


def slices(store, service: str) -> list[EndpointSlice]:  # type: ignore[no-untyped-def]
    out = [from_json(kv.value) for kv in store.list(keys.kind_prefix("EndpointSlice")).items]
    return [es for es in out if isinstance(es, EndpointSlice) and es.service_name == service]


def test_deployment_pods_are_created_spread_and_reaped(ctl: LabController) -> None:
    s = ctl.store
    apply_objects(s, [node("node1"), node("node2")])
    apply_objects(s, load_objects("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web}]}
"""))
    settle(ctl)
    pods = [from_json(kv.value) for kv in s.list(keys.kind_prefix("Pod")).items]
    assert len(pods) == 3 and all(isinstance(p, Pod) and p.metadata.labels[OWNER_LABEL] == "web" for p in pods)
    assert sorted(p.spec.node_name for p in pods) == ["node1", "node1", "node2"]  # type: ignore[union-attr]
    # a pod deleted behind the deployment's back comes back; scaling down removes the extra ones
    delete_objects(s, [("Pod", "default", pods[0].name)])
    settle(ctl)
    assert len(s.list(keys.kind_prefix("Pod")).items) == 3
    apply_objects(s, load_objects("""
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web}]}
"""))
    settle(ctl)
    assert len(s.list(keys.kind_prefix("Pod")).items) == 1


def test_a_status_write_recomputes_only_the_services_selecting_the_pod(ctl: LabController) -> None:
    s = ctl.store
    apply_objects(s, [svc(f"s{i}", f"a{i}") for i in range(20)] + [pod(f"p{i}", f"a{i}", node="n1") for i in range(20)])
    settle(ctl)
    key = keys.resource("Pod", "default", "p7")
    live = from_json(s.get(key).value)
    assert isinstance(live, Pod)
    live.status = pod("p7", "a7", "10.0.0.7").status  # what the agent writes: a plain put, no derived slices
    s.put(key, to_json(live))
    scopes = settle(ctl)
    assert scopes and set().union(*scopes) == {("default", "s7")}
    (es,) = slices(s, "s7")
    assert ready_addresses([es], "http") == ["10.0.0.7:8080"]
    assert sync_ops(s) == []  # nothing a full recompute would change


def test_a_managed_slice_changed_behind_its_back_is_put_right(ctl: LabController) -> None:
    s = ctl.store
    apply_objects(s, [svc("web", "web"), pod("a", "web", "10.0.0.1", node="n1")])
    settle(ctl)
    (es,) = slices(s, "web")
    key = keys.resource("EndpointSlice", "default", es.name)
    es.endpoints = []
    s.put(key, to_json(es))
    settle(ctl)
    assert ready_addresses(slices(s, "web"), "http") == ["10.0.0.1:8080"]
    s.delete(key)
    settle(ctl)
    assert ready_addresses(slices(s, "web"), "http") == ["10.0.0.1:8080"]


def test_a_lost_race_is_retried(ctl: LabController) -> None:
    """A write conditional on a revision the store has moved past fails, and the work comes back."""
    s = ctl.store
    apply_objects(s, [svc("web", "web")])
    settle(ctl)
    key = keys.resource("Pod", "default", "a")
    s.put(key, to_json(pod("a", "web", "10.0.0.1", node="n1")))
    deadline = time.monotonic() + 5
    while ctl.informer.get(key) is None:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    (es,) = slices(s, "web")
    # someone rewrites the slice after the informer saw it: the controller's revision is stale for a moment
    ctl.informer.stop()
    s.put(keys.resource("EndpointSlice", "default", es.name), to_json(es))
    assert ctl.round() is False and ("default", "web") in ctl.tracker.dirty.services
    ctl.informer = type(ctl.informer)(s, keys.RESOURCES_PREFIX, from_json, on_change=ctl.tracker.on_change)
    ctl.informer.start()
    settle(ctl)
    assert ready_addresses(slices(s, "web"), "http") == ["10.0.0.1:8080"]


# ---- the repair pass runs by itself -----------------------------------------------------------------


def wait_until(cond, what: str, bound: float = 10.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_leaked_allocations_are_freed_at_start_and_periodically(tmp_path: Path) -> None:
    """Nobody calls `podnet repair`: the control plane's own passes free what no Service holds."""
    import threading

    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    apply_objects(store, [svc("web", "web")])
    held = {kv.key for kv in store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items}
    leak_at_start = keys.cluster_ip("10.96.0.9")
    store.put(leak_at_start, b"Service/default/gone")
    c = LabController(LabState(spec=topology.build(LAB, 2), store_url=url), store, repair_interval=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=c.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_until(lambda: store.get(leak_at_start) is None, "the leak present at start was not freed")
        later = keys.node_port(30007)
        store.put(later, b"Service/default/web")  # web is ClusterIP: it holds no NodePort
        wait_until(lambda: store.get(later) is None, "a leak made while running was not freed")
        assert {kv.key for kv in store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items} == held  # web keeps its IP
    finally:
        stop.set()
        runner.join(5)
    try:
        c.repair_once()  # after the pass that freed something, one more finds nothing ...
        quiet = store.revision()
        assert c.repair_once() is False and store.revision() == quiet  # ... and then nothing runs until a write
        store.put(keys.resource("Pod", "default", "p"), to_json(pod("p", "web")))
        assert c.repair_once() is True
    finally:
        store.close()


def test_the_control_plane_marks_a_silent_lab_node_unknown(tmp_path: Path) -> None:
    """The node lifecycle controller's job, in the lab's own control plane loop."""
    import json
    import threading
    from datetime import UTC, datetime, timedelta

    from podnet.lab import nodestatus

    url = f"sqlite:///{tmp_path}/state.db"
    store = open_store(url)
    key = keys.resource("Node", None, "node1")
    long_ago = datetime.now(UTC) - timedelta(minutes=5)
    doc = json.loads(to_json(node("node1")))
    doc["metadata"]["creationTimestamp"] = nodestatus.stamp(long_ago)
    store.put(key, json.dumps(nodestatus.heartbeat(doc, long_ago, {})).encode())
    c = LabController(LabState(spec=topology.build(LAB, 2), store_url=url), store, monitor_period=0.05)
    stop = threading.Event()
    runner = threading.Thread(target=c.run, args=(stop,), daemon=True)
    runner.start()
    try:
        wait_until(lambda: from_json(store.get(key).value).ready == "Unknown", "the silent node stayed Ready")
    finally:
        stop.set()
        runner.join(5)
        store.close()
