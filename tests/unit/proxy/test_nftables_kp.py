"""`--layout kube-proxy`: kube-proxy's own nftables table, against its unit tests' expectations.

The expected files are kube-proxy's TestOverallNFTablesRules and TestSyncProxyRulesRepeated, compared
after the normalisation its tests apply (compare_helpers.sort_nftables_transaction on both sides).
The repeated-sync steps run against one simulated proxier, as upstream: chains of a service that went
away stay (flushed) until a later sync deletes them, and the partial transactions have kube-proxy's
operation counts.
"""

from __future__ import annotations

import difflib
import importlib.util

import pytest

from podnet.proxy.model import DesiredState, changed_services
from podnet.proxy.nftables.kubeproxy import kp_chain_names, render_kp, render_kp_delta
from podnet.proxy.nftables.vocab import hash_and_truncate
from tests.unit.proxy.proxy_golden_support import SHARED_GOLDEN, case_state, load_case

if not SHARED_GOLDEN.is_dir():  # pragma: no cover - the reference folder is part of the workspace
    pytest.skip("shared/reference/kube-proxy-golden not available", allow_module_level=True)

_spec = importlib.util.spec_from_file_location("compare_helpers", SHARED_GOLDEN / "compare_helpers.py")
compare = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(compare)  # type: ignore[union-attr]


def assert_same_table(expected: str, got: str) -> None:
    a = compare.sort_nftables_transaction(expected)
    b = compare.sort_nftables_transaction(got)
    if a != b:
        diff = "\n".join(difflib.unified_diff(a.split("\n"), b.split("\n"), "expected", "podnet", lineterm="", n=1))
        pytest.fail("kube-proxy layout differs from the golden file:\n" + diff)


def test_hash_names_match_kube_proxy() -> None:
    assert hash_and_truncate("ns1/svc1/tcp/p80") == "ULMVA6XW-ns1/svc1/tcp/p80"
    assert hash_and_truncate("ns1/svc1/tcp/p80__10.180.0.1/80") == "5OJB2KTY-ns1/svc1/tcp/p80__10.180.0.1/80"
    long = hash_and_truncate("n/" + "x" * 300)
    assert len(long) == 240 and long.endswith("...")


def test_overall_rules() -> None:
    case = load_case(SHARED_GOLDEN / "nftables-overall.input.yaml")
    case["stateAfterEvent"] = {"services": case["services"], "endpointSlices": case["endpointSlices"]}
    desired, settings = case_state(case)
    got = render_kp(desired, settings, service_cidrs=[case["proxier"]["serviceCIDRs"]])
    assert_same_table((SHARED_GOLDEN / "nftables-overall.expected.txt").read_text(), got)


def test_sync_repeated_steps() -> None:
    files = sorted(SHARED_GOLDEN.glob("nftables-syncrepeated-*.input.yaml"), key=lambda p: int(p.name.split("-")[2]))
    assert len(files) == 7
    previous: DesiredState | None = None
    stale: set[str] = set()
    for path in files:
        case = load_case(path)
        desired, settings = case_state(case)
        cidrs = [case["proxier"]["serviceCIDRs"]]
        if case["sync"] == "partial":
            assert previous is not None
            changed = changed_services(previous, desired)
            if case["step"] == 4:
                stale.clear()  # aged by the test: deleted in a separate transaction before the sync
            old = _only(previous, changed)
            new = _only(desired, changed)
            delta = render_kp_delta(old, new, settings)
            if case.get("lastTransactionOps") is not None:
                assert delta.operations == case["lastTransactionOps"], (path.name, delta.text)
            stale |= set(delta.stale_chains)
        stale -= kp_chain_names(desired, settings)
        got = render_kp(desired, settings, service_cidrs=cidrs, stale_chains=stale)
        expected = path.with_name(path.name.replace(".input.yaml", ".expected.txt")).read_text()
        assert_same_table(expected, got)
        previous = desired


def _only(state: DesiredState, names: frozenset[str]) -> DesiredState:
    return DesiredState(state.node_name, state.ip_family,
                        {k: v for k, v in state.services.items() if k.namespaced_name in names},
                        state.topology_zone, state.node_pod_cidrs)
