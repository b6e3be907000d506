"""The lab heals itself: kill -9 of the supervisor, the control plane or the lab's etcd changes nothing a
user can see for long; and the store tells the truth about pods once their lab is gone or smaller."""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest

from podnet.lab import procs
from podnet.lab.state import LabState

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "webapp1"

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: late}
spec:
  replicas: 2
  selector: {matchLabels: {app: late}}
  template:
    metadata: {labels: {app: late}}
    spec:
      containers: [{name: web, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: late}
spec:
  selector: {app: late}
  ports: [{port: 80}]
"""

POD = """\
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {app: solo}}
spec:
  nodeName: node1
  containers: [{name: c, ports: [{containerPort: 80}]}]
"""

# Three more pods behind the examples' Services, so the third node surely holds some.
WEBAPP1_DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: webapp1}
spec:
  replicas: 3
  selector: {matchLabels: {app: webapp1-clusterip}}
  template:
    metadata: {labels: {app: webapp1-clusterip}}
    spec:
      containers: [{name: web, ports: [{containerPort: 80}]}]
"""


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _pods(lab) -> dict[str, dict]:
    items = json.loads(lab.podnet("get", "pods", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p for p in items}


def _ready(p: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def _endpoint_ips(lab, service: str) -> set[str]:
    items = json.loads(lab.podnet("get", "endpointslices", "-o", "json").stdout)["items"]
    return {a for s in items if s["metadata"].get("labels", {}).get("kubernetes.io/service-name") == service
            for e in s.get("endpoints") or [] for a in e.get("addresses") or []}


def _kill(rec: procs.ProcRecord) -> None:
    os.kill(rec.pid, signal.SIGKILL)
    wait_for(lambda: not procs.alive(rec), 5, f"pid {rec.pid} to die")


def _restarted(name: str, role: str, old: procs.ProcRecord) -> procs.ProcRecord | None:
    st = LabState.load(name)
    rec = st.procs.get(role) if st else None
    return rec if rec is not None and rec.pid != old.pid and procs.alive(rec) else None


def test_kill9_supervisor_then_control_plane_the_lab_heals(lab_factory):
    lab = lab_factory()
    lab.up("--nodes", "2")
    st = LabState.load(lab.name)
    assert st is not None and st.supervisor is not None and "controlplane" in st.procs
    _kill(st.supervisor)
    # An agent starts a new supervisor; it adopts the running children instead of starting them twice.
    sup = wait_for(lambda: (lambda s: s.supervisor if s and s.supervisor and s.supervisor.pid != st.supervisor.pid
                                      and procs.alive(s.supervisor) else None)(LabState.load(lab.name)),
                   15, "a new supervisor")
    after = LabState.load(lab.name)
    assert after is not None and after.procs["node1/proxy"] == st.procs["node1/proxy"]  # adopted, not restarted
    _kill(st.procs["controlplane"])
    _kill(st.procs["node1/proxy"])
    # A dead child (the proxy) and the control plane are restarted by the new supervisor.
    wait_for(lambda: _restarted(lab.name, "node1/proxy", st.procs["node1/proxy"]), 15, "node1/proxy restarted")
    wait_for(lambda: _restarted(lab.name, "controlplane", st.procs["controlplane"]), 15, "control plane restarted")
    # Newly applied pods get scheduled, run, and become the Service's endpoints.
    lab.podnet("apply", "-f", "-", input=APP)
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 2 and all(map(_ready, ps)) else None)(
        [p for n, p in _pods(lab).items() if n.startswith("late-")]), 30, "2 ready pods")
    ips = {p["status"]["podIP"] for p in pods}
    wait_for(lambda: _endpoint_ips(lab, "late") == ips, 15, "endpoints of the new pods")
    assert sup.pid != st.supervisor.pid


