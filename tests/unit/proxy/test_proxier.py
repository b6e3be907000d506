"""The sync loop's decisions with a fake backend: what is synced fully, partially, retried (no kernel).

Changes go in through the informers' handlers, syncs run when the runner (on a fake clock) says so: no test
sleeps and none calls a private method.
"""

from __future__ import annotations

from typing import Any

import pytest

from podnet.api.decode import decode_endpoint_slice as parse_endpoint_slice
from podnet.proxy.config import HostFacts, KubeProxyConfiguration
from podnet.proxy.iptables.restore import RestoreError
from podnet.proxy.model import DesiredState
from podnet.proxy.proxier import Proxier
from podnet.proxy.tracker import parse_service


class FakeBackend:
    mode = "fake"

    def __init__(self, checks_drift: bool = False) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.fail_next: str | None = None
        self.synced_once = False
        self.checks_drift = checks_drift
        self.drift: str | None = None  # what the next check_drift finds

    @property
    def needs_full(self) -> bool:
        return not self.synced_once

    def check_drift(self) -> str | None:
        self.calls.append(("check", None))
        found, self.drift = self.drift, None
        if found:
            self.synced_once = False  # as the real backends: a drift makes the next sync full
        return found

    @staticmethod
    def adjust_config(config: Any) -> Any:
        return config

    def _maybe_fail(self, kind: str) -> None:
        if self.fail_next == kind:
            self.fail_next = None
            self.synced_once = False
            raise RestoreError(f"{kind} failed", partial=kind == "partial")

    def full_sync(self, desired: DesiredState, settings: Any) -> dict[str, int]:
        self._maybe_fail("full")
        self.calls.append(("full", sorted(str(k) for k in desired.services)))
        self.synced_once = True
        return {}

    def partial_sync(self, old: DesiredState, new: DesiredState, settings: Any, large_cluster: bool) -> dict[str, int]:
        self._maybe_fail("partial")
        self.calls.append(("partial", (sorted(str(k) for k in old.services), sorted(str(k) for k in new.services))))
        return {}

    def rules_total(self) -> dict[str, int]:
        return {"nat": 1}


class NoPorts:
    def sync(self, wanted: Any) -> dict[str, Any]:
        self.wanted = set(wanted)
        return {}

    def close(self) -> None:
        pass


class NoConntrack:
    def __init__(self) -> None:
        self.calls: list[Any] = []

    def cleanup(self, services: Any) -> list[Any]:
        self.calls.append(services)
        return []


def svc(name: str, ip: str, proto: str = "TCP", node_port: int = 0) -> tuple[str, Any]:
    port: dict[str, Any] = {"name": "p", "port": 80, "protocol": proto}
    if node_port:
        port["nodePort"] = node_port
    d = {"kind": "Service", "metadata": {"name": name, "namespace": "ns"},
         "spec": {"type": "NodePort" if node_port else "ClusterIP", "clusterIP": ip, "ports": [port]}}
    return f"/k/services/ns/{name}", parse_service(d)


def eps(name: str, svc_name: str, ips: list[str], proto: str = "TCP") -> tuple[str, Any, None]:
    d = {"kind": "EndpointSlice", "metadata": {"name": name, "namespace": "ns",
                                               "labels": {"kubernetes.io/service-name": svc_name}},
         "addressType": "IPv4", "ports": [{"name": "p", "port": 8080, "protocol": proto}],
         "endpoints": [{"addresses": [ip], "conditions": {"ready": True}} for ip in ips]}
    return f"/k/endpointslices/ns/{name}", parse_endpoint_slice(d), None


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


def sync(p: Proxier) -> bool:
    """Let the runner run what is due now; True when a sync ran and succeeded."""
    before = dict(p.syncs)
    p.sync_runner.tick()
    ran = sum(p.syncs.values()) > sum(before.values())
    return ran and p.syncs["failed"] == before["failed"]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_proxier(clock: FakeClock, backend: FakeBackend, facts: HostFacts | None = None) -> Proxier:
    return Proxier(store=None, node_name="n1", config=KubeProxyConfiguration(),  # type: ignore[arg-type]
                   backend=backend, port_holder=NoPorts(), conntrack=NoConntrack(),  # type: ignore[arg-type]
                   facts=facts or HostFacts(nodeName="n1", nodeIPs=["192.168.0.2"]), clock=clock)


