"""LoadBalancer benchmark, in one 2-node lab (iptables mode), from a client on the underlay:

  new address  a LoadBalancer Service is stored -> its address is in status (the control plane's
               allocation) -> the first HTTP answer on it from the underlay (allocation + the speaker's
               election and ARP + the proxies' rules), over --rounds Services;
               baseline: a ClusterIP Service stored at the same moment -> its first answer from node1,
               i.e. the proxies' rules alone, the floor any Service pays.
  failover     an externalTrafficPolicy Local Service's only pod moves to the other node -> the address
               answers from the new pod (the speakers re-elect, gratuitous ARP);
               baseline: the same move -> the new pod is Running and Ready (what the failover waits for).

Answers are detected by a poller inside the namespace (one process, a fresh TCP connection every 5 ms),
so no process start is counted. CLOCK_MONOTONIC is system-wide, so its times and ours compare.

Run: `.venv/bin/python benchmarks/loadbalancer.py [--rounds 10] [--moves 3]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

from rich.console import Console
from rich.table import Table

from podnet.api.loader import load_objects
from podnet.controllers.apply import apply_objects
from podnet.lab import cluster, topology
from podnet.lab.controller import deployment_pods
from podnet.lab.state import lab_dir
from podnet.net import netns
from podnet.store import keys, open_store

LAB = "blb"
POLLER = r"""
import socket, sys, time
for line in sys.stdin:
    ip, port, expect = line.split()
    deadline = time.monotonic() + 30
    ok = False
    while time.monotonic() < deadline and not ok:
        try:
            with socket.create_connection((ip, int(port)), timeout=0.2) as s:
                s.sendall(b"GET / HTTP/1.0\r\n\r\n")
                s.settimeout(0.5)
                ok = expect.encode() in s.recv(4096)
        except OSError:
            pass
        if not ok:
            time.sleep(0.005)
    print(f"{time.monotonic():.6f} {int(ok)}", flush=True)
"""

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web, ports: [{containerPort: 80}]}]}
"""
ONE = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: one}
spec:
  replicas: 1
  selector: {matchLabels: {app: one}}
  template:
    metadata: {labels: {app: one}}
    spec: {nodeName: NODE, containers: [{name: web, ports: [{containerPort: 80}]}]}
---
apiVersion: v1
kind: Service
metadata: {name: local}
spec: {type: LoadBalancer, externalTrafficPolicy: Local, selector: {app: one}, ports: [{port: 80}]}
"""


def svc(name: str, type_: str) -> str:
    return (f"apiVersion: v1\nkind: Service\nmetadata: {{name: {name}}}\n"
            f"spec: {{type: {type_}, selector: {{app: web}}, ports: [{{port: 80}}]}}\n")


class Poller:
    def __init__(self, ns: str) -> None:
        self.p = subprocess.Popen(netns.exec_argv(ns, [sys.executable, "-c", POLLER]), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, text=True)

    def start(self, ip: str, port: int, expect: str) -> None:
        assert self.p.stdin is not None
        self.p.stdin.write(f"{ip} {port} {expect}\n")
        self.p.stdin.flush()

    def done(self) -> float:
        assert self.p.stdout is not None
        t, ok = self.p.stdout.readline().split()
        if ok != "1":
            raise SystemExit("no answer within 30 s")
        return float(t)

    def close(self) -> None:
        assert self.p.stdin is not None
        self.p.stdin.close()
        self.p.wait(timeout=10)


def wait(cond, timeout: float = 60):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = cond()
        if got:
            return got
        time.sleep(0.005)
    raise SystemExit("timed out")


def obj(store, kind: str, name: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    kv = store.get(keys.resource(kind, "default", name))
    return json.loads(kv.value) if kv else {}


def ready_pod(store, prefix: str, node: str) -> bool:  # type: ignore[no-untyped-def]
    for kv in store.list(keys.kind_prefix("Pod", "default")).items:
        p = json.loads(kv.value)
        if (p["metadata"]["name"].startswith(prefix) and p["spec"].get("nodeName") == node
                and p.get("status", {}).get("phase") == "Running"
                and any(c.get("type") == "Ready" and c.get("status") == "True"
                        for c in p["status"].get("conditions", []))):
            return True
    return False


def ms(xs: list[float]) -> str:
    return f"{statistics.median(xs) * 1000:.0f} / {max(xs) * 1000:.0f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--moves", type=int, default=3)
    args = ap.parse_args()
    url = f"sqlite:///{lab_dir(LAB)}/state.db"
    spec = topology.build(LAB, 2)
    cluster.up(spec, url)
    store = open_store(url)
    under, node1 = Poller(spec.underlay_netns), Poller(spec.node_specs[0].netns)
    try:
        apply_objects(store, load_objects(APP))
        wait(lambda: ready_pod(store, "web-", "node1") and ready_pod(store, "web-", "node2"))
        status, answer, base = [], [], []
        for i in range(args.rounds):
            t0 = time.monotonic()
            apply_objects(store, load_objects(svc(f"lb{i}", "LoadBalancer") + "---\n" + svc(f"ci{i}", "ClusterIP")))
            cip = obj(store, "Service", f"ci{i}")["spec"]["clusterIP"]
            node1.start(cip, 80, "processed")
            ing = wait(lambda i=i: (obj(store, "Service", f"lb{i}").get("status") or {}).get("loadBalancer"))
            t_status = time.monotonic()
            under.start(ing["ingress"][0]["ip"], 80, "processed")
            base.append(node1.done() - t0)
            answer.append(under.done() - t0)
            status.append(t_status - t0)

        apply_objects(store, load_objects(ONE.replace("NODE", "node1")))
        wait(lambda: ready_pod(store, "one-", "node1"))
        lb_ip = wait(lambda: (obj(store, "Service", "local").get("status") or {}).get("loadBalancer"))["ingress"][0]["ip"]
        under.start(lb_ip, 80, "one-")
        under.done()
        fail, pod = [], []
        where = "node1"
        for _ in range(args.moves):
            where = "node2" if where == "node1" else "node1"
            objs = load_objects(ONE.replace("NODE", where))
            (new_pod,) = deployment_pods(objs[0])  # type: ignore[arg-type]
            t0 = time.monotonic()
            apply_objects(store, objs)
            wait(lambda w=where, n=new_pod.name: ready_pod(store, n, w))
            pod.append(time.monotonic() - t0)
            under.start(lb_ip, 80, new_pod.name)  # an answer from the new pod itself
            fail.append(under.done() - t0)
    finally:
        for p in (under, node1):
            p.close()
        store.close()
        cluster.down(LAB)

    t = Table(title=f"LoadBalancer in the lab ({args.rounds} new Services, {args.moves} moves; median / max ms)")
    for c in ("measure", "ms", "baseline", "baseline ms", "ratio"):
        t.add_column(c)
    t.add_row("stored -> address in status", ms(status), "", "", "")
    t.add_row("stored -> first answer on the address (underlay)", ms(answer),
              "stored -> first answer on a ClusterIP (node1)", ms(base),
              f"{statistics.median(answer) / statistics.median(base):.2f}x")
    t.add_row("pod moved -> the address answers from it", ms(fail), "pod moved -> new pod Ready", ms(pod),
              f"{statistics.median(fail) / statistics.median(pod):.2f}x")
    Console().print(t)


if __name__ == "__main__":
    main()
