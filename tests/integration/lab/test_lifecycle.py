"""lab up / down: everything made is removed, also after kill -9 of every lab process; bad input makes
nothing."""

from __future__ import annotations

import os
import signal
import time

import pytest

from podnet.lab import procs, supervisor, teardown
from podnet.lab.state import LabState, lab_dir
from podnet.net import netns

pytestmark = pytest.mark.integration


def _lab_pids(name: str) -> list[int]:
    st = LabState.load(name)
    assert st is not None
    pids = [r.pid for r in st.procs.values()]
    if st.supervisor:
        pids.append(st.supervisor.pid)
    return pids


def _priority(pid: int) -> tuple[int, int]:
    """(nice of the process, nice of its autogroup): with autogroups the CPU is shared between sessions
    first, so both count."""
    nice = int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[16])
    group = open(f"/proc/{pid}/autogroup").read().split()  # "/autogroup-123 nice -10"
    return nice, int(group[-1])


def _gone(pids: list[int]) -> bool:
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[0] != "Z":
                    return False
        except OSError:
            continue
    return True


def test_up_then_down_leaves_nothing(lab_factory, root_state):
    before = root_state()
    lab = lab_factory()
    t = time.monotonic()
    lab.up("--nodes", "2")
    assert time.monotonic() - t < 30
    names = teardown.lab_namespaces(lab.name)
    assert names == sorted([f"pn-{lab.name}.node1", f"pn-{lab.name}.node2", f"pn-{lab.name}.ul"])
    pids = _lab_pids(lab.name)
    # supervisor + control plane + API server + (overlay, proxy, speaker, agent) per node + dns on two nodes
    assert len(pids) == 13
    # the lab's processes get the CPU first on a busy machine (a restarted proxy must sync within 2 s)
    assert {_priority(pid) for pid in pids} == {(supervisor.NICE, supervisor.NICE)}
    status = lab.podnet("lab", "status", "--name", lab.name).stdout
    assert "node1" in status and "node2" in status and "10.244." in status
    lab.down()
    assert teardown.lab_namespaces(lab.name) == []
    assert not lab_dir(lab.name).exists()
    assert _gone(pids)
    assert root_state() == before


def test_down_after_kill9_of_every_lab_process(lab_factory, root_state):
    before = root_state()
    lab = lab_factory()
    lab.up("--nodes", "2")
    lab.podnet("apply", "-f", "-", input=POD)
    st = LabState.load(lab.name)
    assert st is not None and st.supervisor is not None
    pod_ns = st.spec.pod_netns("default", "solo")
    _wait(lambda: os.popen(f"ip netns pids {pod_ns} 2>/dev/null").read().strip(), 20)
    pod_pids = [int(p) for p in os.popen(f"ip netns pids {pod_ns}").read().split()]
    assert {_priority(pid) for pid in pod_pids} == {(0, 0)}  # a workload: the default priority
    for pid in [st.supervisor.pid, *[r.pid for r in st.procs.values()], *pod_pids]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    lab.down()
    assert teardown.lab_namespaces(lab.name) == []
    assert _gone(_pids_of(st) + pod_pids)
    assert root_state() == before


def test_bad_input_makes_nothing(lab_factory):
    lab = lab_factory()
    r = lab.up("--backend", "nope", check=False)
    assert r.returncode == 1 and "--backend" in r.stderr and "nope" in r.stderr
    assert teardown.lab_namespaces(lab.name) == [] and not lab_dir(lab.name).exists()
    r = lab.up("--nodes", "0", check=False)
    assert r.returncode == 1 and "--nodes" in r.stderr
    r = lab.up("--lb-pool", "192.168.77.0/28", check=False)  # holds the gateway and the nodes' addresses
    assert r.returncode == 1 and "--lb-pool" in r.stderr and "192.168.77.11" in r.stderr
    assert teardown.lab_namespaces(lab.name) == [] and not lab_dir(lab.name).exists()

    lab.up("--nodes", "1")
    names = teardown.lab_namespaces(lab.name)
    pids = _lab_pids(lab.name)
    r = lab.up("--nodes", "1", check=False)
    assert r.returncode == 1 and "already exists" in r.stderr
    assert teardown.lab_namespaces(lab.name) == names  # the first lab is untouched
    assert all(procs.alive(r) for r in LabState.load(lab.name).procs.values())  # type: ignore[union-attr]
    assert _lab_pids(lab.name) == pids

    r = lab.podnet("apply", "-f", "-", input=POD.replace("node1", "node9"), check=False)
    assert r.returncode == 1 and "spec.nodeName" in r.stderr and "node9" in r.stderr
    assert "solo" not in lab.podnet("get", "pods").stdout


def _pids_of(st: LabState) -> list[int]:
    return [r.pid for r in st.procs.values()] + ([st.supervisor.pid] if st.supervisor else [])


def _wait(cond, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return
        time.sleep(0.1)
    raise AssertionError("condition not met in time")


POD = """\
apiVersion: v1
kind: Pod
metadata: {name: solo, labels: {app: solo}}
spec:
  nodeName: node1
  containers: [{name: c}]
"""


def test_lab_with_its_own_etcd(lab_factory, root_state):
    """--store etcd: a member inside the lab, reached by every namespace through a unix socket."""
    before = root_state()
    lab = lab_factory()
    out = lab.up("--nodes", "2", "--store", "etcd").stdout
    url = next(w for w in out.split() if w.startswith("etcd://unix://"))
    lab.store = url
    lab.podnet("apply", "-f", "-", input=POD)
    _wait(lambda: "1/1" in lab.podnet("get", "pods").stdout, 20)
    leases = lab.podnet("overlay", "leases").stdout
    assert "192.168.77.11" in leases and "192.168.77.12" in leases  # both nodes leased through etcd
    st = LabState.load(lab.name)
    assert st is not None and "etcd" in st.procs
    etcd = st.procs["etcd"]
    lab.down()
    assert not procs.alive(etcd)
    assert teardown.lab_namespaces(lab.name) == []
    assert root_state() == before


def test_labs_whose_names_share_a_prefix_do_not_touch_each_other(lab_factory):
    """`lab down --name X` and `lab up --name X` see only X's own namespaces, never those of a lab named
    X-<something> (or any name X's namespaces could be mistaken for), nor its processes."""
    from podnet.lab import topology

    lab = lab_factory()
    other = topology.build(f"{lab.name}-b", 1)  # a lab whose name starts with "<lab>-"
    # What such a lab's namespaces are called, plus what a pod of lab X in namespace "b" would be called
    # under a plain prefix grammar: none of them may be taken for lab X's.
    foreign = sorted({other.underlay_netns, other.node_specs[0].netns, other.pod_netns("default", "x"),
                      f"pn-{lab.name}-b-node1", f"pn-{lab.name}-b-ul"})
    sleeper = None
    try:
        for ns in foreign:
            netns.create(ns)
        import subprocess

        sleeper = subprocess.Popen(["ip", "netns", "exec", other.node_specs[0].netns, "sleep", "300"])
        lab.up("--nodes", "1")  # not refused: nothing of this lab exists yet
        lab.down()
        assert netns.list_names(f"pn-{lab.name}") == foreign
        assert sleeper.poll() is None  # the other lab's process is untouched
    finally:
        if sleeper is not None:
            sleeper.kill()
            sleeper.wait()
        for ns in foreign:
            netns.remove(ns)
