"""Remove everything a lab made: processes (by recorded pid), namespaces (by exact name), state.

Works from the names alone, so it also cleans up after a lab whose processes were killed with -9 or
whose `lab up` failed half-way.
"""

from __future__ import annotations

import shutil

from podnet.lab import procs, supervisor
from podnet.lab.state import LabState, lab_dir
from podnet.lab.topology import lab_of_netns, netns_prefix, teardown_rank
from podnet.net import netns


def teardown(name: str) -> list[str]:
    """Stop the lab's processes and delete its namespaces and state dir. Returns what was removed."""
    removed: list[str] = []
    st = LabState.load(name)
    if st is not None:
        # First the stop marker: no supervisor starts (agents restart a dead one) or keeps running after it.
        (st.dir / supervisor.STOP_MARKER).touch()
        st = LabState.load(name) or st  # the supervisor's own record, written before it checks the marker
        if st.supervisor is not None:
            procs.stop(st.supervisor)  # the supervisor stops its children on SIGTERM
        st = LabState.load(name) or st  # re-read: the supervisor may have restarted children meanwhile
        # The store goes last: agents flush to it on exit. Each batch stops at once (procs.stop_all).
        roles = sorted(st.procs.items())
        writers = [(r, rec) for r, rec in roles if supervisor.stop_rank(r) == 0 and procs.alive(rec)]
        procs.stop_all([rec for _, rec in writers] + pod_procs(st))
        stores = [(r, rec) for r, rec in [*roles, *sorted(st.services.items())]
                  if (r in st.services or supervisor.stop_rank(r) > 0) and procs.alive(rec)]
        procs.stop_all([rec for _, rec in stores])
        removed += [f"process {role} (pid {rec.pid})" for role, rec in writers + stores]
    # Pod namespaces first, then nodes, the underlay last: a namespace's veth ends vanish with it.
    names = set(lab_namespaces(name)) | (_recorded_namespaces(st) if st is not None else set())
    for ns in sorted(names, key=lambda n: (teardown_rank(n), n)):
        _kill_netns_pids(ns)
        if netns.remove(ns):
            removed.append(f"netns {ns}")
    # /etc/netns entries (pods' resolv.conf) whose namespace went before them, e.g. in a crash
    for entry in netns.list_etc(netns_prefix(name)):
        if lab_of_netns(entry) == name and netns.remove_etc(entry):
            removed.append(f"/etc/netns/{entry}")
    d = lab_dir(name)
    if d.exists():
        shutil.rmtree(d, ignore_errors=True)
        removed.append(f"state {d}")
    return removed


def lab_namespaces(name: str) -> list[str]:
    """Every namespace of lab `name`, matched by the naming grammar (topology.py), never by a bare prefix:
    lab "a" does not own "pn-a-b.node1" nor "pn-a-b.ul"."""
    return [ns for ns in netns.list_names(netns_prefix(name)) if lab_of_netns(ns) == name]


def _recorded_namespaces(st: LabState) -> set[str]:
    """The exact names the lab's own records hold (its spec's nodes, its pods' records): what a lab made by
    an older podnet, whose names predate the grammar (pn-<lab>-node1, pn-<lab>-ul), is removed by."""
    import json

    names = {n.netns for n in st.spec.node_specs}
    if any("." not in n for n in names):  # the older grammar: its underlay was pn-<lab>-ul
        names.add(f"pn-{st.spec.name}-ul")
    for f in sorted((st.dir / "pods").glob("*.json")) if (st.dir / "pods").exists() else []:
        try:
            names.add(str(json.loads(f.read_text())["netns"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return {n for n in names if netns.exists(n)}


def pod_procs(st: LabState) -> list[procs.ProcRecord]:
    import json

    out = []
    for f in sorted((st.dir / "pods").glob("*.json")) if (st.dir / "pods").exists() else []:
        try:
            out.append(procs.ProcRecord(**json.loads(f.read_text())["proc"]))
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return out


def _kill_netns_pids(ns: str) -> None:
    """Processes still inside a namespace we are about to delete (e.g. a pod server whose record was lost).

    `ip netns pids` names them exactly by namespace, so this never touches anything outside the lab.
    """
    import os
    import signal
    import subprocess

    r = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True)
    for tok in r.stdout.split():
        try:
            os.kill(int(tok), signal.SIGKILL)
        except (ValueError, ProcessLookupError):
            pass
