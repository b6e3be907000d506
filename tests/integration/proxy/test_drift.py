"""The iptables backend's drift check against a real kernel: what it reads with iptables-save after podnet's own
syncs is no drift; what another program changes is named, and the full sync that follows repairs it."""

from __future__ import annotations

import io
import sys
from collections.abc import Sequence
from dataclasses import replace

import pytest

pytestmark = pytest.mark.integration


def _state(n: int = 3):  # type: ignore[no-untyped-def]
    from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName

    services = {}
    for i in range(n):
        name = ServicePortName("ns", f"s{i}", "http", "TCP")
        eps = tuple(Endpoint(ip=f"10.244.{i}.{j + 1}", port=8080, node_name="other") for j in range(2))
        services[name] = ServicePort(name=name, cluster_ip=f"10.96.0.{i + 10}", port=80, endpoints=eps)
    return DesiredState(node_name="n1", services=services)


@pytest.fixture
def synced(netns_factory):  # type: ignore[no-untyped-def]
    from podnet.proxy.iptables.backend import IptablesBackend
    from podnet.proxy.iptables.restore import Restorer, Runner
    from podnet.proxy.settings import LocalDetector, ProxierSettings

    ns = netns_factory("drift")
    settings = ProxierSettings(node_name="n1", node_ip="192.168.0.1", node_ips=("192.168.0.1",),
                               local_detector=LocalDetector.by_cidr("10.244.0.0/16"))
    backend = IptablesBackend(Restorer(Runner(netns=ns)))
    state = _state()
    backend.full_sync(state, settings)
    return ns, backend, state, settings


def _ipt(ns: str, *args: str) -> str:
    from podnet.net import netns

    return netns.run(ns, ["iptables", "-w", "5", *args]).stdout


def _sep_chain(ns: str) -> str:
    return next(line.split()[1] for line in _ipt(ns, "-t", "nat", "-S").splitlines()
                if line.startswith(":KUBE-SEP-") or line.startswith("-N KUBE-SEP-"))


def test_podnet_s_own_full_and_partial_syncs_are_no_drift(synced) -> None:  # type: ignore[no-untyped-def]
    from podnet.proxy.model import DesiredState, Endpoint

    ns, backend, state, settings = synced
    assert backend.check_drift() is None
    before = dict(backend.restorer.applied["nat"])
    name = next(iter(state.services))
    old = state.services[name]
    new = replace(old, endpoints=(*old.endpoints, Endpoint(ip="10.244.9.9", port=8080)))
    backend.partial_sync(DesiredState("n1", services={name: old}), DesiredState("n1", services={name: new}),
                         settings, False)
    assert len(backend.restorer.applied["nat"]) == len(before) + 1  # a new SEP chain
    backend.partial_sync(DesiredState("n1", services={name: new}), DesiredState("n1"), settings, False)  # deleted
    # the rule counts kept beside the model (the metrics) are the model's, and the kernel's
    model = {t: sum(len(r) for r in chains.values()) for t, chains in backend.restorer.applied.items()}
    assert backend.rules_total() == model
    kernel = sum(1 for line in _ipt(ns, "-t", "nat", "-S").splitlines() if line.startswith("-A KUBE-"))
    owned = sum(1 for r in backend.restorer.applied["nat"].values() for line in r if line.startswith("-A KUBE-"))
    assert kernel == owned
    assert backend.check_drift() is None
    assert backend.check_drift() is None  # and against the previous read's digests
    assert not backend.needs_full


@pytest.mark.parametrize("change", ["delete a rule", "replace a rule", "remove a jump", "flush the table",
                                    "add a stale chain"])
def test_a_change_by_another_program_is_named_and_the_full_sync_repairs_it(synced, change: str) -> None:  # type: ignore[no-untyped-def]
    ns, backend, state, settings = synced
    assert backend.check_drift() is None  # the first read: digests to compare the next one with
    sep = _sep_chain(ns)
    before = _ipt(ns, "-t", "nat", "-S")
    if change == "delete a rule":
        _ipt(ns, "-t", "nat", "-D", sep, "1")
        want = f"nat/{sep}: 1 rules in the kernel, 2 applied"
    elif change == "replace a rule":
        rule = next(line for line in before.splitlines() if line.startswith(f"-A {sep} ") and "DNAT" in line)
        _ipt(ns, "-t", "nat", "-R", sep, "2", *rule.split()[2:-1], "192.0.2.66:8080")
        want = f"nat/{sep}: rules changed by another program"
    elif change == "remove a jump":
        _ipt(ns, "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals",
             "-j", "KUBE-SERVICES")
        want = "nat/OUTPUT: the jump to KUBE-SERVICES is missing"
    elif change == "flush the table":
        _ipt(ns, "-t", "nat", "-F")
        _ipt(ns, "-t", "nat", "-X")
        want = "nat/KUBE-SERVICES: missing"
    else:
        _ipt(ns, "-t", "nat", "-N", "KUBE-SVC-STALE0000000000")
        want = "nat/KUBE-SVC-STALE0000000000: a service chain podnet does not have"
    found = backend.check_drift()
    assert found is not None and want in found, found
    assert backend.needs_full
    backend.full_sync(state, settings)
    assert not backend.needs_full
    after = _ipt(ns, "-t", "nat", "-S")
    assert sorted(after.splitlines()) == sorted(before.splitlines())
    assert backend.check_drift() is None