@pytest.fixture
def proxier(clock: FakeClock) -> Proxier:
    return make_proxier(clock, FakeBackend())


def test_first_sync_is_full_then_changes_go_out_partially(proxier: Proxier) -> None:
    be: FakeBackend = proxier.backend  # type: ignore[assignment]
    inf = proxier.informers
    inf.on_service("add", None, svc("a", "10.96.0.1"))
    inf.on_slice("add", None, eps("a-1", "a", ["10.0.0.1"]))
    inf.on_service("add", None, svc("b", "10.96.0.2"))
    assert sync(proxier)
    assert be.calls == [("full", ["ns/a:p", "ns/b:p"])]

    inf.on_slice("update", eps("a-1", "a", ["10.0.0.1"]), eps("a-1", "a", ["10.0.0.2"]))
    assert sync(proxier)
    assert be.calls[-1] == ("partial", (["ns/a:p"], ["ns/a:p"]))

    # a change that changes nothing the proxy uses costs no backend call
    inf.on_slice("update", eps("a-1", "a", ["10.0.0.2"]), eps("a-1", "a", ["10.0.0.2"]))
    n = len(be.calls)
    assert sync(proxier) and len(be.calls) == n

    inf.on_service("delete", svc("b", "10.96.0.2"), None)
    assert sync(proxier)
    assert be.calls[-1] == ("partial", (["ns/b:p"], []))


def test_failed_partial_sync_falls_back_to_full_at_once(proxier: Proxier) -> None:
    be: FakeBackend = proxier.backend  # type: ignore[assignment]
    proxier.informers.on_service("add", None, svc("a", "10.96.0.1"))
    assert sync(proxier)
    be.fail_next = "partial"
    proxier.informers.on_slice("add", None, eps("a-1", "a", ["10.0.0.1"]))
    assert not sync(proxier)
    assert proxier.metrics.partial_restore_failures._value.get() == 1
    assert sync(proxier)  # at once: the clock has not moved
    assert be.calls[-1] == ("full", ["ns/a:p"])


def test_failed_full_sync_is_retried_with_backoff(proxier: Proxier) -> None:
    be: FakeBackend = proxier.backend  # type: ignore[assignment]
    be.fail_next = "full"
    proxier.informers.on_service("add", None, svc("a", "10.96.0.1"))
    assert not sync(proxier)
    assert proxier.metrics.restore_failures._value.get() == 1
    assert proxier.sync_runner.retrying
    # the very first sync is overdue from the start, so its retry does not wait for the backoff
    assert sync(proxier)
    assert be.calls == [("full", ["ns/a:p"])]


def test_a_failed_fallback_full_sync_waits_for_the_backoff(proxier: Proxier, clock: FakeClock) -> None:
    be: FakeBackend = proxier.backend  # type: ignore[assignment]
    proxier.informers.on_service("add", None, svc("a", "10.96.0.1"))
    assert sync(proxier)
    assert proxier.sync_runner.tick() == pytest.approx(30.0)  # syncPeriod: nothing to do until then
    be.fail_next = "partial"
    proxier.informers.on_slice("add", None, eps("a-1", "a", ["10.0.0.1"]))
    assert not sync(proxier)
    be.fail_next = "full"
    assert not sync(proxier)  # the full fallback fails too: now it backs off
    assert proxier.sync_runner.tick() == pytest.approx(1.0)  # nothing runs before the 1 s backoff
    proxier.informers.on_service("add", None, svc("b", "10.96.0.2"))
    assert not sync(proxier) and len(be.calls) == 1  # a change waits for the retry too
    clock.now += 1.0
    assert sync(proxier)
    assert be.calls == [("full", ["ns/a:p"]), ("full", ["ns/a:p", "ns/b:p"])]


