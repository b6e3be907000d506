"""3-node labs of `--ip-family dual` and `--ip-family ipv6`, every overlay backend that has IPv6 (vxlan,
host-gw) with both proxy modes: pods reach each other over IPv6 across nodes, a Service is reached on each
of its ClusterIPs and on its NodePort over each family, and when its endpoints go they go from every node
in both families; the cluster DNS resolves it to each ClusterIP. On an IPv6-only lab a RequireDualStack
Service is refused and nothing is stored."""

from __future__ import annotations

import ipaddress
import json
from typing import Any

import pytest

from tests.integration.lab.test_cluster import _pods, _ready, wait_for

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
  type: NodePort
  ipFamilyPolicy: POLICY
  selector: {app: web}
  ports: [{port: 80, targetPort: http}]
"""

# Every pair of the three dimensions (family x backend, family x mode, backend x mode) in four labs: each
# family runs over vxlan and host-gw and with both proxy modes, and each backend with both modes. The full
# product (8 labs) adds two minutes to `make test` and no pair this does not already cover.
CASES = [("dual", "vxlan", "iptables"), ("dual", "host-gw", "nftables"),
         ("ipv6", "vxlan", "nftables"), ("ipv6", "host-gw", "iptables")]


def url(ip: str, port: int = 80) -> str:
    return f"http://[{ip}]:{port}/" if ":" in ip else f"http://{ip}:{port}/"


def version(ip: str) -> int:
    return ipaddress.ip_address(ip).version


def rules(lab: Any, node: str, mode: str) -> str:
    """Both families' NAT state of a node, as text (iptables and ip6tables, or the whole nft ruleset)."""
    if mode == "iptables":
        return lab.exec(node, "iptables-save", "-t", "nat").stdout + lab.exec(node, "ip6tables-save", "-t", "nat").stdout
    return lab.exec(node, "nft", "list", "ruleset").stdout


def apply(lab: Any, spec: dict[str, Any], text: str, check: bool = True) -> Any:
    # `podnet apply` allocates from the lab's ranges, as the lab's API server does
    return lab.podnet("apply", "--service-cidr", spec["service_cidr"], "-f", "-", input=text, check=check)


@pytest.mark.parametrize(("family", "backend", "mode"), CASES)
def test_three_node_lab_of_ipv6_and_dual_stack(lab_factory: Any, family: str, backend: str, mode: str) -> None:
    lab = lab_factory()
    lab.up("--nodes", "3", "--backend", backend, "--proxy-mode", mode, "--ip-family", family)
    from podnet.lab.state import LabState

    st = LabState.load(lab.name)
    assert st is not None
    spec = st.spec.to_dict()
    families = [4, 6] if family == "dual" else [6]
    policy = "RequireDualStack" if family == "dual" else "SingleStack"
    if family == "ipv6":
        # a single-stack (IPv6) cluster refuses a Service that requires two families, storing nothing
        r = apply(lab, spec, APP.replace("POLICY", "RequireDualStack"), check=False)
        assert r.returncode != 0 and "spec.ipFamilyPolicy" in r.stderr and "dual-stack" in r.stderr, r.stderr
        assert lab.podnet("get", "services", "web", check=False).returncode != 0
    apply(lab, spec, APP.replace("POLICY", policy))

    def ready() -> list[dict[str, Any]] | None:
        ps = [p for p in _pods(lab) if p["metadata"]["name"].startswith("web-")]
        return ps if len(ps) == 3 and all(_ready(p) for p in ps) else None

    pods = wait_for(ready, 60, "3 ready web pods")
    assert sorted(p["spec"]["nodeName"] for p in pods) == ["node1", "node2", "node3"]
    ips = {p["metadata"]["name"]: [i["ip"] for i in p["status"]["podIPs"]] for p in pods}
    assert all([version(i) for i in v] == families for v in ips.values()), ips
    v6 = {name: v[-1] for name, v in ips.items()}

    # pod to pod over IPv6, every ordered pair (each crosses nodes): the answer names the target pod
    for src in ips:
        for dst, ip in v6.items():
            if dst != src:
                r = lab.exec(f"default/{src}", "curl", "-sS", "-g", "--max-time", "3", url(ip))
                assert dst in r.stdout, (family, backend, src, dst, r.stdout, r.stderr)

    svc = json.loads(lab.podnet("get", "services", "web", "-o", "json").stdout)["spec"]
    assert [version(i) for i in svc["clusterIPs"]] == families and svc["ipFamilyPolicy"] == policy
    # the cluster DNS answers for each family (A and AAAA): a pod resolves the Service to every ClusterIP
    r = lab.exec(f"default/{next(iter(ips))}", "getent", "ahosts", "web")
    assert {line.split()[0] for line in r.stdout.splitlines()} == set(svc["clusterIPs"]), (r.stdout, r.stderr)
    node_port = svc["ports"][0]["nodePort"]
    node_ips = {n["name"]: [ip for ip in (n["underlay_ip"], n["underlay_ip6"]) if ip and version(ip) in families]
                for n in spec["node_specs"]}
    all_pod_ips = {ip for v in ips.values() for ip in v}
    for node in ("node1", "node2", "node3"):
        wait_for(lambda node=node: all(ip in rules(lab, node, mode) for ip in all_pod_ips), 20,
                 f"both families' endpoints on {node}")
        # each ClusterIP from the node: 15 connections, answered by more than one pod (all 15 by one of
        # the 3 pods: 1 in 4.8 million)
        for cip in svc["clusterIPs"]:
            r = lab.exec(node, "curl", "-sS", "-g", "--max-time", "3", *[url(cip)] * 15)
            seen = {name for name in ips if name in r.stdout}
            assert len(seen) >= 2, (family, backend, mode, node, cip, r.stdout, r.stderr)
    # the NodePort over each family, from another node to node1's address of that family
    for ip in node_ips["node1"]:
        r = lab.exec("node2", "curl", "-sS", "-g", "--max-time", "3", url(ip, node_port))
        assert "processed by host" in r.stdout, (family, backend, mode, ip, r.stdout, r.stderr)

    # the endpoints go (scale to 0): from every node, in both families
    apply(lab, spec, APP.replace("POLICY", policy).replace("replicas: 3", "replicas: 0"))
    wait_for(lambda: not [p for p in _pods(lab) if p["metadata"]["name"].startswith("web-")], 60, "no web pods")
    for node in ("node1", "node2", "node3"):
        wait_for(lambda node=node: not any(ip in rules(lab, node, mode) for ip in all_pod_ips), 20,
                 f"no endpoint left on {node}")
        for cip in svc["clusterIPs"]:
            r = lab.exec(node, "curl", "-sS", "-g", "--max-time", "3", url(cip))
            assert r.returncode != 0 and "processed by host" not in r.stdout, (node, cip, r.stdout)
