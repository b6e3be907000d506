"""The lab's supervisor: runs every lab process (the roles below) and restarts each one when it dies.

Children are `podnet ...` commands, most of them inside a node namespace (`ip netns exec`); the supervisor
itself touches no namespace. Each child is recorded (pid + start time) in procs.json after every
(re)start, so `lab down` can stop them even if the supervisor itself was killed.

What runs is one table, ROLES: a role is lab-wide (the store, the control plane, the API server) or per
node (overlay, proxy, cluster DNS, agent). Adding a process to the lab is one more row.

Nothing here is a single point of failure:

- The control plane (scheduler, Deployment and EndpointSlice controllers) is a child like any other,
  not a thread of the supervisor, so a dead supervisor leaves it running, and a dead control plane is
  restarted like a dead proxy.
- The supervisor comes back by itself. Every node agent waits on the lab's lock (supervisor.lock, an
  flock the supervisor holds and the kernel drops the moment its holder dies: `wait_while_held`) and
  starts a supervisor when it is free (`ensure_running`). We chose the agents over a separate watchdog process because a
  watchdog would itself need watching (kill -9 of the watchdog, then of the supervisor, and nothing is
  left to heal), while there are as many agents as nodes, the supervisor restarts any of them that dies,
  and an agent already runs for the lab's whole life. Starting twice is harmless: a second supervisor
  finds the lock taken and exits at once.
- A restarted supervisor adopts the children that are still alive (same argv, pid and start time in
  procs.json) instead of starting them twice; only dead ones are started again.
- `lab down` writes a stop marker first (teardown.py): no supervisor starts, or keeps running, once
  it exists.

How fast a dead child comes back (a Service created right after a kill must work within 2 s): the
supervisor does not poll its children. It holds a pidfd of each (pidfd_open(2) works for any process,
also children a previous supervisor started and this one only adopted, which waitpid cannot wait for)
and sleeps in select() on them; a child's death wakes it at once. The first restart is immediate; only
a child that keeps dying is restarted with a growing pause (RESTART_BACKOFF), and one that ran for
STABLE seconds starts over.

What a restart then costs is CPU: a proxy's interpreter, imports and first full sync take about half a
second of it. On a busy machine (tests, other labs) a process at the default priority waits its turn
for most of that: 2.5-5 s measured at a load of 10-15 on two cores. So the lab's own processes run at
NICE (set on the supervisor and on each child it starts; what they run inherits it), the way a node
reserves CPU for its system daemons (kubelet's --system-reserved / --kube-reserved). Pods are
workloads: the agent starts them at the default priority.
"""

from __future__ import annotations

import fcntl
import functools
import logging
import os
import selectors
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from podnet.lab import procs
from podnet.lab.state import LabState
from podnet.lab.topology import NodeSpec
from podnet.net import netns

log = logging.getLogger("podnet.lab.supervisor")

RESTART_BACKOFF = (0.0, 0.5, 1.0, 2.0, 5.0)  # before the 1st, 2nd, ... restart of a child that keeps dying
STABLE = 10.0  # a child that ran this long starts its backoff over at the next death
IDLE_CHECK = 0.5  # seconds between looks at the lab's markers (registered, stopping) when nothing dies
LOCK_WAIT = 1.0  # how long a starting supervisor retries a lock that an agent's probe holds for an instant
NICE = -10  # the lab's processes (see above); pods go back to 0 (agent.py)
LOCK = "supervisor.lock"
RECORD = "supervisor.json"
STOP_MARKER = "stopping"
REGISTERED = "registered"  # written by `lab up` once the store holds the lab's nodes and net-conf


def podnet_exe() -> str:
    """The podnet executable next to this interpreter (the venv's), so children run the same code."""
    exe = Path(sys.executable).with_name("podnet")
    return str(exe) if exe.exists() else "podnet"


