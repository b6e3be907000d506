"""One lab per (proxy mode, overlay backend) for the whole module, torn down by name whatever happens."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest

PODNET = str(Path(sys.executable).with_name("podnet"))
SCENARIO = Path(__file__).with_name("scenario.yaml")


class TraceLab:
    def __init__(self, name: str, mode: str, backend: str) -> None:
        self.name, self.mode, self.backend = name, mode, backend
        self.store = f"sqlite:////run/podnet/labs/{name}/state.db"

    def podnet(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([PODNET, "--store", self.store, *args], capture_output=True, text=True, input=input,
                           timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"podnet {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def trace(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        return self.podnet("trace", "--lab", self.name, *args, check=check)

    def node_ips(self) -> dict[str, str]:
        from podnet.lab.state import LabState

        st = LabState.load(self.name)
        assert st is not None, self.name
        return {n.name: n.underlay_ip for n in st.spec.node_specs}

    def netns(self, target: str) -> str:
        from podnet.lab.cluster import resolve_target

        return resolve_target(self.name, target)


def make_lab(mode: str, backend: str, nodes: int = 2) -> TraceLab:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    from podnet.lab import cluster, topology

    lab = TraceLab(f"tr{secrets.token_hex(3)}", mode, backend)
    spec = topology.build(lab.name, nodes, backend, mode, "sqlite")
    try:
        cluster.up(spec, lab.store)
        lab.podnet("apply", "-f", str(SCENARIO))
        wait_ready(lab)
    except BaseException:
        cluster.down(lab.name)
        raise
    return lab


def wait_ready(lab: TraceLab, timeout: float = 120) -> None:  # a bound, for a loaded machine
    import json
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pods = json.loads(lab.podnet("get", "pods", "-o", "json").stdout)["items"]
        ready = [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        if pods and len(ready) == len(pods):
            # rules follow the endpoints: wait until every node has the web Service's two endpoints
            if all(_rules_ready(lab, n) for n in ("node1", "node2")):
                return
        time.sleep(0.2)
    raise AssertionError(f"lab {lab.name}: pods/rules not ready within {timeout} s")


def _rules_ready(lab: TraceLab, node: str) -> bool:
    """Each Service's rules are on the node (read back through the product's own walk)."""
    from podnet.trace import resolve, snapshot, walk

    c = snapshot.read_cluster(lab.name)
    src = walk.Source("node", node)
    want = {"svc/web": 2, "svc/sticky": 2, "svc/self": 1, "svc/webnp": 2}
    for dst, n in want.items():
        ip, port = resolve.destination(c, dst, "tcp")
        r = walk.walk(c, src, resolve.Packet("", ip, "tcp", 0, port))
        if len([o for o in r.outcomes if o.verdict == "delivered"]) != n:
            return False
    return True


@pytest.fixture(scope="module", params=[("iptables", "vxlan"), ("nftables", "vxlan")], ids=lambda p: "-".join(p))
def lab(request):
    from podnet.lab import cluster

    lab = make_lab(*request.param)
    try:
        yield lab
    finally:
        cluster.down(lab.name)


_BACKEND_PAIRS = [("nftables", "host-gw"), ("iptables", "udp")]
if os.environ.get("PODNET_TRACE_ALL_PAIRS") == "1":
    _BACKEND_PAIRS += [("iptables", "host-gw"), ("nftables", "udp")]


@pytest.fixture(scope="module", params=_BACKEND_PAIRS, ids=lambda p: "-".join(p))
def backend_lab(request):
    """The other overlay backends, with 3 nodes: only cross-node hops differ, so only cross-node cases and a
    slice of the generated scenarios (over a third node) run on them. Each backend runs with one proxy mode
    and each mode with one of them (the proxy's rules do not depend on the backend); benchmarks/trace.py
    runs the same pairs with 200+ scenarios. PODNET_TRACE_ALL_PAIRS=1 adds iptables/host-gw and
    nftables/udp."""
    from podnet.lab import cluster

    lab = make_lab(*request.param, nodes=3)
    try:
        yield lab
    finally:
        cluster.down(lab.name)