def test_node_ports_are_held_and_udp_services_cleaned(proxier: Proxier) -> None:
    proxier.informers.on_service("add", None, svc("np", "10.96.0.9", node_port=30080))
    proxier.informers.on_service("add", None, svc("dns", "10.96.0.53", proto="UDP"))
    proxier.informers.on_slice("add", None, eps("dns-1", "dns", ["10.0.0.7"], "UDP"))
    assert sync(proxier)
    holder: NoPorts = proxier.ports_holder  # type: ignore[assignment]
    assert {(lp.ip, lp.port, lp.protocol) for lp in holder.wanted} == {("192.168.0.2", 30080, "tcp")}
    ct: NoConntrack = proxier.conntrack  # type: ignore[assignment]
    (udp,) = ct.calls[-1]
    assert udp.ips == ["10.96.0.53"] and udp.serving == {"10.0.0.7"}


def test_invalid_service_in_store_is_rejected_by_decode_with_its_name(proxier: Proxier) -> None:
    bad = {"kind": "Service", "metadata": {"name": "bad", "namespace": "ns"},
           "spec": {"clusterIP": "10.96.0.999", "ports": [{"port": 80}]}}
    with pytest.raises(Exception, match="Service/ns/bad.*10.96.0.999"):
        proxier.informers.decode_service(bad)
    assert proxier.metrics.invalid_objects.labels("Service")._value.get() == 1


def test_health_check_node_ports_follow_services_and_their_local_endpoints() -> None:
    """After each sync: a listener per eTP=Local LoadBalancer service, 200 only with a ready local endpoint."""
    from tests.unit.proxy.test_healthcheck import FakeOpener

    op = FakeOpener()
    p = Proxier(store=None, node_name="n1", config=KubeProxyConfiguration(),  # type: ignore[arg-type]
                backend=FakeBackend(), port_holder=NoPorts(), conntrack=NoConntrack(),  # type: ignore[arg-type]
                facts=HostFacts(nodeName="n1", nodeIPs=["192.168.0.2"]), health_listener=op, clock=FakeClock())
    lb = {"kind": "Service", "metadata": {"name": "lb", "namespace": "ns"},
          "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30500,
                   "clusterIP": "10.96.0.9", "ports": [{"name": "p", "port": 80, "nodePort": 30080}]}}

    def slice_on(node: str) -> tuple[str, Any, None]:
        d = {"kind": "EndpointSlice", "metadata": {"name": "lb-1", "namespace": "ns",
                                                   "labels": {"kubernetes.io/service-name": "lb"}},
             "addressType": "IPv4", "ports": [{"name": "p", "port": 8080}],
             "endpoints": [{"addresses": ["10.0.0.5"], "nodeName": node, "conditions": {"ready": True}}]}
        return "/k/endpointslices/ns/lb-1", parse_endpoint_slice(d), None

    p.informers.on_service("add", None, ("/k/services/ns/lb", parse_service(lb)))
    p.informers.on_slice("add", None, slice_on("n1"))
    assert sync(p)
    assert list(op.open) == [("0.0.0.0", 30500)]  # nodePortAddresses unset: every address
    code, _, body = op.get(("0.0.0.0", 30500))
    assert code == 200 and body["localEndpoints"] == 1
    p.informers.on_slice("update", slice_on("n1"), slice_on("n2"))  # the endpoint moved to another node
    assert sync(p)
    assert op.get(("0.0.0.0", 30500))[:1] == (503,)
    p.informers.on_service("delete", ("/k/services/ns/lb", parse_service(lb)), None)
    assert sync(p)
    assert op.open == {}


