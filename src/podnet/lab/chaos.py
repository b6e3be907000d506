"""Chaos for a running lab: kill -9 its processes at random while a client keeps calling Services, and
measure what a user would see (failed requests) and how fast the lab converges again.

Used by tests/chaos (bounded) and benchmarks/chaos.py (longer). The victims come from the lab's own
process records (procs.json and the supervisor's record), so a role added to supervisor.ROLES (an API
server, DNS) is killed too without a change here.

- `ClientLoop`: one process inside a lab namespace (a pod's) making a new TCP connection + HTTP request to
  each target in turn, for a bounded time; it reports requests sent and failed, per target.
- `kill_and_recover`: kill -9 one role's process and, at once, create a new Service; measure how long
  after the kill the supervisor (or, for the supervisor, an agent) has a new process running, and how
  long after the kill that Service answers from the client's namespace (the lab converged: the goal is
  2 s). Both clocks start at the kill, as a user's would.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from podnet.lab import procs
from podnet.lab.state import LabState
from podnet.net import netns

SUPERVISOR = "supervisor"

CLIENT = r"""
import json, socket, sys, time
targets = [(h, int(p)) for h, p in (t.rsplit(":", 1) for t in sys.argv[1].split(","))]
end = time.monotonic() + float(sys.argv[2])
gap = float(sys.argv[3])
stats = {f"{h}:{p}": {"sent": 0, "failed": 0} for h, p in targets}
errors = []
t0 = time.monotonic()
i = 0
while time.monotonic() < end:
    host, port = targets[i % len(targets)]
    i += 1
    s = stats[f"{host}:{port}"]
    s["sent"] += 1
    try:
        c = socket.create_connection((host, port), timeout=1.0)
        c.settimeout(2.0)
        c.sendall(b"GET / HTTP/1.0\r\nHost: chaos\r\n\r\n")
        data = b""
        while True:
            b = c.recv(4096)
            if not b:
                break
            data += b
        c.close()
        if not data.startswith(b"HTTP/1."):
            raise OSError(f"bad answer {data[:40]!r}")
    except OSError as e:
        s["failed"] += 1
        if len(errors) < 50:
            errors.append([round(time.monotonic() - t0, 3), f"{host}:{port}", f"{type(e).__name__}: {e}"])
    time.sleep(gap)
print(json.dumps({"targets": stats, "errors": errors}))
"""

PROBE = r"""
import socket, sys, time
host, port, limit = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
while time.monotonic() - t0 < limit:
    try:
        c = socket.create_connection((host, port), timeout=0.3)
        c.sendall(b"GET / HTTP/1.0\r\n\r\n")
        c.settimeout(1.0)
        if c.recv(16).startswith(b"HTTP/1."):
            print(time.monotonic() - t0)
            sys.exit(0)
    except OSError:
        pass
    time.sleep(0.02)
