"""A pod cannot reach its node's 127.0.0.1-only services (the CVE-2020-8558 class), in either proxy mode.

The pod does what an attacker root in its own namespace can: it routes 127.0.0.1 out of eth0 via its
gateway (the node's cni0) and asks for the node's proxy /metrics, which listens on 127.0.0.1:10249 in the
node namespace. nftables mode: the node keeps route_localnet=0, so the kernel drops 127/8 arriving from
outside as a martian (kube-proxy's nftables mode never sets it). iptables mode: route_localnet=1 for
localhost NodePorts, and KUBE-FIREWALL drops 127/8 not from 127/8 (kube-proxy's own rule). In both modes a
NodePort still answers on the node's own address."""

from __future__ import annotations

import json

import pytest

from .test_cluster import _ready_pods, wait_for

pytestmark = pytest.mark.integration

APP = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
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
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""


def _route_loopback_via_gateway(lab, pod: str) -> None:
    target = f"default/{pod}"
    gw = json.loads(lab.exec(target, "ip", "-j", "route", "show", "default").stdout)[0]["gateway"]
    for argv in (["sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"],
                 ["sysctl", "-q", "-w", "net.ipv4.conf.eth0.route_localnet=1"],
                 ["ip", "rule", "add", "pref", "100", "lookup", "local"],  # local table after ours
                 ["ip", "rule", "del", "pref", "0"],
                 ["ip", "rule", "add", "to", "127.0.0.1/32", "lookup", "77", "pref", "5"],
                 ["ip", "route", "add", "127.0.0.1/32", "via", gw, "dev", "eth0", "table", "77"]):
        r = lab.exec(target, *argv)
        assert r.returncode == 0, (argv, r.stderr)
    route = lab.exec(target, "ip", "route", "get", "127.0.0.1").stdout
    assert f"via {gw} dev eth0" in route, route  # the pod really sends 127.0.0.1 to its node


@pytest.mark.parametrize("mode", ["nftables", "iptables"])
def test_pod_cannot_read_the_nodes_loopback_metrics(lab_factory, mode):
    lab = lab_factory()
    lab.up("--nodes", "1", "--proxy-mode", mode)
    lab.podnet("apply", "-f", "-", input=APP)
    (pod,) = _ready_pods(lab, 1)
    name = pod["metadata"]["name"]
    # the node's own view: metrics answer on its loopback (so a refusal below is the block, not absence)
    wait_for(lambda: "kubeproxy" in lab.exec("node1", "curl", "-sS", "--max-time", "2",
                                             "http://127.0.0.1:10249/metrics").stdout, 20, "metrics on node1")
    _route_loopback_via_gateway(lab, name)
    r = lab.exec(f"default/{name}", "curl", "-sS", "--max-time", "3", "http://127.0.0.1:10249/metrics")
    assert r.returncode != 0 and "kubeproxy" not in r.stdout, (mode, r.stdout[:200])
    # NodePorts still work: from the pod to its node's underlay address
    svc = json.loads(lab.podnet("get", "services", "web", "-o", "json").stdout)
    node_port = svc["spec"]["ports"][0]["nodePort"]
    node_ip = json.loads(lab.podnet("get", "nodes", "-o", "json").stdout)["items"][0]["status"]["addresses"][0][
        "address"]
    wait_for(lambda: name in lab.exec("node1", "curl", "-sS", "--max-time", "2",
                                      f"http://{node_ip}:{node_port}/").stdout, 20, "NodePort answer")
