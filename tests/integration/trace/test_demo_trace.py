"""`podnet demo` ends with a trace of its ClusterIP request, --verify'd against the kernel."""

from __future__ import annotations

import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def test_demo_ends_with_a_verified_trace_of_its_clusterip_request():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from podnet.lab import cluster

    name = f"dm{secrets.token_hex(3)}"
    podnet = str(Path(sys.executable).with_name("podnet"))
    try:
        r = subprocess.run([podnet, "demo", "--name", name], capture_output=True, text=True, timeout=600,
                           env={**os.environ, "COLUMNS": "250"})  # wide enough that no line wraps
    finally:
        cluster.down(name)
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    steps = re.findall(r"─ ([a-z])\. ", out)  # the step titles (rich rules)
    assert steps and steps[-1] == "f", steps  # the trace is the last step
    last = out[out.rindex("f. The ClusterIP request's path"):]
    assert "podnet trace --lab" in last and "--to svc/" in last and "--verify" in last, last
    assert re.search(r"outcome 1: delivered pod \S+", last) and "KUBE-SVC-" in last, last
    assert "verify: the kernel agrees" in last, last
