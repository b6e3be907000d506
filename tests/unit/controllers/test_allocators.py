"""ClusterIP/NodePort allocation: ranges, explicit values, release, exhaustion, concurrent writers."""

from __future__ import annotations

import ipaddress
import multiprocessing
import random
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.api import Service, load_objects
from podnet.controllers.allocators import (
    AllocatorConfig,
    ClusterIPAllocator,
    NodePortAllocator,
    parse_port_range,
)
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.errors import AllocationError, ValidationError
from podnet.store import keys, open_store


def service(name: str, type_: str = "NodePort", cluster_ip: str | None = None, node_port: int | None = None,
            ports: int = 1) -> Service:
    port_list = [{"name": f"p{i}", "port": 80 + i, **({"nodePort": node_port + i} if node_port else {})}
                 for i in range(ports)]
    spec: dict[str, object] = {"type": type_, "selector": {"app": name}, "ports": port_list}
    if cluster_ip:
        spec["clusterIP"] = cluster_ip
    (svc,) = load_objects(f'{{"apiVersion": "v1", "kind": "Service", "metadata": {{"name": "{name}"}}, '
                          f'"spec": {__import__("json").dumps(spec)}}}')
    assert isinstance(svc, Service)
    return svc


def test_cluster_ip_range_excludes_network_broadcast_and_first_address() -> None:
    alloc = ClusterIPAllocator("10.96.0.0/29", {})
    got = {alloc.allocate(f"s{i}", random.Random(i)) for i in range(5)}
    assert got == {f"10.96.0.{i}" for i in range(2, 7)}
    with pytest.raises(AllocationError, match="no free address left in the service CIDR 10.96.0.0/29"):
        alloc.allocate("one-more", random.Random(0))
    assert "not in the valid range" in (alloc.check("10.96.0.7", "x") or "")
    assert "not in the valid range" in (alloc.check("10.96.0.0", "x") or "")
    assert "not in the valid range" in (alloc.check("192.168.0.1", "x") or "")
    assert ClusterIPAllocator("10.96.0.0/29", {}).check("10.96.0.1", "x") is None  # explicit first is fine


def test_dynamic_allocation_is_random_and_prefers_the_upper_band() -> None:
    alloc = ClusterIPAllocator("10.96.0.0/12", {})
    ips = [ipaddress.ip_address(alloc.allocate(f"s{i}", random.Random(i))) for i in range(50)]
    assert len(set(ips)) == 50
    assert all(int(ip) - int(ipaddress.ip_address("10.96.0.0")) > 256 for ip in ips)  # static band left free
    ports = NodePortAllocator((30000, 32767), {})
    got = [ports.allocate(f"s{i}", "nodePort", random.Random(i)) for i in range(50)]
    assert len(set(got)) == 50 and all(30086 <= p <= 32767 for p in got)


def test_node_port_checks() -> None:
    ports = NodePortAllocator((30000, 30001), {30000: "Service/default/a"})
    assert "not in the valid range. The range of valid ports is 30000-30001" in (ports.check(29999, "b") or "")
    assert "already allocated" in (ports.check(30000, "Service/default/b") or "")
    assert ports.check(30000, "Service/default/a") is None
    assert ports.allocate("b", "nodePort", random.Random(0)) == 30001
    with pytest.raises(AllocationError, match="30000-30001"):
        ports.allocate("c", "nodePort", random.Random(0))
    assert parse_port_range("30000-32767") == (30000, 32767)
    with pytest.raises(ValueError):
        parse_port_range("32767-30000")


def test_apply_allocates_keeps_on_reapply_and_frees_on_delete(store) -> None:  # type: ignore[no-untyped-def]
    cfg = AllocatorConfig("10.96.0.0/24", (30000, 30099))
    (r,) = apply_objects(store, [service("a", ports=2)], cfg)
    svc = r.obj
    assert isinstance(svc, Service) and r.action == "created"
    ip, node_ports = svc.spec.cluster_ip, [p.node_port for p in svc.spec.ports]
    assert ip and ipaddress.ip_address(ip) in ipaddress.ip_network("10.96.0.0/24")
    assert all(p and 30000 <= p <= 30099 for p in node_ports)
    assert store.get(keys.cluster_ip(ip)).value == b"Service/default/a"
    # re-applying the same manifest keeps the address and ports and writes nothing
    rev = store.revision()
    (again,) = apply_objects(store, [service("a", ports=2)], cfg)
    assert again.action == "unchanged" and store.revision() == rev
    # NodePort -> ClusterIP frees the node ports, keeps the IP
    (changed,) = apply_objects(store, [service("a", type_="ClusterIP", ports=2)], cfg)
    assert changed.action == "configured" and changed.obj.spec.cluster_ip == ip  # type: ignore[attr-defined]
    assert store.list(keys.ALLOC_NODE_PORT_PREFIX).items == []
    delete_objects(store, [("Service", "default", "a")])
    assert store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items == []