# ---- the roles -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Role:
    """One kind of lab process. argv(st, node) builds its command line (node is None for lab-wide roles)."""

    name: str
    argv: Callable[[LabState, NodeSpec | None], list[str]]
    per_node: bool = False
    wanted: Callable[[LabState], bool] = lambda st: True
    # Started only once the lab is registered in the store (its own store comes first, before that).
    needs_registration: bool = True
    stop_last: bool = False  # the store: everyone else flushes to it on exit
    # Run just before each (re)start, e.g. to remove what a killed predecessor left (a socket file).
    prepare: Callable[[LabState], None] | None = None
    # For a per-node role: the nodes it runs on (default: every node).
    nodes: Callable[[LabState], list[NodeSpec]] | None = None


def _base(st: LabState) -> list[str]:
    return [podnet_exe(), "--store", st.store_url]


def _etcd(st: LabState, node: NodeSpec | None) -> list[str]:
    from podnet.lab import etcd

    return etcd.argv(st)


def _etcd_prepare(st: LabState) -> None:
    from podnet.lab import etcd

    etcd.prepare(st)


def _controlplane(st: LabState, node: NodeSpec | None) -> list[str]:
    return [*_base(st), "lab", "controller", "--name", st.spec.name]


def _has_apiserver(st: LabState) -> bool:
    from podnet.lab import apiserver

    return apiserver.port_file(st).exists()


def _apiserver(st: LabState, node: NodeSpec | None) -> list[str]:
    from podnet.lab import apiserver

    return apiserver.argv(st, podnet_exe())


def _kube_flags(st: LabState) -> list[str]:
    """--source kube labs: the node daemons watch the lab's API server (its underlay address)."""
    from podnet.lab import apiserver

    return ["--kubeconfig", str(apiserver.in_lab_kubeconfig_path(st))]


def _overlay(st: LabState, node: NodeSpec | None) -> list[str]:
    assert node is not None
    kube = ["--kube-subnet-mgr", "--net-config-path", str(st.dir / "net-conf.json"), *_kube_flags(st)] \
        if st.spec.source == "kube" else []
    v6 = ["--public-ipv6", node.underlay_ip6] if node.underlay_ip6 else []
    return netns.exec_argv(node.netns, [
        *_base(st), "overlay", "run", "--node", node.name, "--iface", node.iface, "--public-ip",
        node.underlay_ip, *v6, "--ip-masq", "--subnet-file", str(st.subnet_file(node.name)), *kube])


def _proxy(st: LabState, node: NodeSpec | None) -> list[str]:
    assert node is not None
    kube = _kube_flags(st) if st.spec.source == "kube" else []
    return netns.exec_argv(node.netns, [
        *_base(st), "proxy", "run", "--node", node.name, "--mode", st.spec.proxy_mode,
        "--config", str(st.node_dir(node.name) / "kube-proxy.yaml"), *kube])


def _dns(st: LabState, node: NodeSpec | None) -> list[str]:
    from podnet.lab import dns

    assert node is not None
    return dns.argv(st, podnet_exe(), node)


def _speaker(st: LabState, node: NodeSpec | None) -> list[str]:
    assert node is not None
    # In the node's namespace: its packet socket must see the node's underlay interface.
    return netns.exec_argv(node.netns, [*_base(st), "lab", "speaker", "--name", st.spec.name, "--node", node.name])


def _agent(st: LabState, node: NodeSpec | None) -> list[str]:
    assert node is not None
    # The agent stays in the root namespaces (it changes nothing there): pod namespaces must be created
    # in the host's mount namespace, and `ip netns exec` would give the agent a private one, hiding them
    # from every other process. It enters the node namespace only to run the CNI plugins.
    return [*_base(st), "lab", "agent", "--name", st.spec.name, "--node", node.name]


ROLES: tuple[Role, ...] = (
    Role("etcd", _etcd, wanted=lambda st: st.spec.store == "etcd", needs_registration=False, stop_last=True,
         prepare=_etcd_prepare),
    Role("controlplane", _controlplane),
    # `lab up` chooses the server's port and makes its certificates first (lab/apiserver.py prepare).
    Role("apiserver", _apiserver, wanted=lambda st: _has_apiserver(st)),
    Role("overlay", _overlay, per_node=True),
    Role("proxy", _proxy, per_node=True),
    # cluster DNS behind kube-dns (lab/dns.py): on the first nodes, as CoreDNS's two replicas
    Role("dns", _dns, per_node=True, nodes=lambda st: st.spec.dns_nodes),
    # MetalLB's speaker (layer 2): only where the lab has a LoadBalancer pool.
    Role("speaker", _speaker, per_node=True, wanted=lambda st: bool(st.spec.lb_addresses())),
    Role("agent", _agent, per_node=True),
)


