"""A 3-node lab per overlay backend: pod-to-pod across every pair of nodes and Service traffic from every
node, and endpoints/rules following pods as they come and go."""

from __future__ import annotations

import json
import time

import pytest

pytestmark = pytest.mark.integration

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers: [{name: web, ports: [{containerPort: 80, name: http}]}]
---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def _pods(lab) -> list[dict]:
    return json.loads(lab.podnet("get", "pods", "-o", "json").stdout)["items"]


def _ready(p: dict) -> bool:
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what} (last: {last!r})")


def _ready_pods(lab, n: int) -> list[dict]:
    return wait_for(lambda: (lambda ps: ps if len(ps) == n and all(_ready(p) for p in ps) else None)(
        [p for p in _pods(lab) if p["metadata"]["name"].startswith("web-")]), 30, f"{n} ready web pods")


def _dnat_targets(lab, node: str) -> set[str]:
    out = lab.exec(node, "iptables-save", "-t", "nat").stdout
    return {line.rsplit(" ", 1)[-1].split(":")[0] for line in out.splitlines()
            if "default/web" in line and "DNAT" in line}


@pytest.mark.parametrize("backend", ["vxlan", "host-gw", "udp"])
def test_three_nodes_pod_to_pod_and_service(lab_factory, backend):
    lab = lab_factory()
    lab.up("--nodes", "3", "--backend", backend)
    lab.podnet("apply", "-f", "-", input=APP)
    pods = _ready_pods(lab, 3)
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node1", "node2", "node3"]  # spread
    ips = {p["metadata"]["name"]: p["status"]["podIP"] for p in pods}
    # pod to pod, every ordered pair (each pair crosses nodes): the answer names the target pod
    for src in pods:
        for dst, ip in ips.items():
            if dst == src["metadata"]["name"]:
                continue
            r = lab.exec(f"default/{src['metadata']['name']}", "curl", "-sS", "--max-time", "3", f"http://{ip}/")
            assert dst in r.stdout, (backend, src["metadata"]["name"], dst, r.stdout, r.stderr)
    # ping across nodes too (ICMP takes the same overlay path without the proxy)
    first = pods[0]["metadata"]["name"]
    for dst, ip in ips.items():
        if dst != first:
            assert lab.exec(f"default/{first}", "ping", "-c", "1", "-W", "2", ip).returncode == 0
    # the Service from every node: answers come from pods, spread over more than one
    cip = json.loads(lab.podnet("get", "services", "web", "-o", "json").stdout)["spec"]["clusterIP"]
    for node in ("node1", "node2", "node3"):
        wait_for(lambda node=node: _dnat_targets(lab, node) == set(ips.values()), 15, f"rules on {node}")
        # one curl, 12 URLs: each is a new connection (the pods answer HTTP/1.0 and close)
        r = lab.exec(node, "curl", "-sS", "--max-time", "3", *[f"http://{cip}/"] * 12)
        seen = {name for name in ips if name in r.stdout}
        assert len(seen) >= 2, (backend, node, seen)


def test_pods_coming_and_going_update_every_node(lab_factory):
    lab = lab_factory()
    lab.up("--nodes", "3")
    lab.podnet("apply", "-f", "-", input=APP.replace("replicas: 3", "replicas: 2"))
    pods = _ready_pods(lab, 2)
    ips = {p["status"]["podIP"] for p in pods}
    for node in ("node1", "node2", "node3"):
        wait_for(lambda node=node: _dnat_targets(lab, node) == ips, 15, f"2 endpoints on {node}")

    lab.podnet("apply", "-f", "-", input=APP)  # scale to 3
    pods = _ready_pods(lab, 3)
    ips3 = {p["status"]["podIP"] for p in pods}
    assert len(ips3) == 3 and ips < ips3
    for node in ("node1", "node2", "node3"):
        wait_for(lambda node=node: _dnat_targets(lab, node) == ips3, 15, f"3 endpoints on {node}")
    eps = lab.podnet("describe", "service", "web").stdout
    assert all(f"{ip}:80" in eps for ip in ips3)

    gone = sorted(pods, key=lambda p: p["metadata"]["name"])[0]
    lab.podnet("apply", "-f", "-", input=APP.replace("replicas: 3", "replicas: 2"))  # scale back down
    remaining = {p["status"]["podIP"] for p in _ready_pods(lab, 2)}
    assert len(remaining) == 2
    for node in ("node1", "node2", "node3"):
        wait_for(lambda node=node: _dnat_targets(lab, node) == remaining, 15, f"2 endpoints again on {node}")
    # the removed pod's namespace is gone with it
    assert lab.exec(f"default/{gone['metadata']['name']}", "true").returncode != 0 or \
        gone["status"]["podIP"] in remaining
