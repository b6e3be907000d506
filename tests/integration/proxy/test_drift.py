"""The iptables backend's drift check against a real kernel: what it reads with iptables-save after podnet's own
syncs is no drift; what another program changes is named, and the full sync that follows repairs it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from subprocess import CompletedProcess

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


def test_chains_podnet_writes_while_the_kernel_is_read_are_no_drift(synced) -> None:  # type: ignore[no-untyped-def]
    """A partial sync right after iptables-save read the kernel: the read shows the chains before it, the model
    after it. Without leaving those chains out, the check would call podnet's own write a drift."""
    from podnet.proxy.iptables.restore import Runner
    from podnet.proxy.model import DesiredState, Endpoint

    ns, backend, state, settings = synced
    name = next(iter(state.services))
    old = state.services[name]
    new = replace(old, endpoints=(*old.endpoints, Endpoint(ip="10.244.9.9", port=8080)))

    class SyncAfterRead(Runner):
        def run(self, argv: Sequence[str], **kw) -> CompletedProcess[str]:  # type: ignore[no-untyped-def]
            p = super().run(argv, **kw)
            if argv[0].startswith("iptables-save") or argv[0].startswith("iptables-nft-save"):
                backend.restorer.runner = Runner(netns=ns)  # once
                backend.partial_sync(DesiredState("n1", services={name: old}),
                                     DesiredState("n1", services={name: new}), settings, False)
            return p

    backend.restorer.runner = SyncAfterRead(netns=ns)
    assert backend.check_drift() is None
    assert any("10.244.9.9" in r for rules in backend.restorer.applied["nat"].values() for r in rules)
    assert not backend.needs_full
    assert backend.check_drift() is None  # the next read sees the write, and calls nothing a drift