def test_a_health_check_port_in_use_records_one_warning_event_and_the_sync_still_succeeds(tmp_path: Any) -> None:
    """kube-proxy's FailedToStartServiceHealthcheck: the port is taken, the sync goes on, one Event says why."""
    import json

    from podnet.store import keys, open_store
    from tests.unit.proxy.test_healthcheck import FakeOpener

    store = open_store(f"sqlite:///{tmp_path}/state.db")
    op = FakeOpener()
    op.refuse.add(("0.0.0.0", 30500))  # something else holds the port
    p = Proxier(store, node_name="n1", config=KubeProxyConfiguration(), backend=FakeBackend(),
                port_holder=NoPorts(), conntrack=NoConntrack(),  # type: ignore[arg-type]
                facts=HostFacts(nodeName="n1", nodeIPs=["192.168.0.2"]), health_listener=op, clock=FakeClock())
    lb = {"kind": "Service", "metadata": {"name": "lb", "namespace": "ns"},
          "spec": {"type": "LoadBalancer", "externalTrafficPolicy": "Local", "healthCheckNodePort": 30500,
                   "clusterIP": "10.96.0.9", "ports": [{"name": "p", "port": 80, "nodePort": 30080}]}}
    p.informers.on_service("add", None, ("/k/services/ns/lb", parse_service(lb)))
    assert sync(p)
    assert p.sync(full=True)  # a second sync with the port still taken must not repeat the event
    events = [json.loads(kv.value) for kv in store.list(keys.kind_prefix("Event")).items]
    store.close()
    assert [(e["reason"], e["type"], e["involvedObject"]["name"], e["involvedObject"]["namespace"])
            for e in events] == [("FailedToStartServiceHealthcheck", "Warning", "lb", "ns")]
    assert 'failed to start healthcheck "ns/lb" on port 30500' in events[0]["message"]
    assert events[0]["source"] == {"component": "kube-proxy", "host": "n1"}


def test_the_periodic_sync_is_full_where_the_backend_does_not_check_drift(proxier: Proxier, clock: FakeClock) -> None:
    be: FakeBackend = proxier.backend  # type: ignore[assignment]
    proxier.informers.on_service("add", None, svc("a", "10.96.0.1"))
    assert sync(proxier)
    clock.now += proxier.sync_period
    assert sync(proxier)
    assert [c[0] for c in be.calls] == ["full", "full"]


def test_the_periodic_sync_writes_nothing_where_the_backend_checks_drift(clock: FakeClock) -> None:
    """iptables mode: a full rewrite at 10k services takes ~20 s, so the periodic run is only a sync of what
    changed (often nothing); the kernel is read by check_drift on another thread."""
    be = FakeBackend(checks_drift=True)
    p = make_proxier(clock, be)
    p.informers.on_service("add", None, svc("a", "10.96.0.1"))
    assert sync(p)
    for _ in range(3):
        clock.now += p.sync_period
        assert sync(p)
    assert [c[0] for c in be.calls] == ["full"]
    assert p.syncs == {"full": 1, "partial": 3, "failed": 0}
    # the periodic run was complete: the runner does not run again until the next period
    assert not sync(p)
    # a change between periods still goes out at once, partially
    p.informers.on_slice("add", None, eps("a-1", "a", ["10.0.0.1"]))
    assert sync(p)
    assert be.calls[-1] == ("partial", (["ns/a:p"], ["ns/a:p"]))


def test_a_drift_found_by_the_check_makes_the_next_sync_full(clock: FakeClock) -> None:
    be = FakeBackend(checks_drift=True)
    p = make_proxier(clock, be)
    p.informers.on_service("add", None, svc("a", "10.96.0.1"))
    assert sync(p)
    assert p.check_drift() is None
    assert p.metrics.drift_checks.labels("ok")._value.get() == 1
    be.drift = "nat/KUBE-SVC-X: missing"
    assert p.check_drift() == "nat/KUBE-SVC-X: missing"
    assert p.metrics.drift_checks.labels("drift")._value.get() == 1
    assert sync(p)  # requested by the check, without waiting for the period
    assert [c[0] for c in be.calls] == ["full", "check", "check", "full"]
    # while a full sync is due anyway, the check does not read the kernel
    be.synced_once = False
    assert p.check_drift() is None and be.calls[-1][0] == "full"


def test_node_facts_that_changed_by_the_periodic_run_make_it_a_full_sync(clock: FakeClock) -> None:
    be = FakeBackend(checks_drift=True)
    facts = HostFacts(nodeName="n1", nodeIPs=["192.168.0.2"])
    p = make_proxier(clock, be, facts)
    p.informers.on_service("add", None, svc("a", "10.96.0.1", node_port=30080))
    assert sync(p)
    facts.node_ips = ["192.168.0.3"]  # read again by the periodic run only
    assert not sync(p) and [c[0] for c in be.calls] == ["full"]
    clock.now += p.sync_period
    assert sync(p)
    assert [c[0] for c in be.calls] == ["full", "full"]