class _Finished:
    """A finished iptables-save, as Popen: its output was read before podnet's write landed."""

    def __init__(self, out: str) -> None:
        self.stdout, self.returncode = io.StringIO(out), 0

    def wait(self, timeout: float | None = None) -> int:
        return 0

    def poll(self) -> int:
        return 0

    def kill(self) -> None:
        pass


def _changed(state):  # type: ignore[no-untyped-def]
    from podnet.proxy.model import DesiredState, Endpoint

    name = next(iter(state.services))
    old = state.services[name]
    new = replace(old, endpoints=(*old.endpoints, Endpoint(ip="10.244.9.9", port=8080)))
    return DesiredState("n1", services={name: old}), DesiredState("n1", services={name: new})


def test_chains_podnet_writes_while_the_kernel_is_read_are_no_drift(synced) -> None:  # type: ignore[no-untyped-def]
    """A partial sync right after iptables-save read the kernel: the read shows the chains before it, the model
    after it. Without leaving those chains out, the check would call podnet's own write a drift."""
    from podnet.proxy.iptables.restore import Runner

    ns, backend, state, settings = synced
    old, new = _changed(state)

    class SyncAfterRead(Runner):
        def popen_read(self, argv: Sequence[str]):  # type: ignore[no-untyped-def]
            out = super().popen_read(argv).communicate()[0]
            backend.restorer.runner = Runner(netns=ns)  # once
            backend.partial_sync(old, new, settings, False)
            return _Finished(out)

    backend.restorer.runner = SyncAfterRead(netns=ns)
    assert backend.check_drift() is None
    assert any("10.244.9.9" in r for rules in backend.restorer.applied["nat"].values() for r in rules)
    assert not backend.needs_full
    assert backend.check_drift() is None  # the next read sees the write, and calls nothing a drift


def test_a_write_stops_the_read_which_is_tried_again(synced) -> None:  # type: ignore[no-untyped-def]
    """iptables-save re-reads the whole table when a transaction commits meanwhile (at 10k services it never
    finishes under a change a second). podnet's own write stops it; the check reads again after."""
    from podnet.proxy.iptables.restore import Runner

    ns, backend, state, settings = synced
    old, new = _changed(state)
    reads: list[int | None] = []

    class WriteDuringRead(Runner):
        def popen_read(self, argv: Sequence[str]):  # type: ignore[no-untyped-def]
            if reads:
                reads.append(len(reads))
                return super().popen_read(argv)
            # the first read is a slow one (as at 10k services), so the write surely lands while it runs
            slow = [sys.executable, "-c", "import os, sys, time; time.sleep(10); os.execvp(sys.argv[1], sys.argv[1:])"]
            proc = super().popen_read([*slow, *argv])
            backend.partial_sync(old, new, settings, False)
            reads.append(len(reads))
            return proc

    backend.restorer.runner = WriteDuringRead(netns=ns)
    assert backend.check_drift() is None
    assert reads == [0, 1]  # stopped by the write (not 10 s later), then read whole
    assert not backend.needs_full


def test_when_rules_cannot_be_read_chains_are_still_checked_and_an_hour_later_a_full_sync_follows(
        synced, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from podnet.proxy.iptables import drift_check
    from podnet.proxy.iptables.restore import Runner

    ns, backend, state, settings = synced

    class NeverRead(Runner):
        def popen_read(self, argv: Sequence[str]):  # type: ignore[no-untyped-def]
            proc = super().popen_read(argv)
            proc.kill()  # as a write of podnet's would, every time
            return proc

    backend.restorer.runner = NeverRead(netns=ns)
    sep = _sep_chain(ns)
    _ipt(ns, "-t", "nat", "-D", sep, "1")
    assert backend.check_drift() is None  # a rule count cannot be checked without the rules
    _ipt(ns, "-t", "nat", "-N", "KUBE-SEP-STALE0000000000")
    found = backend.check_drift()
    assert found is not None and "nat/KUBE-SEP-STALE0000000000: a service chain podnet does not have" in found
    backend.full_sync(state, settings)
    monkeypatch.setattr(drift_check, "FULL_SYNC_PERIOD", 0.0)
    found = backend.check_drift()
    assert found is not None and "no read of every rule could finish" in found and backend.needs_full


def test_when_no_read_of_every_rule_finishes_chain_names_and_jumps_are_still_checked(synced) -> None:  # type: ignore[no-untyped-def]
    """Every iptables-save is stopped (as by syncs landing one after another): the check falls back to the
    chain listing, so a deleted chain and a removed jump are found, while a rule count cannot be."""
    from podnet.proxy.iptables.restore import Runner

    ns, backend, state, settings = synced
    saves: list[int] = []

    class NoWholeRead(Runner):
        def popen_read(self, argv: Sequence[str]):  # type: ignore[no-untyped-def]
            if any(a.endswith("-save") for a in argv):  # iptables-save, iptables-nft-save
                saves.append(1)
                return super().popen_read(["false"])  # exits non-zero: a read that did not finish
            return super().popen_read(argv)

    backend.restorer.runner = NoWholeRead(netns=ns)
    sep = _sep_chain(ns)
    _ipt(ns, "-t", "nat", "-D", sep, "1")  # a count only a whole read sees
    assert backend.check_drift() is None and backend.restorer.drift.last_check == "chains"
    assert len(saves) == 5  # every attempt was made
    _ipt(ns, "-t", "nat", "-D", "OUTPUT", "-m", "comment", "--comment", "kubernetes service portals",
         "-j", "KUBE-SERVICES")
    found = backend.check_drift()
    assert found is not None and "nat/OUTPUT: the jump to KUBE-SERVICES is missing" in found, found
