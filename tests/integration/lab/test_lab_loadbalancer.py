"""LoadBalancer Services in a 2-node lab, per proxy mode, seen from a client on the underlay that is no
node and no pod (the underlay's own namespace, `podnet lab exec underlay`):

- an address from the lab's pool lands in status.loadBalancer.ingress (EXTERNAL-IP) and answers there, as
  MetalLB layer 2 gives it: the speakers answer ARP for it from one node;
- loadBalancerSourceRanges: a second source address of that same client, outside the range, is refused
  by the one Service that has the range and still answered by the one that has none;
- externalTrafficPolicy Local: the healthCheckNodePort answers 200 (kube-proxy's JSON) on the node with
  the endpoint and 503 on the other, follows the endpoint when it moves and goes to 503 when it is gone,
  and the address keeps answering through the node that has the endpoint.
"""

from __future__ import annotations

import ipaddress
import json
import shutil
import subprocess

import pytest

from .test_cluster import wait_for

pytestmark = pytest.mark.integration

CLIENT_IN, CLIENT_OUT = "192.168.77.1", "192.168.77.100"  # the underlay namespace's two source addresses
NODES = {"node1": "192.168.77.11", "node2": "192.168.77.12"}

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 2
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
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
---
apiVersion: v1
kind: Service
metadata: {name: fenced}
spec:
  type: LoadBalancer
  loadBalancerSourceRanges: [192.168.77.1/32]
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""

LOCAL = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: one}
spec:
  replicas: 1
  selector: {matchLabels: {app: one}}
  template:
    metadata: {labels: {app: one}}
    spec:
      nodeName: NODE
      containers: [{name: web, ports: [{containerPort: 80}]}]
---
apiVersion: v1
kind: Service
metadata: {name: local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: one}
  ports: [{port: 80}]