sys.exit(1)
"""


@dataclass
class ClientResult:
    sent: int
    failed: int
    targets: dict[str, dict[str, int]]
    errors: list[list[object]]


class ClientLoop:
    """A bounded request loop inside namespace `ns`, started now, collected by result()."""

    def __init__(self, ns: str, targets: list[str], duration: float, gap: float = 0.02) -> None:
        self.started = time.monotonic()
        self.proc = subprocess.Popen(
            netns.exec_argv(ns, [sys.executable, "-c", CLIENT, ",".join(targets), str(duration), str(gap)]),
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.duration = duration

    def result(self) -> ClientResult:
        out, err = self.proc.communicate(timeout=self.duration + 60)
        if self.proc.returncode != 0:
            raise RuntimeError(f"client loop failed ({self.proc.returncode}): {err.strip()[-400:]}")
        data = json.loads(out)
        t = data["targets"]
        return ClientResult(sum(v["sent"] for v in t.values()), sum(v["failed"] for v in t.values()), t,
                            data["errors"])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


CLIENT_POD = {"apiVersion": "v1", "kind": "Pod",
              "metadata": {"name": "chaos-client", "labels": {"app": "chaos-client"}},
              "spec": {"nodeName": "node1", "containers": [{"name": "c", "command": ["sleep", "infinity"]}]}}
SELECTOR = {"app": "webapp1-clusterip"}  # the examples' pods, selected by the Services chaos creates


@dataclass
class Workload:
    client_ns: str  # the client pod's namespace (on node1)
    targets: list[str]  # host:port: the examples' ClusterIP, and their NodePort on node2's address


def start_workload(name: str, timeout: float = 60.0) -> Workload:
    """Apply the examples (2 pods, a ClusterIP and a NodePort Service) and a client pod to lab `name`,
    and wait until both paths answer from the client (so they are programmed before any kill)."""
    from podnet.api.loader import load_objects
    from podnet.controllers.apply import apply_objects
    from podnet.lab.demo import examples_dir
    from podnet.store import keys, open_store

    st = LabState.load(name)
    assert st is not None
    text = "\n---\n".join(p.read_text() for p in sorted(examples_dir().glob("*.yaml")))
    store = open_store(st.store_url)
    try:
        apply_objects(store, [*load_objects(text), *load_objects(json.dumps(CLIENT_POD))])
        svcs = {}
        for n in ("webapp1-clusterip-svc", "webapp1-nodeport-svc"):
            kv = store.get(keys.resource("Service", "default", n))
            if kv is None:
                raise RuntimeError(f"lab {name}: Service default/{n} is gone right after it was applied")
            svcs[n] = json.loads(kv.value)
    finally:
        store.close()
    cip = svcs["webapp1-clusterip-svc"]["spec"]["clusterIP"]
    node_port = svcs["webapp1-nodeport-svc"]["spec"]["ports"][0]["nodePort"]
    w = Workload(st.spec.pod_netns("default", "chaos-client"),
                 [f"{cip}:80", f"{st.spec.node_specs[-1].underlay_ip}:{node_port}"])
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if netns.exists(w.client_ns) and ClientLoop(w.client_ns, w.targets, 0.3).result().failed == 0:
            return w
        time.sleep(0.2)
    raise RuntimeError(f"lab {name}: the examples' Services did not answer from the client within {timeout:.0f} s")


def victims(name: str) -> list[str]:
    """Every lab process by role, from the lab's own records (a new role is included automatically)."""
    st = LabState.load(name)
    if st is None:
        return []
    return [SUPERVISOR, *sorted(st.procs)]


def record(name: str, role: str) -> procs.ProcRecord | None:
    st = LabState.load(name)
    if st is None:
        return None
    return st.supervisor if role == SUPERVISOR else st.procs.get(role)


@dataclass
class Kill:
    role: str  # as recorded: "node1/proxy", "etcd", "supervisor"
    pid: int
    new_pid: int | None = None
    back_after: float | None = None  # seconds from the kill until the role ran again
    converged_after: float | None = None  # seconds from the kill until a Service created after it answered
    notes: list[str] = field(default_factory=list)

    @property
    def kind(self) -> str:
        """The role without its node ("proxy" for "node1/proxy"): what a per-role summary groups by."""
        return self.role.rsplit("/", 1)[-1]


def kill_and_recover(name: str, role: str, *, client_ns: str, index: int, bound: float = 30.0,
                     selector: dict[str, str] | None = None, port: int = 80) -> Kill:
    """kill -9 `role`, then at once create a Service and time it until it answers from client_ns, while
    a second thread times the role's successor. Both from the kill."""
    old = record(name, role)
    if old is None or not procs.alive(old):
        raise RuntimeError(f"lab {name}: {role} is not running before the kill")
    os.kill(old.pid, signal.SIGKILL)
    killed = time.monotonic()
    k = Kill(role, old.pid)

    def successor() -> None:
        while time.monotonic() - killed < bound:
            rec = record(name, role)
            if rec is not None and rec.pid != old.pid and procs.alive(rec):
                k.new_pid, k.back_after = rec.pid, time.monotonic() - killed
                return
            time.sleep(0.01)

    waiter = threading.Thread(target=successor, daemon=True)
    waiter.start()
    k.converged_after = new_service_answers(name, client_ns, selector or SELECTOR, port, f"chaos-{index}", bound,
                                            since=killed)
    waiter.join(bound)
    return k