def test_kill9_of_the_lab_etcd_it_comes_back_with_its_data(lab_factory):
    lab = lab_factory()
    out = lab.up("--nodes", "1", "--store", "etcd").stdout
    lab.store = next(w for w in out.split() if w.startswith("etcd://unix://"))
    lab.podnet("apply", "-f", "-", input=POD)
    wait_for(lambda: _ready(_pods(lab).get("solo", {})), 20, "solo ready")
    st = LabState.load(lab.name)
    assert st is not None
    _kill(st.procs["etcd"])
    wait_for(lambda: _restarted(lab.name, "etcd", st.procs["etcd"]), 15, "etcd restarted")
    # Same data dir: what was stored before the kill is still there, and the lab works on.
    wait_for(lambda: lab.podnet("get", "pods", check=False).returncode == 0, 15, "etcd answering")
    assert "solo" in _pods(lab)
    lab.podnet("apply", "-f", "-", input=POD.replace("solo", "second"))
    wait_for(lambda: _ready(_pods(lab).get("second", {})), 30, "a pod applied after the kill runs")


def test_after_down_pods_claim_no_address(lab_factory, tmp_path):
    lab = lab_factory()
    lab.store = f"sqlite:///{tmp_path}/store.db"  # outlives the lab
    lab.up("--nodes", "1")
    lab.podnet("apply", "-f", "-", input=POD)
    wait_for(lambda: _ready(_pods(lab).get("solo", {})), 20, "solo ready")
    lab.down()
    status = _pods(lab)["solo"]["status"]
    assert status["phase"] == "Pending" and status["reason"] == "NodeLost"
    assert not status.get("podIP") and not status.get("podIPs") and not status.get("hostIP")
    assert not _ready(_pods(lab)["solo"])
    assert "podIP" not in lab.podnet("get", "pods", "solo", "-o", "yaml").stdout


def test_a_smaller_lab_on_an_old_store_serves_every_request(lab_factory, tmp_path):
    lab = lab_factory()
    lab.store = f"sqlite:///{tmp_path}/store.db"
    lab.up("--nodes", "3")
    lab.podnet("apply", "-f", str(EXAMPLES))
    lab.podnet("apply", "-f", "-", input=WEBAPP1_DEPLOYMENT)
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 5 and all(map(_ready, ps.values())) else None)(_pods(lab)),
                    30, "5 ready pods")
    assert any(p["spec"]["nodeName"] == "node3" for p in pods.values())
    lab.down()
    lab.up("--nodes", "2")
    # Every pod that can run runs on the two nodes left; the bare pod of node3 (if any) is Failed.
    def settled():
        ps = _pods(lab)
        live = [p for p in ps.values() if (p.get("status") or {}).get("phase") != "Failed"]
        ok = all(_ready(p) and p["spec"]["nodeName"] in ("node1", "node2") for p in live)
        return live if ok and len(live) >= 4 else None
    live = wait_for(settled, 40, "pods settled on node1 and node2")
    ips = {p["status"]["podIP"] for p in live}
    wait_for(lambda: _endpoint_ips(lab, "webapp1-clusterip-svc") == ips, 15, "endpoints = live pods")
    svcs = {s["metadata"]["name"]: s for s in json.loads(lab.podnet("get", "services", "-o", "json").stdout)["items"]}
    cip = svcs["webapp1-clusterip-svc"]["spec"]["clusterIP"]
    node_port = svcs["webapp1-nodeport-svc"]["spec"]["ports"][0]["nodePort"]

    def dnat_targets(node: str) -> set[str]:
        out = lab.exec(node, "iptables-save", "-t", "nat").stdout
        return {line.rsplit(" ", 1)[-1].split(":")[0] for line in out.splitlines()
                if "webapp1-clusterip-svc" in line and "DNAT" in line}

    for node in ("node1", "node2"):
        wait_for(lambda node=node: dnat_targets(node) == ips, 15, f"rules on {node}")
    urls = [f"http://{cip}/"] * 9 + [f"http://192.168.77.12:{node_port}/"] * 9
    args = [a for u in urls for a in (u, "-o", "/dev/null")]  # one -o per URL
    r = lab.exec("node1", "curl", "-sS", "--max-time", "2", "-w", "%{http_code}\\n", *args, timeout=60)
    assert r.stdout.split() == ["200"] * len(urls), (r.stdout, r.stderr)