"""


def _svc(lab, name: str) -> dict:  # type: ignore[no-untyped-def, type-arg]
    return json.loads(lab.podnet("get", "svc", name, "-o", "json").stdout)


def _ingress(lab, name: str) -> str | None:  # type: ignore[no-untyped-def]
    ing = (_svc(lab, name).get("status") or {}).get("loadBalancer", {}).get("ingress") or []
    return ing[0]["ip"] if ing else None


def _curl(lab, url: str, source: str = CLIENT_IN, timeout: float = 2) -> str:  # type: ignore[no-untyped-def]
    r = lab.exec("underlay", "curl", "-sS", "--max-time", str(timeout), "--interface", source, url)
    return r.stdout if r.returncode == 0 else ""


def _health(lab, node: str, port: int) -> tuple[int, dict]:  # type: ignore[no-untyped-def, type-arg]
    r = lab.exec("underlay", "curl", "-sS", "--max-time", "2", "-w", "\n%{http_code}", f"http://{NODES[node]}:{port}/")
    body, _, code = r.stdout.rpartition("\n")
    return (int(code) if code.isdigit() else 0), (json.loads(body) if body.startswith("{") else {})


def _pod_node(lab, prefix: str) -> str | None:  # type: ignore[no-untyped-def]
    pods = json.loads(lab.podnet("get", "pods", "-o", "json").stdout)["items"]
    ready = [p for p in pods if p["metadata"]["name"].startswith(prefix)
             and any(c.get("type") == "Ready" and c.get("status") == "True"
                     for c in (p.get("status") or {}).get("conditions") or [])]
    return ready[0]["spec"]["nodeName"] if len(ready) == 1 else None


@pytest.mark.parametrize("mode", ["iptables", "nftables"])
def test_load_balancer_from_the_underlay(lab_factory, mode):
    lab = lab_factory()
    lab.up("--proxy-mode", mode)
    lab.podnet("apply", "-f", "-", input=APP)
    pool = ipaddress.ip_network("192.168.77.192/26")
    web = wait_for(lambda: _ingress(lab, "web"), 20, "an ingress IP for web")
    fenced = wait_for(lambda: _ingress(lab, "fenced"), 20, "an ingress IP for fenced")
    assert ipaddress.ip_address(web) in pool and ipaddress.ip_address(fenced) in pool and web != fenced
    table = lab.podnet("get", "svc").stdout
    assert web in table and fenced in table and "<pending>" not in table  # EXTERNAL-IP
    if shutil.which("kubectl"):  # and the real kubectl, through the lab's API server's Table
        kubeconfig = lab.podnet("lab", "kubeconfig", "--name", lab.name).stdout.strip()
        row = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "get", "svc", "web", "--no-headers"],
                             capture_output=True, text=True, timeout=30).stdout.split()
        assert row[1:4] == ["LoadBalancer", _svc(lab, "web")["spec"]["clusterIP"], web], row

    # An answer from a web pod on the address, from outside the cluster. The first tries may come before
    # the proxies have the address's rules (the speaker announces as soon as the status shows it).
    answer = wait_for(lambda: _curl(lab, f"http://{web}/"), 20, f"an answer on {web}")
    assert "This request was processed by host: web-" in answer
    # Which node answers ARP for it: exactly one of the two, and it is one of the nodes.
    neigh = lab.exec("underlay", "ip", "neigh", "show", web).stdout
    macs = {n: lab.exec(n, "cat", "/sys/class/net/eth0/address").stdout.strip() for n in NODES}
    assert sum(mac in neigh for mac in macs.values()) == 1, (neigh, macs)

    # loadBalancerSourceRanges: a second source on the same client, outside the range
    lab.exec("underlay", "ip", "addr", "add", f"{CLIENT_OUT}/24", "dev", "pn-br0")
    assert "processed by host: web-" in wait_for(lambda: _curl(lab, f"http://{fenced}/"), 20, "fenced from inside")
    assert "processed by host: web-" in wait_for(lambda: _curl(lab, f"http://{web}/", CLIENT_OUT), 20,
                                                 "web from the second address")
    for _ in range(3):  # new connections each time; none gets through
        assert _curl(lab, f"http://{fenced}/", CLIENT_OUT, timeout=1.5) == ""

    # externalTrafficPolicy Local and its healthCheckNodePort
    lab.podnet("apply", "-f", "-", input=LOCAL.replace("NODE", "node1"))
    hc = _svc(lab, "local")["spec"]["healthCheckNodePort"]
    local = wait_for(lambda: _ingress(lab, "local"), 20, "an ingress IP for local")
    wait_for(lambda: _pod_node(lab, "one-") == "node1", 30, "the pod on node1")
    code, body = wait_for(lambda: (lambda r: r if r[0] == 200 else None)(_health(lab, "node1", hc)), 20,
                          "200 from node1")
    assert body == {"service": {"namespace": "default", "name": "local"}, "localEndpoints": 1,
                    "serviceProxyHealthy": True}
    assert _health(lab, "node2", hc) == (503, {"service": {"namespace": "default", "name": "local"},
                                               "localEndpoints": 0, "serviceProxyHealthy": True})
    assert "processed by host: one-" in wait_for(lambda: _curl(lab, f"http://{local}/"), 20, "local's address")

    # the endpoint moves to node2: the checks swap, and the address follows it (the speakers re-elect)
    lab.podnet("apply", "-f", "-", input=LOCAL.replace("NODE", "node2"))
    wait_for(lambda: _pod_node(lab, "one-") == "node2", 30, "the pod on node2")
    wait_for(lambda: _health(lab, "node2", hc)[0] == 200 and _health(lab, "node1", hc)[0] == 503, 20,
             "the health checks to swap")
    assert "processed by host: one-" in wait_for(lambda: _curl(lab, f"http://{local}/"), 20, "local after the move")

    # no endpoint anywhere: 503 on both; the Service gone: nothing listens any more
    lab.podnet("delete", "deployment", "one")
    wait_for(lambda: all(_health(lab, n, hc) == (503, {"service": {"namespace": "default", "name": "local"},
                                                       "localEndpoints": 0, "serviceProxyHealthy": True})
                         for n in NODES), 20, "503 on both nodes")
    lab.podnet("delete", "svc", "local")
    wait_for(lambda: all(_health(lab, n, hc)[0] == 0 for n in NODES), 20, "the health check port to close")
    # and its address is free again for the next one
    assert local not in lab.podnet("get", "svc").stdout
