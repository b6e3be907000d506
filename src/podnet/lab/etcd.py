"""A lab's own etcd (`lab up --store etcd`): one member inside the lab's underlay namespace.

Clients reach it through a unix socket in the lab's state dir, because the lab's processes live in
different network namespaces (nodes, the host) and a socket file is the one address all of them share.
Its peer port is on the underlay namespace's loopback, so nothing listens anywhere else.

The member is one of the supervisor's roles (supervisor.ROLES): restarted after it dies, on the same data
dir (<lab dir>/etcd/data), so the store and its revisions survive a kill -9 of etcd.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable

from podnet.errors import PodnetError
from podnet.lab.state import LabState
from podnet.net import netns
from podnet.store import StoreError, open_store

START_TIMEOUT = 15.0
SOCKET = "etcd:2379"  # etcd's unix listener takes NAME:PORT and creates that file in its working dir


def url(st: LabState) -> str:
    return f"etcd://unix://{st.dir / 'etcd' / SOCKET}"


def argv(st: LabState) -> list[str]:
    """The member's command line: same name, data dir and socket on every (re)start. Pure (no disk)."""
    exe = shutil.which("etcd")
    if exe is None:
        raise PodnetError("lab up --store etcd: the etcd binary is not installed (Debian package etcd-server)")
    d = st.dir / "etcd"
    cmd = [
        exe, "--name", "lab", "--data-dir", str(d / "data"),
        "--listen-client-urls", f"unix://{SOCKET}", "--advertise-client-urls", f"unix://{SOCKET}",
        "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "lab=http://127.0.0.1:2380", "--log-level", "warn",
        # A restarted member serves nothing until it has elected itself, which takes one to two election
        # timeouts (1 s by default: 1.3-2 s measured). A one-member cluster has no peer to miss a
        # heartbeat, so short timers risk nothing here: 0.4-0.5 s from start to the first write.
        "--heartbeat-interval", "25", "--election-timeout", "250",
    ]
    # `ip netns exec` keeps the working directory, so `cd` first through a shell-free wrapper: env -C.
    return netns.exec_argv(st.spec.underlay_netns, ["env", "-C", str(d), *cmd])


def prepare(st: LabState) -> None:
    """A member killed with -9 leaves its socket file, and the next one cannot bind (address in use).
    Called only when the member is known to be dead (the supervisor, before every start)."""
    (st.dir / "etcd").mkdir(parents=True, exist_ok=True)
    (st.dir / "etcd" / SOCKET).unlink(missing_ok=True)


def answers(store_url: str) -> bool:
    try:
        s = open_store(store_url)
        try:
            s.revision()
        finally:
            s.close()
        return True
    except StoreError:
        return False


def wait(store_url: str, alive: Callable[[], bool], timeout: float = START_TIMEOUT) -> None:
    """Until the member answers; fails early if `alive()` says whoever should start it is gone."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if answers(store_url):
            return
        if not alive():
            raise PodnetError("lab etcd: its supervisor exited before etcd answered")
        time.sleep(0.1)
    raise PodnetError(f"lab etcd did not answer within {timeout:.0f} s at {store_url}")
