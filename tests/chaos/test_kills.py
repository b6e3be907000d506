"""kill -9 of every lab process, in a random (seeded) order, while a client in a pod calls a ClusterIP and
a NodePort: no request fails, every process comes back, a Service created after each kill answers, and
after `lab down` nothing of the lab is left (namespaces, processes, files, root-namespace state)."""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import pytest

from podnet.lab import chaos, procs, teardown
from podnet.lab.state import LabState, lab_dir

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "webapp1"
CLIENT_POD = """\
apiVersion: v1
kind: Pod
metadata: {name: chaos-client, labels: {app: chaos-client}}
spec:
  nodeName: node1
  containers: [{name: c, command: [sleep, infinity]}]
"""
SELECTOR = {"app": "webapp1-clusterip"}  # the examples' pods
BOUND = 30.0  # generous: "works eventually"; the 2 s goal is measured and printed


def _wait(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _ready_pods(lab) -> int:
    items = json.loads(lab.podnet("get", "pods", "-o", "json").stdout)["items"]
    return sum(any(c.get("type") == "Ready" and c.get("status") == "True"
                   for c in (p.get("status") or {}).get("conditions") or []) for p in items)


def test_random_kill9_of_every_lab_process(lab_factory, root_state, chaos_seed):
    rng = random.Random(chaos_seed)
    before = root_state()
    lab = lab_factory()
    out = lab.up("--nodes", "2", "--store", "etcd").stdout  # etcd: the store is one of the victims too
    lab.store = next(w for w in out.split() if w.startswith("etcd://unix://"))
    lab.podnet("apply", "-f", str(EXAMPLES))
    lab.podnet("apply", "-f", "-", input=CLIENT_POD)
    _wait(lambda: _ready_pods(lab) == 3, 30, "3 ready pods")
    st = LabState.load(lab.name)
    assert st is not None
    client_ns = st.spec.pod_netns("default", "chaos-client")
    svcs = {s["metadata"]["name"]: s for s in json.loads(lab.podnet("get", "services", "-o", "json").stdout)["items"]}
    cip = svcs["webapp1-clusterip-svc"]["spec"]["clusterIP"]
    node_port = svcs["webapp1-nodeport-svc"]["spec"]["ports"][0]["nodePort"]
    targets = [f"{cip}:80", f"{st.spec.node_specs[1].underlay_ip}:{node_port}"]
    # Both paths programmed before the chaos starts: from here on, no request may fail.
    _wait(lambda: chaos.ClientLoop(client_ns, targets, 0.3).result().failed == 0, 30, "both paths answering")

    roles = chaos.victims(lab.name)
    assert {"supervisor", "controlplane", "etcd", "node1/proxy", "node1/overlay", "node1/agent"} <= set(roles)
    rng.shuffle(roles)
    kills, sent, failed, errors = [], 0, 0, []
    seen: list[procs.ProcRecord] = []
    for i, role in enumerate(roles):
        loop = chaos.ClientLoop(client_ns, targets, duration=2.5)
        time.sleep(0.3)
        seen.append(chaos.record(lab.name, role))  # type: ignore[arg-type]
        k = chaos.kill_and_recover(lab.name, role, client_ns=client_ns, selector=SELECTOR, port=80, index=i,
                                   bound=BOUND)
        r = loop.result()
        kills.append(k)
        sent, failed = sent + r.sent, failed + r.failed
        errors += [[role, *e] for e in r.errors]
    print(f"{'killed':<16} {'back after':>10} {'new Service answers after':>26}")
    for k in kills:
        print(f"{k.role:<16} {k.back_after or float('nan'):>9.2f}s {k.converged_after or float('nan'):>25.2f}s")
    worst = max((k.converged_after or float("inf")) for k in kills)
    print(f"kills survived: {sum(k.back_after is not None for k in kills)}/{len(kills)}; "
          f"requests sent {sent}, failed {failed}; worst convergence {worst:.2f} s (goal 2 s)")
    assert all(k.back_after is not None for k in kills), [k.role for k in kills if k.back_after is None]
    assert all(k.converged_after is not None for k in kills), [k.role for k in kills if k.converged_after is None]
    assert sent > 0 and failed == 0, errors[:10]

    # Nothing is left once the lab is down: namespaces, processes (every one ever recorded), files, root state.
    st = LabState.load(lab.name)
    assert st is not None
    everything = [*seen, *st.procs.values(), *([st.supervisor] if st.supervisor else []),
                  *teardown._pod_procs(st)]
    lab.down()
    assert teardown.lab_namespaces(lab.name) == []
    assert not lab_dir(lab.name).exists()
    assert [r for r in everything if procs.alive(r)] == []
    assert root_state() == before
