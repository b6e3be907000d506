"""kubectl against a running lab: the tutorial's describe with live endpoints, and traffic that follows what
kubectl creates and deletes on every node."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .conftest import LabApi

EXAMPLES = Path(__file__).resolve().parents[3] / "examples" / "webapp1"


def _until(fn, timeout: float = 30.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while True:
        out = fn()
        if out or time.monotonic() > deadline:
            return out
        time.sleep(0.2)


def test_tutorial_in_a_lab(lab_api: LabApi) -> None:
    lab_api.kubectl("apply", "-f", str(EXAMPLES))
    lab_api.kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=60s")
    pods = json.loads(lab_api.kubectl("get", "pods", "-o", "json").stdout)["items"]
    ips = sorted(p["status"]["podIP"] for p in pods)
    assert len(ips) == 2 and all(ip.startswith("10.244.") for ip in ips)
    nodes = {p["spec"]["nodeName"] for p in pods}
    assert nodes <= {"node1", "node2"}

    def endpoints() -> list[str]:
        text = lab_api.kubectl("describe", "svc", "webapp1-clusterip-svc").stdout
        line = next(x for x in text.splitlines() if x.startswith("Endpoints:"))
        return sorted(line.split()[1].split(","))

    assert _until(lambda: endpoints() == sorted(f"{ip}:80" for ip in ips)), endpoints()

    # a Service made with kubectl reaches the pods from a pod; deleted with kubectl, it leaves every node
    lab_api.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "kubectl-made"},
        "spec": {"selector": {"app": "webapp1-clusterip"}, "ports": [{"port": 8081, "targetPort": 80}]}}))
    vip = lab_api.kubectl("get", "svc", "kubectl-made", "-o", "jsonpath={.spec.clusterIP}").stdout
    client = pods[0]["metadata"]["name"]

    def answer() -> str:
        r = lab_api.exec(client, "curl", "-s", "-m", "2", f"http://{vip}:8081/")
        return r.stdout if r.returncode == 0 else ""

    assert _until(answer), f"no answer from {vip}:8081"
    lab_api.kubectl("delete", "svc", "kubectl-made")

    def gone() -> bool:
        for node in ("node1", "node2"):
            rules = lab_api.exec(node, "iptables-save", "-t", "nat").stdout
            if "default/kubectl-made" in rules:
                return False
        return True

    assert _until(gone), "the deleted Service's rules are still on a node"
    r = lab_api.exec(client, "curl", "-s", "-m", "2", f"http://{vip}:8081/")
    assert r.returncode != 0


def test_kubectl_get_nodes_and_watch_in_a_lab(lab_api: LabApi) -> None:
    names = lab_api.kubectl("get", "nodes", "-o", "name").stdout.split()
    assert names == ["node/node1", "node/node2"]
    # healthy nodes as a kubelet reports them: Ready (a condition with a heartbeat), an age and a version,
    # through kubectl and through podnet's own get
    lab_api.kubectl("wait", "--for=condition=Ready", "node", "--all", "--timeout=60s")
    from podnet import __version__

    podnet_get = subprocess.run([str(Path(sys.executable).with_name("podnet")), "--store", lab_api.store_url,
                                 "get", "nodes"], capture_output=True, text=True, check=True).stdout
    for table in (lab_api.kubectl("get", "nodes").stdout, podnet_get):
        header, *rows = table.splitlines()
        assert header.split() == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"], table
        assert [r.split()[:3] for r in rows] == [["node1", "Ready", "<none>"], ["node2", "Ready", "<none>"]], table
        assert all(r.split()[3][-1] in "smhd" and r.split()[4] == f"podnet-v{__version__}" for r in rows), table
    ready = json.loads(lab_api.kubectl("get", "node", "node1", "-o", "jsonpath={.status.conditions}").stdout)
    assert [(c["type"], c["status"], c["reason"]) for c in ready] == [("Ready", "True", "KubeletReady")]
    assert ready[0]["lastHeartbeatTime"].endswith("Z")
    addrs = lab_api.kubectl("get", "nodes", "-o", "jsonpath={.items[*].status.addresses[0].address}").stdout.split()
    assert all(a.startswith("192.168.") for a in addrs)
    out = subprocess.run([str(Path(sys.executable).with_name("podnet")),
                          "lab", "kubeconfig", "--name", lab_api.name], capture_output=True, text=True)
    assert out.stdout.strip() == str(lab_api.kubeconfig)


def test_logs_and_pod_events(lab_api: LabApi) -> None:
    lab_api.kubectl("apply", "-f", str(EXAMPLES / "pods.yaml"))
    lab_api.kubectl("wait", "--for=condition=Ready", "pod/webapp1-6b9f7c5d4-2xkqp", "--timeout=60s")
    pod = json.loads(lab_api.kubectl("get", "pod", "webapp1-6b9f7c5d4-2xkqp", "-o", "json").stdout)
    ip = pod["status"]["podIP"]
    # one request to the pod, so its log has a line of this test's own
    assert _until(lambda: lab_api.exec(pod["spec"]["nodeName"], "curl", "-s", "-m", "2",
                                       f"http://{ip}/logs-test").returncode == 0)
    logs = _until(lambda: "logs-test" in lab_api.kubectl("logs", "webapp1-6b9f7c5d4-2xkqp").stdout)
    assert logs, lab_api.kubectl("logs", "webapp1-6b9f7c5d4-2xkqp").stdout
    tail = lab_api.kubectl("logs", "webapp1-6b9f7c5d4-2xkqp", "--tail", "1").stdout
    assert len(tail.splitlines()) <= 1
    described = _until(lambda: (lambda t: t if "Started" in t else "")(
        lab_api.kubectl("describe", "pod", "webapp1-6b9f7c5d4-2xkqp").stdout))
    assert "Scheduled" in described and "Successfully assigned default/webapp1-6b9f7c5d4-2xkqp" in described
    assert "kubelet" in described and "Started" in described


def test_exec_into_a_pod(lab_api: LabApi) -> None:
    lab_api.kubectl("apply", "-f", str(EXAMPLES))
    lab_api.kubectl("wait", "--for=condition=Ready", "pod", "--all", "--timeout=60s")
    vip = lab_api.kubectl("get", "svc", "webapp1-clusterip-svc", "-o", "jsonpath={.spec.clusterIP}").stdout
    pods = lab_api.kubectl("get", "pods", "-o", "jsonpath={.items[*].metadata.name}").stdout.split()
    out = _until(lambda: lab_api.kubectl("exec", pods[0], "--", "curl", "-s", "-m", "2", f"http://{vip}/",
                                         check=False).stdout)
    assert "This request was processed by host: webapp1-" in out
    assert any(p in out for p in pods)
    r = lab_api.kubectl("exec", pods[0], "--", "sh", "-c", "echo to-stderr >&2; exit 3", check=False)
    assert r.returncode == 3 and "to-stderr" in r.stderr
    r = lab_api.kubectl("exec", "-i", pods[0], "--", "cat", input="hello through stdin\n", check=False)
    assert r.stdout == "hello through stdin\n", (r.stdout, r.stderr)
    r = lab_api.kubectl("exec", pods[0], "--", "ip", "-4", "-o", "addr", "show", "eth0")
    ip = lab_api.kubectl("get", "pod", pods[0], "-o", "jsonpath={.status.podIP}").stdout
    assert f"inet {ip}/" in r.stdout  # it ran inside the pod's own network namespace
    r = lab_api.kubectl("exec", "nonexistent-pod", "--", "true", check=False)
    assert r.returncode != 0 and "not found" in r.stderr


def test_reachable_from_inside_every_node(lab_api: LabApi) -> None:
    from podnet.lab import apiserver
    from podnet.lab.state import LabState

    st = LabState.load(lab_api.name)
    assert st is not None
    kc = apiserver.in_lab_kubeconfig_path(st)
    for node in ("node1", "node2"):
        r = lab_api.exec(node, "kubectl", "--kubeconfig", str(kc), "get", "nodes", "-o", "name")
        assert r.returncode == 0 and r.stdout.split() == ["node/node1", "node/node2"], r.stderr
    # and from nowhere else: the in-lab address does not answer from the host
    import socket

    with socket.socket() as s:
        s.settimeout(0.5)
        assert s.connect_ex((st.spec.underlay_gateway, apiserver.port(st))) != 0
