"""`podnet lab up --source kube`: every node's proxy and overlay watch the lab's API server (kube-proxy and
flanneld --kube-subnet-mgr style), the control plane's node IPAM gives nodes their podCIDRs.

Two 3-node labs cover the matrix: vxlan + iptables and host-gw + nftables. In each, the real kubectl
creates a Deployment and a Service; pods reach pods on the other nodes, every node reaches the Service, and
changes of the Service and of the pods made with kubectl reach every node's kernel. The first lab also loses its API
server (SIGKILL): the data plane keeps serving while it is down, and after the supervisor restarts it the
daemons re-list and a change made then still reaches every node.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest

from .conftest import Lab

pytestmark = [pytest.mark.integration, pytest.mark.slow]

KUBECTL = shutil.which("kubectl")
MAC = r"[0-9a-f]{2}(:[0-9a-f]{2}){5}"


def until(what: str, fn: Callable[[], Any], timeout: float = 60.0) -> Any:
    end = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < end:
        last = fn()
        if last:
            return last
        time.sleep(0.3)
    raise AssertionError(f"{what}: not within {timeout:.0f} s (last: {last!r})")


class Kube:
    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.kubeconfig = lab.podnet("lab", "kubeconfig", "--name", lab.name).stdout.strip()

    def __call__(self, *args: str, check: bool = True) -> str:
        r = subprocess.run([KUBECTL or "kubectl", "--kubeconfig", self.kubeconfig, *args], capture_output=True,
                           text=True, timeout=60)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)}: {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "-o", "json"))


def _http(lab: Lab, where: str, url: str) -> str:
    r = lab.exec(where, "curl", "-s", "-m", "2", url, timeout=10)
    return r.stdout if r.returncode == 0 else ""


def _serves_everywhere(lab: Lab, nodes: list[str], url: str) -> bool:
    return all("processed by host" in _http(lab, n, url) for n in nodes)


def _rules(lab: Lab, node: str, mode: str) -> str:
    argv = ["iptables-save", "-t", "nat"] if mode == "iptables" else ["nft", "list", "ruleset"]
    return lab.exec(node, *argv).stdout


def _check_lab(lab: Lab, kube: Kube, backend: str, mode: str) -> tuple[list[str], str]:
    nodes = [n["metadata"]["name"] for n in kube.json("get", "nodes")["items"]]
    assert len(nodes) == 3
    # node IPAM + flannel's annotations, in flanneld's format
    for n in kube.json("get", "nodes")["items"]:
        ann = n["metadata"].get("annotations") or {}
        assert re.fullmatch(r"10\.244\.\d+\.0/24", n["spec"]["podCIDR"]), n["spec"]
        assert ann["flannel.alpha.coreos.com/kube-subnet-manager"] == "true"
        assert ann["flannel.alpha.coreos.com/backend-type"] == backend
        assert ann["flannel.alpha.coreos.com/public-ip"] == next(
            a["address"] for a in n["status"]["addresses"] if a["type"] == "InternalIP")
        data = ann["flannel.alpha.coreos.com/backend-data"]
        if backend == "vxlan":
            assert re.fullmatch(r'\{"VNI":1,"VtepMAC":"' + MAC + r'"\}', data), data
        else:
            assert data == "null"
        assert any(c["type"] == "NetworkUnavailable" and c["status"] == "False" for c in n["status"]["conditions"])
        subnet_env = (lab_dir(lab) / "nodes" / n["metadata"]["name"] / "subnet.env").read_text()
        first = n["spec"]["podCIDR"].replace(".0/24", ".1/24")
        assert f"FLANNEL_SUBNET={first}\n" in subnet_env

    kube("create", "deployment", "web", "--image=podnet/serve", "--replicas=3")
    kube("expose", "deployment", "web", "--port=80")

    def running() -> list[dict[str, Any]]:
        pods = kube.json("get", "pods", "-l", "app=web")["items"]
        ok = [p for p in pods if (p.get("status") or {}).get("phase") == "Running" and p["status"].get("podIP")]
        return ok if len(ok) == 3 and len({p["spec"]["nodeName"] for p in ok}) == 3 else []

    pods = until("3 web pods running on 3 nodes", running, 90)
    # pod to pod across nodes: every pod reaches every other pod's IP
    for src in pods:
        for dst in pods:
            if src is not dst:
                out = until(f"{src['metadata']['name']} -> {dst['status']['podIP']}", lambda s=src, d=dst: _http(
                    lab, f"default/{s['metadata']['name']}", f"http://{d['status']['podIP']}/"), 30)
                assert dst["metadata"]["name"] in out
    ip = kube.json("get", "svc", "web")["spec"]["clusterIP"]
    until("the Service answers from every node", lambda: _serves_everywhere(lab, nodes, f"http://{ip}/"), 60)

    # a Service changed with kubectl reaches every node's kernel: a second port, 8080 -> 80
    kube("patch", "svc", "web", "--type=json", "-p",
         '[{"op":"replace","path":"/spec/ports","value":[{"name":"http","port":80,"targetPort":80},'
         '{"name":"alt","port":8080,"targetPort":80}]}]')
    until("port 8080 in every node's rules", lambda: all(
        "8080" in _rules(lab, n, mode) for n in nodes), 60)
    until("port 8080 answers from every node", lambda: _serves_everywhere(lab, nodes, f"http://{ip}:8080/"), 60)

    # a pod change made with kubectl reaches every node's kernel too: scaled down, its endpoint leaves the rules
    kube("scale", "deployment", "web", "--replicas=2")
    before = {p["status"]["podIP"] for p in pods}
    left = until("2 web pods", lambda: (ps := kube.json("get", "pods", "-l", "app=web")["items"]) and len(ps) == 2
                 and {p["status"].get("podIP") for p in ps}, 60)
    (gone,) = before - left
    until(f"{gone} out of every node's rules", lambda: all(
        f"{gone}:" not in (r := _rules(lab, n, mode)) and f"{gone} " not in r for n in nodes), 60)
    until("the Service still answers from every node", lambda: _serves_everywhere(lab, nodes, f"http://{ip}/"), 60)
    return nodes, ip


def lab_dir(lab: Lab) -> Any:
    from podnet.lab.state import lab_dir as d

    return d(lab.name)


def _apiserver_pid(lab: Lab) -> int:
    return json.loads((lab_dir(lab) / "procs.json").read_text())["apiserver"]["pid"]


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_vxlan_iptables_lab_on_the_api_server_survives_its_restart(lab_factory: Callable[[], Lab]) -> None:
    lab = lab_factory()
    lab.up("--nodes", "3", "--backend", "vxlan", "--proxy-mode", "iptables", "--source", "kube")
    kube = Kube(lab)
    nodes, ip = _check_lab(lab, kube, "vxlan", "iptables")

    # The API server dies: the kernel keeps its rules and routes, the Service keeps answering.
    old = _apiserver_pid(lab)
    os.kill(old, signal.SIGKILL)
    assert _serves_everywhere(lab, nodes, f"http://{ip}/")
    until("the supervisor restarted the API server", lambda: _apiserver_pid(lab) != old
          and kube("get", "--raw", "/readyz", check=False) == "ok", 60)
    # ... and once it is back, a change reaches every node again (the informers re-listed).
    kube("patch", "svc", "web", "--type=json", "-p",
         '[{"op":"add","path":"/spec/ports/-","value":{"name":"third","port":9090,"targetPort":80}}]')
    until("port 9090 answers from every node after the restart",
          lambda: _serves_everywhere(lab, nodes, f"http://{ip}:9090/"), 60)
    for n in nodes:
        assert "Traceback" not in (lab_dir(lab) / "logs" / f"{n}-proxy.log").read_text()


@pytest.mark.skipif(KUBECTL is None, reason="kubectl is not installed")
def test_hostgw_nftables_lab_on_the_api_server(lab_factory: Callable[[], Lab]) -> None:
    lab = lab_factory()
    lab.up("--nodes", "3", "--backend", "host-gw", "--proxy-mode", "nftables", "--source", "kube")
    _check_lab(lab, Kube(lab), "host-gw", "nftables")
