"""A lab's own etcd (`lab up --store etcd`): one member inside the lab's underlay namespace.

Clients reach it through a unix socket in the lab's state dir, because the lab's processes live in
different network namespaces (nodes, the host) and a socket file is the one address all of them share.
Its peer port is on the underlay namespace's loopback, so nothing listens anywhere else.
"""

from __future__ import annotations

import shutil
import time

from podnet.errors import PodnetError
from podnet.lab import procs
from podnet.lab.state import LabState
from podnet.net import netns
from podnet.store import StoreError, open_store

START_TIMEOUT = 15.0


def start(st: LabState) -> str:
    """Start the member, wait until it answers, record it; returns the store URL."""
    exe = shutil.which("etcd")
    if exe is None:
        raise PodnetError("lab up --store etcd: the etcd binary is not installed (Debian package etcd-server)")
    d = st.dir / "etcd"
    d.mkdir(parents=True, exist_ok=True)
    sock = "etcd:2379"  # etcd's unix listener takes NAME:PORT and creates that file in its working dir
    argv = [
        exe, "--name", "lab", "--data-dir", str(d / "data"),
        "--listen-client-urls", f"unix://{sock}", "--advertise-client-urls", f"unix://{sock}",
        "--listen-peer-urls", "http://127.0.0.1:2380", "--initial-advertise-peer-urls", "http://127.0.0.1:2380",
        "--initial-cluster", "lab=http://127.0.0.1:2380", "--log-level", "warn",
    ]
    # `ip netns exec` keeps the working directory, so `cd` first through a shell-free wrapper: env -C.
    rec = procs.spawn(netns.exec_argv(st.spec.underlay_netns, ["env", "-C", str(d), *argv]), st.log("etcd"))
    st.services["etcd"] = rec
    st.save()
    url = f"etcd://unix://{d / sock}"
    deadline = time.monotonic() + START_TIMEOUT
    last: Exception | None = None
    while time.monotonic() < deadline:
        if not procs.alive(rec):
            raise PodnetError(f"lab etcd exited at start; see {st.log('etcd')}")
        try:
            s = open_store(url)
            s.revision()
            s.close()
            return url
        except StoreError as e:
            last = e
            time.sleep(0.1)
    raise PodnetError(f"lab etcd did not answer within {START_TIMEOUT:.0f} s: {last}")