@dataclass
class Child:
    role: str  # "node1/overlay", "controlplane"
    argv: list[str]
    needs_registration: bool = True
    stop_last: bool = False
    prepare: Callable[[], None] | None = None
    rec: procs.ProcRecord | None = None
    restarts: int = 0
    next_start: float = 0.0
    started: float = 0.0
    pidfd: int | None = None  # readable once rec's process has exited


def children(st: LabState) -> list[Child]:
    """Every process the lab runs, in start order."""
    out = []
    for role in ROLES:
        if not role.wanted(st):
            continue
        nodes = (role.nodes(st) if role.nodes is not None else st.spec.node_specs) if role.per_node else [None]
        for node in nodes:
            name = f"{node.name}/{role.name}" if node is not None else role.name
            prep = functools.partial(role.prepare, st) if role.prepare is not None else None
            out.append(Child(name, role.argv(st, node), role.needs_registration, role.stop_last, prep))
    return out


def stop_rank(role: str) -> int:
    """Teardown order of a recorded role: the store after everything that writes to it."""
    last = {r.name for r in ROLES if r.stop_last}
    return 1 if role.rsplit("/", 1)[-1] in last else 0


# ---- the supervisor --------------------------------------------------------------------------------------

class Supervisor:
    def __init__(self, st: LabState) -> None:
        self.st = st
        self.children = children(st)
        self.stopping = threading.Event()
        self.selector = selectors.DefaultSelector()
        self._wake_r, self._wake_w = os.pipe()  # stop() writes here: a signal handler cannot end select()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector.register(self._wake_r, selectors.EVENT_READ)

    def _watch(self, c: Child) -> None:
        """Be woken when c's process exits (its pidfd becomes readable)."""
        self._unwatch(c)
        assert c.rec is not None
        try:
            c.pidfd = os.pidfd_open(c.rec.pid)
        except (ProcessLookupError, OSError):  # already gone: the next tick sees it dead
            return
        self.selector.register(c.pidfd, selectors.EVENT_READ, c)

    def _unwatch(self, c: Child) -> None:
        if c.pidfd is not None:
            self.selector.unregister(c.pidfd)
            os.close(c.pidfd)
            c.pidfd = None

    def start_child(self, c: Child) -> None:
        if c.prepare is not None:
            c.prepare()
        c.rec = procs.spawn(c.argv, self.st.log(c.role), nice=NICE)
        c.started = time.monotonic()
        self._watch(c)
        self.st.procs[c.role] = c.rec
        self.st.save_procs()
        log.info("started %s pid %d", c.role, c.rec.pid)

    def adopt(self) -> None:
        """Children a previous supervisor started that are still alive are kept, not started twice."""
        for c in self.children:
            rec = self.st.procs.get(c.role)
            if rec is not None and rec.argv == c.argv and procs.alive(rec):
                c.rec = rec
                c.started = time.monotonic()
                self._watch(c)
                log.info("adopted %s pid %d", c.role, rec.pid)
        self.st.procs = {c.role: c.rec for c in self.children if c.rec is not None}
        self.st.save_procs()

    def tick(self) -> None:
        now = time.monotonic()
        registered = (self.st.dir / REGISTERED).exists()
        for c in self.children:
            if c.rec is not None and procs.alive(c.rec):
                continue
            if c.needs_registration and not registered:
                continue
            if c.rec is not None:
                self._unwatch(c)
                procs._reap(c.rec.pid)
                log.warning("%s (pid %d) exited; restarting", c.role, c.rec.pid)
                if now - c.started > STABLE:
                    c.restarts = 0
                c.next_start = now + RESTART_BACKOFF[min(c.restarts, len(RESTART_BACKOFF) - 1)]
                c.restarts += 1
                c.rec = None
            if now >= c.next_start:
                self.start_child(c)

    def timeout(self) -> float:
        """How long run() may sleep when no child dies: until the next delayed restart, or IDLE_CHECK
        (a shorter turn until the lab is registered, when the node processes are due)."""
        now = time.monotonic()
        wait = IDLE_CHECK if (self.st.dir / REGISTERED).exists() else 0.05
        for c in self.children:
            if c.rec is None and c.next_start > now:
                wait = min(wait, c.next_start - now)
        return max(wait, 0.0)

    def run(self) -> None:
        self.adopt()
        while not self.stopping.is_set():
            if (self.st.dir / STOP_MARKER).exists():
                break
            self.tick()
            for key, _ in self.selector.select(self.timeout()):
                if key.fd == self._wake_r:
                    try:
                        os.read(self._wake_r, 64)
                    except BlockingIOError:
                        pass
        self.stop_children()

    def stop_children(self) -> None:
        # Everyone at once, then the store: agents flush to it on exit.
        for last in (False, True):
            batch = [c for c in self.children if c.rec is not None and c.stop_last == last]
            for c in batch:
                self._unwatch(c)
            procs.stop_all([c.rec for c in batch if c.rec is not None])

    def stop(self, *_: object) -> None:
        self.stopping.set()
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # already woken
            pass


