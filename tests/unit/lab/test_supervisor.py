"""The supervisor's table of roles: what a lab runs, in which order it starts and stops."""

from __future__ import annotations

from podnet.lab import supervisor, topology
from podnet.lab.state import LabState


def roles(store: str) -> list[str]:
    st = LabState(topology.build("lab", 2, store=store), "sqlite:////tmp/unused.db")
    return [c.role for c in supervisor.children(st)]


def test_every_lab_process_is_a_role_and_the_store_comes_first():
    assert roles("sqlite") == ["controlplane", "node1/overlay", "node2/overlay", "node1/proxy", "node2/proxy",
                               "node1/dns", "node2/dns", "node1/speaker", "node2/speaker", "node1/agent",
                               "node2/agent"]
    assert roles("etcd")[0] == "etcd" and roles("etcd")[1:] == roles("sqlite")


def test_a_lab_without_a_load_balancer_pool_runs_no_speakers():
    st = LabState(topology.build("lab", 4, underlay_cidr="10.0.0.0/28"), "sqlite:////tmp/unused.db")
    assert st.spec.lb_pool == "" and not any(c.role.endswith("/speaker") for c in supervisor.children(st))


def test_the_store_stops_last_and_only_it_starts_before_registration():
    st = LabState(topology.build("lab", 1, store="etcd"), "sqlite:////tmp/unused.db")
    cs = supervisor.children(st)
    assert [c.role for c in cs if not c.needs_registration] == ["etcd"]
    assert supervisor.stop_rank("etcd") == 1 and supervisor.stop_rank("node1/proxy") == 0
    assert supervisor.stop_rank("controlplane") == 0


def test_a_lab_with_api_server_material_runs_the_api_server(tmp_path, monkeypatch):
    from podnet.lab import apiserver, state

    monkeypatch.setattr(state, "LABS_ROOT", tmp_path)
    st = LabState(topology.build("lab", 1, store="sqlite"), "sqlite:////tmp/unused.db")
    st.dir.mkdir(parents=True)
    apiserver.port_file(st).write_text("6443\n")
    cs = {c.role: c for c in supervisor.children(st)}
    assert "apiserver" in cs and cs["apiserver"].needs_registration
    argv = cs["apiserver"].argv
    assert argv[argv.index("--listen") + 1] == "127.0.0.1:6443"


# ---- the loop: woken by a child's death, not by a poll ---------------------------------------------------


def _supervisor(tmp_path, monkeypatch, argvs):  # type: ignore[no-untyped-def]
    from podnet.lab import state

    monkeypatch.setattr(state, "LABS_ROOT", tmp_path)
    monkeypatch.setattr(supervisor, "IDLE_CHECK", 600.0)  # a poll would not come within any test's bound
    st = LabState(topology.build("lab", 1, store="sqlite"), "sqlite:////tmp/unused.db")
    st.dir.mkdir(parents=True)
    (st.dir / supervisor.REGISTERED).touch()
    sup = supervisor.Supervisor(st)
    sup.children = [supervisor.Child(f"c{i}", argv, needs_registration=False) for i, argv in enumerate(argvs)]
    return st, sup


def _until(cond, what: str, bound: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + bound
    while not cond():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def test_a_killed_child_is_restarted_at_once_and_stop_wakes_the_loop(tmp_path, monkeypatch):
    import os
    import signal
    import threading

    from podnet.lab import procs

    st, sup = _supervisor(tmp_path, monkeypatch, [["sleep", "300"]])
    t = threading.Thread(target=sup.run, daemon=True)
    t.start()
    try:
        _until(lambda: sup.children[0].rec is not None, "the child was not started")
        first = sup.children[0].rec
        os.kill(first.pid, signal.SIGKILL)
        _until(lambda: sup.children[0].rec not in (None, first) and procs.alive(sup.children[0].rec),
               "the killed child was not restarted: only the pidfd can have woken the loop (the poll is 600 s)")
        assert sup.children[0].restarts == 1 and st.procs["c0"] == sup.children[0].rec
    finally:
        sup.stop()
        t.join(20)
    assert not t.is_alive() and not procs.alive(sup.children[0].rec)


def test_an_adopted_process_that_is_not_our_child_wakes_the_loop_too(tmp_path, monkeypatch):
    """After a supervisor restart its children belong to nobody it can waitpid() for: the pidfd still works."""
    import os
    import signal
    import subprocess
    import threading

    from podnet.lab import procs

    argv = ["sleep", "301"]
    pid = int(subprocess.run(["sh", "-c", "sleep 301 >/dev/null 2>&1 & echo $!"], capture_output=True,
                             text=True, check=True).stdout)  # reparented away from us: not our child
    st, sup = _supervisor(tmp_path, monkeypatch, [argv])
    st.procs["c0"] = procs.ProcRecord(pid, procs.start_time_of(pid) or 0, argv, str(st.log("c0")))
    t = threading.Thread(target=sup.run, daemon=True)
    t.start()
    try:
        _until(lambda: sup.children[0].rec is not None, "nothing adopted")
        assert sup.children[0].rec.pid == pid  # adopted, not started twice
        os.kill(pid, signal.SIGKILL)
        _until(lambda: sup.children[0].rec is not None and sup.children[0].rec.pid != pid,
               "the adopted process's death did not wake the loop")
    finally:
        sup.stop()
        t.join(20)
    assert not procs.alive(sup.children[0].rec)


def test_cluster_dns_runs_on_two_nodes_in_their_namespaces_at_their_addresses():
    st = LabState(topology.build("lab", 3), "sqlite:////tmp/unused.db")
    dns = {c.role: c.argv for c in supervisor.children(st) if c.role.endswith("/dns")}
    assert sorted(dns) == ["node1/dns", "node2/dns"]  # CoreDNS's two replicas, not one per node
    argv = dns["node2/dns"]
    assert argv[:4] == ["ip", "netns", "exec", "pn-lab.node2"]
    assert argv[argv.index("--listen") + 1] == "192.168.77.12:53"
    assert argv[argv.index("--publish") + 1] == "kube-system/kube-dns"
    assert st.spec.cluster_dns == "10.96.0.10"  # the service CIDR's tenth address, as kubeadm
    assert topology.build("lab", 1, service_cidr="10.100.0.0/16").cluster_dns == "10.100.0.10"


def test_stop_all_stops_every_process_and_kills_one_that_ignores_sigterm(tmp_path):
    """One batch: a process that exits on SIGTERM and one that ignores it; both are gone afterwards, the
    stubborn one by SIGKILL once the timeout has passed."""
    import sys
    import time

    from podnet.lab import procs

    polite = procs.spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "a.log")
    stubborn = procs.spawn([sys.executable, "-c",
                            "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
                            "open(__import__('sys').argv[1], 'w').close(); time.sleep(60)",
                            str(tmp_path / "ready")], tmp_path / "b.log")
    while not (tmp_path / "ready").exists():  # its handler is set before it is asked to stop
        time.sleep(0.01)
    procs.stop_all([polite, stubborn], timeout=0.5)
    assert not procs.alive(polite) and not procs.alive(stubborn)
