"""Full-sync golden cases of tests/unit/proxy/golden/: kube-proxy test expectations, verbatim.

Each case names the upstream test it was transcribed from or derived from; the expected text is in
kube-proxy's normalised form (sortIPTablesRules), which is how upstream compares it too.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from podnet.proxy.iptables.render import render
from tests.unit.proxy.proxy_golden_support import (
    GOLDEN_DIR,
    SHARED_GOLDEN,
    case_state,
    check_rule_jumps,
    load_case,
    sort_like_kube_proxy,
)

CASES = sorted(GOLDEN_DIR.glob("*.input.yaml"))


@pytest.mark.parametrize("path", CASES, ids=[p.name.removesuffix(".input.yaml") for p in CASES])
def test_full_sync_matches_kube_proxy(path: Path):
    case = load_case(path)
    desired, settings = case_state(case)
    result = render(desired, settings, full=True)
    expected = Path(str(path).replace(".input.yaml", ".expected.txt")).read_text()
    got = sort_like_kube_proxy(result.text)
    assert got == expected, f"--- got\n{got}\n--- expected\n{expected}"
    assert check_rule_jumps(result.text) == []
    # A full sync's rule counts are what the kernel holds afterwards.
    assert result.nat_rules_total == result.nat_rules_written == result.text.split("*nat")[1].count("\n-A ")


@pytest.mark.skipif(not (SHARED_GOLDEN / "compare_helpers.py").exists(), reason="shared/ golden folder absent")
def test_own_normaliser_agrees_with_shared_compare_helpers():
    spec = importlib.util.spec_from_file_location("kp_compare_helpers_2", SHARED_GOLDEN / "compare_helpers.py")
    helpers = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(helpers)
    for path in CASES:
        desired, settings = case_state(load_case(path))
        text = render(desired, settings).text
        assert sort_like_kube_proxy(text) == helpers.sort_iptables_rules(text), path.name
