"""The lab controller's LoadBalancer step against a real store: addresses into status, kept across
re-applies and restarts, released on delete and type change, never given twice."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.api import Service, from_json, load_objects
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.lab import topology
from podnet.lab.controller import LabController
from podnet.lab.state import LabState
from podnet.store import Put, keys, open_store

from .test_controller import BARRIER, BARRIER_VALUE

SVC = """
apiVersion: v1
kind: Service
metadata: {{name: {name}}}
spec: {{type: {type}, selector: {{app: web}}, ports: [{{port: 80}}]{extra}}}
"""


def svc(name: str = "web", type_: str = "LoadBalancer", extra: str = "") -> list:  # type: ignore[type-arg]
    return load_objects(SVC.format(name=name, type=type_, extra=extra))


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/state.db"


def controller(url: str, pool: str = "192.168.77.200/30") -> LabController:
    spec = topology.build("pn-lbc", 2, lb_pool=pool)
    c = LabController(LabState(spec=spec, store_url=url), open_store(url))
    c.informer.start()
    return c


@pytest.fixture
def ctl(url: str) -> Iterator[LabController]:
    c = controller(url)
    try:
        yield c
    finally:
        c.informer.stop()
        c.store.close()


def settle(c: LabController) -> None:
    """Rounds until a round writes nothing (some commits touch only allocation records, which the informer
    does not watch: the barrier write is what it waits for)."""
    for _ in range(30):
        target = c.store.put(BARRIER, BARRIER_VALUE)
        deadline = time.monotonic() + 5
        while c.informer.revision < target:
            assert time.monotonic() < deadline, "informer did not catch up"
            time.sleep(0.005)
        before = c.store.revision()
        c.round()
        if c.store.revision() == before and not c.tracker.dirty:
            return
    raise AssertionError("no quiet store after many rounds")


def ingress(store, name: str) -> list[str]:  # type: ignore[no-untyped-def]
    s = from_json(store.get(keys.resource("Service", "default", name)).value)
    assert isinstance(s, Service)
    return s.load_balancer_ips


def records(store) -> dict[str, str]:  # type: ignore[no-untyped-def]
    p = keys.ALLOC_LB_IP_PREFIX
    return {kv.key[len(p):]: kv.value.decode() for kv in store.list(p).items}


def events(store, reason: str) -> list[str]:  # type: ignore[no-untyped-def]
    out = []
    for kv in store.list(keys.kind_prefix("Event")).items:
        ev = from_json(kv.value)
        if getattr(ev, "reason", None) == reason:
            out.append(ev.message)  # type: ignore[attr-defined]
    return sorted(out)


def test_addresses_are_given_in_order_kept_on_reapply_and_released(ctl: LabController) -> None:
    s = ctl.store
    # the pool 192.168.77.200/30 has four addresses, all usable (none is the underlay's network/broadcast)
    apply_objects(s, svc("a") + svc("b") + svc("plain", "ClusterIP"))
    settle(ctl)
    assert ingress(s, "a") == ["192.168.77.200"] and ingress(s, "b") == ["192.168.77.201"]
    assert ingress(s, "plain") == []
    assert records(s) == {"192.168.77.200": "Service/default/a", "192.168.77.201": "Service/default/b"}
    assert events(s, "IPAllocated") == ['Assigned IP ["192.168.77.200"]', 'Assigned IP ["192.168.77.201"]']
    # `podnet apply` of the same manifest (no status in it) keeps the address: nothing moves
    status_rev = s.get(keys.resource("Service", "default", "a")).mod_revision
    apply_objects(s, svc("a"))
    settle(ctl)
    assert ingress(s, "a") == ["192.168.77.200"]
    assert s.get(keys.resource("Service", "default", "a")).mod_revision == status_rev  # unchanged
    # deleting one frees its address for the next Service; a type change frees it too
    delete_objects(s, [("Service", "default", "a")])
    apply_objects(s, svc("c"))
    settle(ctl)
    assert ingress(s, "c") == ["192.168.77.200"]
    apply_objects(s, svc("b", "NodePort"))
    settle(ctl)
    assert ingress(s, "b") == [] and records(s) == {"192.168.77.200": "Service/default/c"}


def test_a_requested_address_is_honoured_and_never_given_twice(ctl: LabController) -> None:
    s = ctl.store
    apply_objects(s, svc("a", extra=", loadBalancerIP: 192.168.77.202"))
    settle(ctl)
    assert ingress(s, "a") == ["192.168.77.202"]
    apply_objects(s, svc("b", extra=", loadBalancerIP: 192.168.77.202") + svc("c", extra=", loadBalancerIP: 10.9.9.9"))
    settle(ctl)
    assert ingress(s, "b") == [] and ingress(s, "c") == []  # pending, with the reason as an event
    assert events(s, "AllocationFailed") == [
        'Failed to allocate IP for "default/b": \'192.168.77.202\' is already in use by default/a',
        'Failed to allocate IP for "default/c": \'10.9.9.9\' is not allowed in config',
    ]
    delete_objects(s, [("Service", "default", "a")])
    settle(ctl)
    assert ingress(s, "b") == ["192.168.77.202"]  # freed, so b gets what it asked for


def test_a_record_written_behind_the_controllers_back_is_respected(ctl: LabController) -> None:
    """Another controller (say, the one a restart replaces) claimed an address for b first: the claim by
    record is only-if-absent, so ours loses the race, lists the records again and gives a the next one."""
    s = ctl.store
    settle(ctl)  # the controller has listed the (empty) records
    apply_objects(s, svc("a") + svc("b"))
    s.commit([Put(keys.lb_ip("192.168.77.200"), b"Service/default/b", if_absent=True)])
    settle(ctl)
    assert ingress(s, "a") == ["192.168.77.201"] and ingress(s, "b") == ["192.168.77.200"]
    assert records(s) == {"192.168.77.200": "Service/default/b", "192.168.77.201": "Service/default/a"}


def test_addresses_survive_a_restart_and_a_service_deleted_meanwhile_is_released(url: str) -> None:
    first = controller(url)
    try:
        apply_objects(first.store, svc("a") + svc("b"))
        settle(first)
        assert ingress(first.store, "b") == ["192.168.77.201"]
    finally:
        first.informer.stop()
        first.store.close()
    store = open_store(url)
    delete_objects(store, [("Service", "default", "a")])  # while no controller runs
    store.close()
    second = controller(url)
    try:
        settle(second)
        assert ingress(second.store, "b") == ["192.168.77.201"]
        assert records(second.store) == {"192.168.77.201": "Service/default/b"}
    finally:
        second.informer.stop()
        second.store.close()