def new_service_answers(name: str, client_ns: str, selector: dict[str, str], port: int, svc: str,
                        bound: float, *, since: float | None = None) -> float | None:
    """Create Service `svc`, return seconds until its ClusterIP answers from client_ns (None: not within
    bound), then delete it. The clock starts at `since` (a kill), else before the write, as a user's."""
    from podnet.api.loader import load_objects
    from podnet.controllers.apply import apply_objects, delete_objects
    from podnet.store import StoreError, keys, open_store

    st = LabState.load(name)
    assert st is not None
    doc = json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": svc},
                      "spec": {"selector": selector, "ports": [{"port": port}]}})
    t0 = since if since is not None else time.monotonic()
    cip = None
    while cip is None and time.monotonic() - t0 < bound:
        try:  # the store itself may be the process just killed: retry until it answers
            store = open_store(st.store_url)
            try:
                apply_objects(store, load_objects(doc))
                kv = store.get(keys.resource("Service", "default", svc))
                cip = json.loads(kv.value)["spec"]["clusterIP"] if kv else None
            finally:
                store.close()
        except StoreError:
            time.sleep(0.1)
    if cip is None:
        return None
    left = max(0.5, bound - (time.monotonic() - t0))
    r = subprocess.run(netns.exec_argv(client_ns, [sys.executable, "-c", PROBE, cip, str(port), str(left)]),
                       capture_output=True, text=True, timeout=left + 30)
    took = time.monotonic() - t0 if r.returncode == 0 else None
    for _ in range(100):
        try:
            store = open_store(st.store_url)
            try:
                delete_objects(store, [("Service", "default", svc)], ignore_not_found=True)
            finally:
                store.close()
            break
        except StoreError:
            time.sleep(0.1)
    return took


@dataclass
class Run:
    """What a sequence of kills (or of no-kill baseline steps) did to the client and the lab."""

    kills: list[Kill] = field(default_factory=list)
    sent: int = 0
    failed: int = 0
    errors: list[list[object]] = field(default_factory=list)
    seen: list[procs.ProcRecord] = field(default_factory=list)  # every record killed (for leak checks)

    @property
    def survived(self) -> int:
        return sum(k.back_after is not None and k.converged_after is not None for k in self.kills)

    @property
    def worst(self) -> float:
        return max((k.converged_after if k.converged_after is not None else float("inf") for k in self.kills),
                   default=0.0)


def run(name: str, w: Workload, roles: list[str | None], *, bound: float = 30.0, window: float = 2.5,
        first_index: int = 0) -> Run:
    """For each role: a client loop of `window` seconds, with that role killed 0.3 s into it (None: no
    kill, only the new-Service timing, which is the baseline)."""
    out = Run()
    for i, role in enumerate(roles, start=first_index):
        loop = ClientLoop(w.client_ns, w.targets, duration=window)
        time.sleep(0.3)
        if role is None:
            k = Kill("(none)", 0, back_after=0.0)
            k.converged_after = new_service_answers(name, w.client_ns, SELECTOR, 80, f"chaos-{i}", bound)
        else:
            rec = record(name, role)
            if rec is not None:
                out.seen.append(rec)
            k = kill_and_recover(name, role, client_ns=w.client_ns, index=i, bound=bound)
        r = loop.result()
        out.kills.append(k)
        out.sent += r.sent
        out.failed += r.failed
        out.errors += [[k.role, *e] for e in r.errors]
    return out
