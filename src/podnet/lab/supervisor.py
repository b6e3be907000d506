"""The lab's supervisor: starts each node's agents inside its namespace and restarts them when they die.

It runs detached from the terminal that ran `lab up` and touches no namespace itself: every child is
`ip netns exec <node-netns> podnet ...`. Children are recorded (pid + start time) in procs.json after every
(re)start, so `lab down` can stop them even if the supervisor itself was killed.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from podnet.lab import procs
from podnet.lab.state import LabState
from podnet.lab.topology import NodeSpec
from podnet.net import netns

log = logging.getLogger("podnet.lab.supervisor")

RESTART_BACKOFF = (0.2, 0.5, 1.0, 2.0, 5.0)


def podnet_exe() -> str:
    """The podnet executable next to this interpreter (the venv's), so children run the same code."""
    exe = Path(sys.executable).with_name("podnet")
    return str(exe) if exe.exists() else "podnet"


@dataclass
class Child:
    role: str  # "node1/overlay"
    argv: list[str]
    rec: procs.ProcRecord | None = None
    restarts: int = 0
    next_start: float = 0.0


def node_children(st: LabState, node: NodeSpec) -> list[Child]:
    exe = podnet_exe()
    base = [exe, "--store", st.store_url]
    nd = st.node_dir(node.name)
    overlay = [*base, "overlay", "run", "--node", node.name, "--iface", node.iface,
               "--public-ip", node.underlay_ip, "--ip-masq", "--subnet-file", str(st.subnet_file(node.name))]
    proxy = [*base, "proxy", "run", "--node", node.name, "--mode", st.spec.proxy_mode,
             "--config", str(nd / "kube-proxy.yaml")]
    agent = [*base, "lab", "agent", "--name", st.spec.name, "--node", node.name]
    return [
        Child(f"{node.name}/overlay", netns.exec_argv(node.netns, overlay)),
        Child(f"{node.name}/proxy", netns.exec_argv(node.netns, proxy)),
        # The agent stays in the root namespaces (it changes nothing there): pod namespaces must be created
        # in the host's mount namespace, and `ip netns exec` would give the agent a private one, hiding them
        # from every other process. It enters the node namespace only to run the CNI plugins.
        Child(f"{node.name}/agent", agent),
    ]


class Supervisor:
    def __init__(self, st: LabState) -> None:
        self.st = st
        self.children = [c for n in st.spec.node_specs for c in node_children(st, n)]
        from podnet.lab import apiserver

        self.children.append(Child("apiserver", apiserver.argv(st, podnet_exe())))
        self.stopping = threading.Event()

    def start_child(self, c: Child) -> None:
        c.rec = procs.spawn(c.argv, self.st.log(c.role))
        self.st.procs[c.role] = c.rec
        self.st.save_procs()
        log.info("started %s pid %d", c.role, c.rec.pid)

    def run(self) -> None:
        for c in self.children:
            self.start_child(c)
        while not self.stopping.wait(0.1):
            now = time.monotonic()
            for c in self.children:
                if c.rec is not None and procs.alive(c.rec):
                    continue
                if c.rec is not None:
                    procs._reap(c.rec.pid)
                    log.warning("%s (pid %d) exited; restarting", c.role, c.rec.pid)
                    c.next_start = now + RESTART_BACKOFF[min(c.restarts, len(RESTART_BACKOFF) - 1)]
                    c.restarts += 1
                    c.rec = None
                if now >= c.next_start:
                    self.start_child(c)
        for c in self.children:
            if c.rec is not None:
                procs.stop(c.rec)

    def stop(self, *_: object) -> None:
        self.stopping.set()


def main(name: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    st = LabState.load(name)
    if st is None:
        log.error("lab %s: no state (was `podnet lab up` run?)", name)
        return 1
    sup = Supervisor(st)
    signal.signal(signal.SIGTERM, sup.stop)
    signal.signal(signal.SIGINT, sup.stop)
    from podnet.lab import controller

    ctl = controller.LabController(st)
    threading.Thread(target=ctl.run, args=(sup.stopping,), daemon=True, name="lab-controller").start()
    sup.run()
    return 0