def test_explicit_values_honoured_or_refused_and_nothing_written(store) -> None:  # type: ignore[no-untyped-def]
    cfg = AllocatorConfig("10.96.0.0/24", (30000, 30099))
    (r,) = apply_objects(store, [service("a", cluster_ip="10.96.0.10", node_port=30010)], cfg)
    assert r.obj.spec.cluster_ip == "10.96.0.10"  # type: ignore[attr-defined]
    assert r.obj.spec.ports[0].node_port == 30010  # type: ignore[attr-defined]
    rev = store.revision()
    cases = [
        (service("b", cluster_ip="10.96.0.10"), "spec.clusterIP", "already allocated"),
        (service("b", cluster_ip="10.97.0.10"), "spec.clusterIP", "not in the valid range"),
        (service("b", node_port=30010), "spec.ports[0].nodePort", "already allocated"),
        (service("b", node_port=31000), "spec.ports[0].nodePort", "The range of valid ports is 30000-30099"),
        (service("a", cluster_ip="10.96.0.11", node_port=30010), "spec.clusterIP", "immutable"),
    ]
    for svc, field, reason in cases:
        with pytest.raises(ValidationError) as ei:
            # a valid service in the same apply must not be written either: all or nothing
            apply_objects(store, [service("ok"), svc], cfg)
        assert [(p.field, reason in p.reason) for p in ei.value.problems] == [(field, True)]
        assert store.revision() == rev


def test_exhaustion_is_a_clear_error_and_writes_nothing(store) -> None:  # type: ignore[no-untyped-def]
    cfg = AllocatorConfig("10.96.0.0/29", (30000, 30002))
    apply_objects(store, [service(f"s{i}", type_="ClusterIP") for i in range(5)], cfg)
    rev = store.revision()
    with pytest.raises(AllocationError, match="Service/default/s5: spec.clusterIP: no free address"):
        apply_objects(store, [service("s5", type_="ClusterIP")], cfg)
    assert store.revision() == rev
    delete_objects(store, [("Service", "default", "s0")])
    with pytest.raises(AllocationError, match="spec.ports\\[3\\].nodePort: no free port left"):
        apply_objects(store, [service("s5", ports=4)], cfg)


def _apply_many(url: str, worker: int, count: int, barrier) -> list[str]:  # type: ignore[no-untyped-def]
    store = open_store(url)
    cfg = AllocatorConfig("10.96.0.0/26", (30000, 30063))
    barrier.wait()
    for i in range(count):
        apply_objects(store, [service(f"w{worker}-s{i}")], cfg)
    store.close()
    return []


def test_four_processes_applying_at_once_never_share_an_ip_or_port(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state.db"
    open_store(url).close()
    ctx = multiprocessing.get_context("spawn")  # no fork: the test process may hold other threads' locks
    barrier = ctx.Barrier(4)
    procs = [ctx.Process(target=_apply_many, args=(url, w, 12, barrier)) for w in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0]
    store = open_store(url)
    try:
        from podnet.api import from_json

        services = [from_json(kv.value) for kv in store.list(keys.kind_prefix("Service")).items]
        ips = [s.spec.cluster_ip for s in services]  # type: ignore[attr-defined]
        ports = [p.node_port for s in services for p in s.spec.ports]  # type: ignore[attr-defined]
        assert len(services) == 48
        assert len(set(ips)) == 48 and len(set(ports)) == 48
        # the allocation records agree exactly with the services
        assert {kv.key for kv in store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items} == {keys.cluster_ip(i) for i in ips}
        assert {kv.key for kv in store.list(keys.ALLOC_NODE_PORT_PREFIX).items} == {keys.node_port(p) for p in ports}
    finally:
        store.close()


@settings(max_examples=150, deadline=None)
@given(taken=st.sets(st.integers(1, 62), max_size=62), wanted=st.lists(st.integers(0, 63), max_size=6),
       seed=st.integers(0, 1000))
def test_records_read_one_by_one_answer_as_all_records_do(taken: set[int], wanted: list[int], seed: int) -> None:
    """The lazily read allocator (one point read per address looked at, all records once a range is that
    full) checks and allocates exactly as the one given every record: never a taken address, the same
    refusals, exhaustion at the same point. A /26 has 62 usable addresses, so many cases fill it."""
    base = ipaddress.ip_address("10.200.0.0")
    records = {str(base + off): f"Service/default/s{off}" for off in taken}
    reads: list[str] = []

    def lookup(ip: str) -> str | None:
        reads.append(ip)
        return records.get(ip)

    full = ClusterIPAllocator("10.200.0.0/26", records)
    lazy = ClusterIPAllocator("10.200.0.0/26", lookup=lookup, load_all=lambda: records)
    for off in wanted:
        ip = str(base + off)
        assert lazy.check(ip, "Service/default/me") == full.check(ip, "Service/default/me")
    got: set[str] = set()
    while True:
        try:
            ip = lazy.allocate("Service/default/me", random.Random(seed))
        except AllocationError:
            break
        assert ip not in records and ip not in got and ip != str(base + 1)
        got.add(ip)
    assert len(got) == 61 - len(taken - {1})  # every free address but the first one (offsets 2..62)
    assert len(reads) == len(set(reads))  # each record read at most once
