"""The lab's node agent (what the kubelet + container runtime do for networking) for one node.

For every pod bound to this node: a network namespace, CNI ADD through the same chain a runtime would use
(podnet-flannel -> podnet-bridge -> podnet-host-local, found in CNI_PATH), the pod's command started in
that namespace (default: the built-in HTTP server) with the kubelet's resolv.conf (cluster DNS first), then
status.podIP, hostIP, phase and the Ready condition written back to the store. A pod that goes away is stopped, CNI DEL is called and its namespace
removed. Each running pod is recorded in the lab's state dir, so a restarted agent adopts its pods instead
of wiring them twice, and `lab down` can stop them by pid.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from podnet.api.pod import Pod
from podnet.controllers import events
from podnet.lab import procs
from podnet.lab.loop import change_loop
from podnet.lab.resolvconf import pod_resolv_conf
from podnet.lab.state import LabState
from podnet.net import netns
from podnet.store import ConflictError, Store, StoreError, keys, open_store
from podnet.store.informer import Informer

log = logging.getLogger("podnet.lab.agent")
CNI_IFNAME = "eth0"
READY_TIMEOUT = 5.0
RESYNC = 5.0  # seconds between unasked rounds (dead pod processes are restarted)
SUPERVISOR_CHECK = 1.0  # seconds a supervisor we started has to take the lab's lock
SUPERVISOR_STAGGER = 0.5  # seconds between the agents' turns to restart a dead supervisor


def container_id(lab: str, namespace: str, name: str) -> str:
    return hashlib.sha256(f"{lab}/{namespace}/{name}".encode()).hexdigest()[:32]


class Agent:
    def __init__(self, st: LabState, node: str, store: Store, pods: Informer[Pod | None]) -> None:
        self.st = st
        self.pods = pods  # decoded once per change, shared by every round
        self.node = node
        self.spec_node = next(n for n in st.spec.node_specs if n.name == node)
        self.store = store
        self.bin_dir = str(Path(sys.executable).parent)
        self.pods_dir = st.dir / "pods"
        self.pods_dir.mkdir(parents=True, exist_ok=True)
        self.lock = threading.Lock()  # reconcile runs from the watch loop and the subnet poke

    # -- records of running pods -------------------------------------------------------------------------
    def record_path(self, namespace: str, name: str) -> Path:
        return self.pods_dir / f"{namespace}_{name}.json"

    def records(self) -> dict[str, dict[str, Any]]:
        out = {}
        for f in self.pods_dir.glob("*.json"):
            try:
                rec = json.loads(f.read_text())
            except (OSError, ValueError):
                continue
            if rec.get("node") == self.node:
                out[rec["key"]] = rec
        return out

    # -- CNI ---------------------------------------------------------------------------------------------
    def cni_config(self) -> str:
        nd = self.st.node_dir(self.node)
        return json.dumps({
            "cniVersion": "1.0.0",
            "name": "podnet",
            "type": "podnet-flannel",
            "subnetFile": str(self.st.subnet_file(self.node)),
            "dataDir": str(nd / "cni-flannel"),
            "delegate": {"type": "podnet-bridge", "hairpinMode": True, "isDefaultGateway": True},
            "ipam": {"type": "podnet-host-local", "dataDir": str(nd / "cni-ipam")},
        })

    def cni(self, command: str, cid: str, pod_ns: str | None) -> dict[str, Any]:
        env = {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "CNI_COMMAND": command,
            "CNI_CONTAINERID": cid,
            "CNI_NETNS": f"{netns.NETNS_DIR}/{pod_ns}" if pod_ns and netns.exists(pod_ns) else "",
            "CNI_IFNAME": CNI_IFNAME,
            "CNI_PATH": f"{self.bin_dir}:/usr/lib/cni",
        }
        # The plugin's host side is the node: run it there, as a runtime on that node would.
        argv = netns.exec_argv(self.spec_node.netns, [os.path.join(self.bin_dir, "podnet-flannel")])
        r = subprocess.run(argv, input=self.cni_config(),
                           capture_output=True, text=True, env=env, timeout=30)
        if r.returncode != 0:
            raise RuntimeError(f"CNI {command} failed ({r.returncode}): {r.stdout.strip()} {r.stderr.strip()}")
        return json.loads(r.stdout) if r.stdout.strip() else {}

    # -- pods --------------------------------------------------------------------------------------------
    def start_pod(self, key: str, pod: Pod) -> None:
        ns_name = self.st.spec.pod_netns(pod.namespace or "default", pod.name)
        cid = container_id(self.st.spec.name, pod.namespace or "default", pod.name)
        if netns.exists(ns_name):  # left from a crash between create and record: start clean
            self.stop_pod({"netns": ns_name, "cid": cid, "proc": None, "key": key})
        netns.create(ns_name)
        try:
            spec = self.st.spec
            netns.write_etc(ns_name, "resolv.conf", pod_resolv_conf(pod, spec.cluster_dns, spec.cluster_domain))
            try:
                result = self.cni("ADD", cid, ns_name)
            except RuntimeError as e:
                events.record(self.store, pod, "FailedCreatePodSandBox", f"Failed to create pod sandbox: {e}",
                              type="Warning", component="kubelet", host=self.node)
                raise
            ips = pod_ips(result, self.st.spec.families)
            ip = ips[0]
            argv, ports = self.pod_command(pod)
            # A workload: the default priority, not the lab daemons' (supervisor.NICE) we inherited.
            rec = procs.spawn(netns.exec_argv(ns_name, argv), self.st.log(f"pods/{pod.namespace}_{pod.name}"), nice=0)
        except BaseException:
            self.stop_pod({"netns": ns_name, "cid": cid, "proc": None, "key": key})
            raise
        name = pod.spec.containers[0].name if pod.spec.containers else pod.name
        events.record(self.store, pod, "Started", f"Started container {name}", component="kubelet", host=self.node)
        record = {"key": key, "node": self.node, "netns": ns_name, "cid": cid, "ip": ip, "ips": ips,
                  "proc": rec.to_dict(), "ports": ports}
        self.record_path(pod.namespace or "default", pod.name).write_text(json.dumps(record))
        log.info("pod %s/%s: %s on %s, pid %d", pod.namespace, pod.name, ip, ns_name, rec.pid)
        ready = self.wait_ready(ip, ports)
        self.write_status(key, ips, ready)

    def pod_command(self, pod: Pod) -> tuple[list[str], list[int]]:
        c = pod.spec.containers[0] if pod.spec.containers else None
        ports = sorted({p.container_port for cc in pod.spec.containers for p in cc.ports
                        if (p.protocol or "TCP") == "TCP" and p.container_port})
        if c is not None and c.command:
            return [*c.command, *c.args], ports
        argv = [os.path.join(self.bin_dir, "podnet"), "lab", "serve-http", "--pod", pod.name]
        for p in ports or [80]:
            argv += ["--port", str(p)]
        return argv, ports or [80]

    def wait_ready(self, ip: str, ports: list[int]) -> bool:
        """Ready once the first TCP port accepts from the node (a readiness probe); no ports: ready at once."""
        if not ports:
            return True
        probe = (
            "import socket,sys,time\n"
            f"end=time.monotonic()+{READY_TIMEOUT}\n"
            "while time.monotonic()<end:\n"
            "    try:\n"
            f"        socket.create_connection(({ip!r},{ports[0]}),timeout=0.5).close(); sys.exit(0)\n"
            "    except OSError: time.sleep(0.02)\n"
            "sys.exit(1)\n"
        )
        r = subprocess.run(netns.exec_argv(self.spec_node.netns, [sys.executable, "-c", probe]),
                           capture_output=True, timeout=READY_TIMEOUT + 5)
        return r.returncode == 0

    def write_status(self, key: str, ips: list[str], ready: bool) -> None:
        """The kubelet's status write: podIP(s) in the cluster's family order, hostIP(s) likewise."""
        host_ips = self.spec_node.internal_ips(self.st.spec.ip_family)
        for _ in range(20):
            kv = self.store.get(key)
            if kv is None:
                return
            obj = json.loads(kv.value)
            status: dict[str, object] = {"phase": "Running" if ips else "Pending", "hostIP": host_ips[0]}
            if len(host_ips) > 1:
                status["hostIPs"] = [{"ip": h} for h in host_ips]
            if ips:
                status |= {"podIP": ips[0], "podIPs": [{"ip": i} for i in ips]}
            status["conditions"] = [{"type": "Ready", "status": "True" if ready else "False"}]
            if obj.get("status") == status:
                return
            obj["status"] = status
            try:
                self.store.put(key, json.dumps(obj).encode(), if_revision=kv.mod_revision)
                return
            except ConflictError:
                continue

    def stop_pod(self, rec: dict[str, Any]) -> None:
        if rec.get("proc"):
            procs.stop(procs.ProcRecord(**rec["proc"]))
        try:
            self.cni("DEL", rec["cid"], rec["netns"])
        except Exception as e:  # DEL must not block removal; the namespace goes anyway
            log.warning("CNI DEL for %s: %s", rec["key"], e)
        netns.remove(rec["netns"])

    def reconcile(self) -> None:
        with self.lock:
            self._reconcile()

    def _reconcile(self) -> None:
        if not self.st.subnet_file(self.node).exists():
            return  # the overlay has no lease yet; CNI would fail
        # A terminal pod (Failed, Succeeded) is not started again, as a kubelet would not.
        want: dict[str, Pod] = {key: pod for key, pod in self.pods.snapshot().items()
                                if pod is not None and pod.spec.node_name == self.node and not pod.is_terminal}
        have = self.records()
        for key, rec in have.items():
            if key not in want:
                log.info("pod %s deleted: stopping it", key)
                self.stop_pod(rec)
                Path(self.pods_dir / f"{key.rsplit('/', 2)[-2]}_{key.rsplit('/', 1)[-1]}.json").unlink(missing_ok=True)
            elif not procs.alive(procs.ProcRecord(**rec["proc"])):
                log.warning("pod %s process died: restarting it", key)
                self.stop_pod(rec)
                Path(self.pods_dir / f"{key.rsplit('/', 2)[-2]}_{key.rsplit('/', 1)[-1]}.json").unlink(missing_ok=True)
                self.start_pod(key, want[key])
            else:
                pod = want[key]
                ips = rec.get("ips") or [rec["ip"]]  # records of older agents hold one address
                if pod.ips != ips or not pod.is_ready:
                    self.write_status(key, ips, self.wait_ready(rec["ip"], rec["ports"]))
        for key, pod in want.items():
            if key not in have:
                try:
                    self.start_pod(key, pod)
                except Exception as e:
                    log.error("pod %s: %s", key, e)


def pod_ips(result: dict[str, Any], families: tuple[int, ...]) -> list[str]:
    """The pod's addresses from the CNI result, one per cluster family, in the cluster's order (the
    kubelet's podIPs: the default family first). Raises RuntimeError when a family has no address."""
    got: dict[int, str] = {}
    for a in result.get("ips", []):
        ip = str(a.get("address", "")).split("/")[0]
        got.setdefault(6 if ":" in ip else 4, ip)
    missing = [f"IPv{v}" for v in families if v not in got]
    if missing:
        raise RuntimeError(f"the CNI result has no {' or '.join(missing)} address: {result.get('ips')}")
    return [got[v] for v in families]


def main(name: str, node: str, store_url: str) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    st = LabState.load(name)
    if st is None or node not in {n.name for n in st.spec.node_specs}:
        log.error("lab %s has no node %s", name, node)
        return 1
    stop = threading.Event()
    import signal

    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    store = open_store(store_url)
    changed = threading.Event()
    pods: Informer[Pod | None] = Informer(store, keys.kind_prefix("Pod"), _decode_pod,
                                           on_change=lambda *_: changed.set(), name="pods")
    pods.start()
    pods.wait_synced(30)
    agent = Agent(st, node, store, pods)
    # The subnet appears once the overlay has its lease (a file, not in the store): poll it meanwhile.
    # Every few seconds a round also runs unasked, to restart pod processes that died.
    threading.Thread(target=_poke_on_subnet, args=(agent, changed, stop), daemon=True).start()
    threading.Thread(target=_keep_supervisor, args=(st, node, stop), daemon=True, name="supervisor-check").start()
    threading.Thread(target=_heartbeat, args=(store, node, stop), daemon=True, name="node-status").start()

    def round_() -> bool:
        agent.reconcile()
        return True

    changed.set()
    change_loop(changed, round_, stop)
    pods.stop()
    return 0


def _decode_pod(value: bytes) -> Pod | None:
    return Pod.model_validate(json.loads(value))


def _keep_supervisor(st: LabState, node: str, stop: threading.Event) -> None:
    """Every agent restarts the lab's supervisor if it died (supervisor.py says why the agents do it).

    It sleeps on the supervisor's lock, which the kernel frees the instant the supervisor dies; then it
    starts one, and gives it SUPERVISOR_CHECK to take the lock before looking again. Every agent wakes at
    the same instant: the agent of the n-th node waits n x SUPERVISOR_STAGGER first, so the first node's
    supervisor usually holds the lock by then and the others start none (each start is an interpreter's
    worth of CPU, taken from the lab's users while it heals).
    """
    from podnet.lab import supervisor

    lock = supervisor.lock_path(st)
    index = next(i for i, n in enumerate(st.spec.node_specs) if n.name == node)
    while not stop.is_set():
        supervisor.wait_while_held(lock)
        if stop.wait(index * SUPERVISOR_STAGGER):
            return
        try:
            supervisor.ensure_running(st.spec.name)
        except Exception:  # a lab being torn down under us, a full disk: try again next time
            log.exception("could not check the supervisor")
        stop.wait(SUPERVISOR_CHECK)


def _heartbeat(store: Store, node: str, stop: threading.Event) -> None:
    """Post the node's status (Ready, heartbeat, nodeInfo) as a kubelet does, every HEARTBEAT seconds."""
    from podnet.lab import nodestatus

    info = nodestatus.node_info()
    while True:
        try:
            if not nodestatus.post(store, node, info):
                log.warning("node %s: no Node object to post status to", node)
        except StoreError as e:  # the store restarting: the next beat tries again
            log.warning("node %s: posting node status failed: %s", node, e)
        except Exception:
            log.exception("node %s: posting node status failed", node)
        if stop.wait(nodestatus.HEARTBEAT):
            return


def _poke_on_subnet(agent: Agent, changed: threading.Event, stop: threading.Event) -> None:
    while not agent.st.subnet_file(agent.node).exists():
        if stop.wait(0.05):
            return
    changed.set()
    while not stop.wait(RESYNC):
        changed.set()