def _try_lock(path: Path) -> int | None:
    """An exclusive flock on path, or None if someone holds it. The kernel drops it when we die."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _take_lock(path: Path, wait: float = LOCK_WAIT) -> int | None:
    """The supervisor's lock. An agent's `running()` probe holds it for an instant, and agents woken by
    `wait_while_held` hold it shared for another: retry a moment before concluding that a live
    supervisor has it."""
    deadline = time.monotonic() + wait
    while True:
        fd = _try_lock(path)
        if fd is not None or time.monotonic() >= deadline:
            return fd
        time.sleep(0.01)


def wait_while_held(path: Path) -> None:
    """Block while a supervisor holds the lock at path; return at once if none does (or no lab dir).

    A shared flock waits for the holder of the exclusive one, and the kernel lets it through the
    instant that holder dies: no polling. Released at once, so a supervisor starting next can take it.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
    finally:
        os.close(fd)  # drops the lock


def lock_path(st: LabState) -> Path:
    return st.dir / LOCK


def running(st: LabState) -> bool:
    """Whether a live supervisor holds the lab's lock."""
    if not st.dir.exists():
        return False
    fd = _try_lock(st.dir / LOCK)
    if fd is None:
        return True
    os.close(fd)
    return False


def ensure_running(name: str) -> procs.ProcRecord | None:
    """Start the lab's supervisor if none runs (and the lab is not being torn down). Returns the new one.

    Called by every node agent, about once a second: this is how a killed supervisor comes back.
    """
    st = LabState.load(name)
    if st is None or (st.dir / STOP_MARKER).exists() or running(st):
        return None
    rec = procs.spawn([podnet_exe(), "lab", "supervise", "--name", name], st.log("supervisor"), nice=NICE)
    # Our child until it exits (only if it lost a race for the lock): reap it so no zombie stays.
    threading.Thread(target=procs.wait, args=(rec.pid,), daemon=True).start()
    log.warning("lab %s had no supervisor: started one (pid %d)", name, rec.pid)
    return rec


def main(name: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    st = LabState.load(name)
    if st is None:
        log.error("lab %s: no state (was `podnet lab up` run?)", name)
        return 1
    lock = _take_lock(st.dir / LOCK)
    if lock is None:
        log.info("lab %s already has a supervisor; exiting", name)
        return 0
    # Record ourselves before looking for the stop marker: teardown writes the marker, then reads this
    # record, so either we see the marker and leave, or teardown sees us and stops us.
    me = procs.ProcRecord(os.getpid(), procs.start_time_of(os.getpid()) or 0, list(sys.argv), str(st.log("supervisor")))
    st.save_supervisor(me)
    if (st.dir / STOP_MARKER).exists():
        return 0
    procs.set_nice(0, NICE)
    sup = Supervisor(st)
    signal.signal(signal.SIGTERM, sup.stop)
    signal.signal(signal.SIGINT, sup.stop)
    sup.run()
    return 0
