"""`podnet demo --ip-family dual|ipv6`: the walkthrough on a lab of those families passes every check it
makes, and makes them on each family's addresses (both ClusterIPs, the NodePort on each node address, the
pods' addresses of each family across nodes)."""

from __future__ import annotations

import ipaddress
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _addresses(line: str, version: int) -> list[str]:
    """The addresses of one IP version in a line: [v6]:port, v4:port, and bare ones before a colon."""
    out = []
    for bracketed, bare in re.findall(r"\[([0-9a-f:]+)\]|([0-9a-f.:]{3,})", line):
        for cand in ([bracketed] if bracketed else [bare, bare.rstrip(":"), bare.rsplit(":", 1)[0]]):
            try:
                ip = ipaddress.ip_address(cand)
            except ValueError:
                continue
            if ip.version == version:
                out.append(str(ip))
            break
    return out


@pytest.mark.parametrize("family", ["dual", "ipv6"])
def test_demo_in_each_ip_family(family: str) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from podnet.lab import cluster

    name = f"df{secrets.token_hex(3)}"
    podnet = str(Path(sys.executable).with_name("podnet"))
    try:
        r = subprocess.run([podnet, "demo", "--name", name, "--ip-family", family], capture_output=True, text=True,
                           timeout=600, env={**os.environ, "COLUMNS": "250"})
    finally:
        cluster.down(name)
    out = re.sub(r"\x1b\[[0-9;]*m", "", r.stdout)
    assert r.returncode == 0, out[-3000:] + r.stderr[-2000:]
    checks = [line for line in out.splitlines() if line.startswith(("PASS ", "FAIL "))]
    assert checks and all(c.startswith("PASS ") for c in checks), checks
    versions = (4, 6) if family == "dual" else (6,)
    answered = [c for c in checks if c.startswith("PASS both pods answer on ")]
    nodeport = [c for c in checks if c.startswith("PASS node2 -> node1 ")]
    pod_to_pod = [c for c in checks if c.startswith("PASS client (node1) -> ")]
    for v in versions:  # each family's ClusterIP, node address and pod address was used
        assert any(_addresses(c, v) for c in answered), (v, answered)
        assert any(_addresses(c, v) for c in nodeport), (v, nodeport)
        assert any(_addresses(c, v) for c in pod_to_pod), (v, pod_to_pod)
    if family == "ipv6":
        assert not any(_addresses(c, 4) for c in answered + nodeport + pod_to_pod), checks
        assert "SKIP podnet trace reads IPv4 rules only" in out
    else:
        assert "PASS podnet trace --verify: the kernel took the predicted path" in out
