"""The supervisor's table of roles: what a lab runs, in which order it starts and stops."""

from __future__ import annotations

from podnet.lab import supervisor, topology
from podnet.lab.state import LabState


def roles(store: str) -> list[str]:
    st = LabState(topology.build("lab", 2, store=store), "sqlite:////tmp/unused.db")
    return [c.role for c in supervisor.children(st)]


def test_every_lab_process_is_a_role_and_the_store_comes_first():
    assert roles("sqlite") == ["controlplane", "node1/overlay", "node2/overlay", "node1/proxy", "node2/proxy",
                               "node1/speaker", "node2/speaker", "node1/agent", "node2/agent"]
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
