"""kube-proxy's TestSyncProxyRulesRepeated, step by step, against ONE renderer state.

The cases live in shared/reference/kube-proxy-golden/ (beside the repository); each step's expected
text is what kube-proxy's sync wrote, compared after the normalisation its tests use
(compare_helpers.sort_iptables_rules). Partial syncs, stale-chain deletion and the full resync after
a failed partial restore (step 9) are replayed through an in-memory iptables, so "which chains
exist" comes from what earlier steps really applied, as kube-proxy's iptables-save does.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from podnet.proxy.iptables.render import render
from podnet.proxy.settings import settings_from_proxier_block
from podnet.proxy.tracker import desired_state_from_objects
from tests.unit.proxy.proxy_fake_iptables import FakeIPTables, RestoreError

REPO = Path(__file__).resolve().parents[3]
GOLDEN = REPO.parent / "shared" / "reference" / "kube-proxy-golden"

pytestmark = pytest.mark.skipif(
    not (GOLDEN / "compare_helpers.py").exists(),
    reason=f"kube-proxy golden cases not found at {GOLDEN} (the shared/ folder beside the repository)",
)


def _compare_helpers():
    spec = importlib.util.spec_from_file_location("kp_compare_helpers", GOLDEN / "compare_helpers.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("kp_compare_helpers", mod)
    spec.loader.exec_module(mod)
    return mod


def _steps(prefix: str) -> list[tuple[dict, str, Path]]:
    out = []
    for inp in sorted(GOLDEN.glob(f"{prefix}-*.input.yaml"), key=lambda p: int(p.name.split("-")[2])):
        case = yaml.safe_load(inp.read_text())
        expected = Path(str(inp).replace(".input.yaml", ".expected.txt")).read_text()
        out.append((case, expected, inp))
    return out


def _desired(case: dict):
    st = case["stateAfterEvent"]
    objs = list(st.get("services") or []) + list(st.get("endpointSlices") or [])
    return desired_state_from_objects(objs, case["proxier"]["nodeName"], ip_family=case["proxier"]["ipFamily"])


def test_syncrepeated_steps_in_order():
    helpers = _compare_helpers()
    steps = _steps("iptables-syncrepeated")
    assert [c["step"] for c, _, _ in steps] == list(range(1, 10))
    kernel = FakeIPTables()
    applied = None  # desired state of the last successful restore
    for case, expected, path in steps:
        settings = settings_from_proxier_block(case["proxier"])
        desired = _desired(case)
        full = case["sync"] == "full"
        if case["step"] == 9:
            # kube-proxy's test injects a jump to svc4's endpoint chain, then deletes svc4: the
            # partial restore must fail (it deletes a chain still in use) and change nothing ...
            kernel.add_rule("nat", "-A KUBE-SVC-X27LE4BHSL4DOUIK -j KUBE-SEP-AYCN5HPXMIRJNJXU")
            partial = render(desired, settings, previous=applied, full=False,
                             existing_nat_chains=kernel.chains("nat"))
            before = kernel.tables
            with pytest.raises(RestoreError):
                kernel.restore(partial.text)
            assert kernel.tables is before
            # ... so the next sync is a full one; that is what the golden step shows.
            assert full
        result = render(desired, settings, previous=applied, full=full, existing_nat_chains=kernel.chains("nat"))
        got = helpers.sort_iptables_rules(result.text)
        assert got == expected, f"{path.name}\n--- got\n{got}\n--- expected\n{expected}"
        kernel.restore(result.text)
        applied = desired
    # After the recovery sync the kernel holds exactly the chains the final state needs.
    svc_chains = {c for c in kernel.chains("nat") if c.startswith("KUBE-S")} - {"KUBE-SERVICES"}
    assert svc_chains == set(result.active_nat_chains)


def test_each_step_as_a_full_sync_equals_its_chains():
    """A full sync of any step's state writes every chain that step's kernel should hold."""
    for case, _, path in _steps("iptables-syncrepeated"):
        settings = settings_from_proxier_block(case["proxier"])
        kernel = FakeIPTables()
        result = render(_desired(case), settings, full=True)
        kernel.restore(result.text)
        declared = set(result.nat_chains) - {"KUBE-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-MARK-MASQ"}
        assert declared == set(result.active_nat_chains), path.name
