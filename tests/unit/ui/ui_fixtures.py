"""Kubernetes-shaped objects and lab facts for the page's pure code (the shapes the lab's API serves)."""

from __future__ import annotations

from typing import Any

from podnet.ui.model import LabFacts, LeaseFact


def node(name: str, ip: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": [{"type": "InternalIP", "address": ip}, {"type": "Hostname", "address": name}]}}


def pod(name: str, node_name: str | None, ip: str | None, *, ready: bool = True, ns: str = "default",
        labels: dict[str, str] | None = None, terminating: bool = False) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "namespace": ns, "labels": labels or {}}
    if terminating:
        meta["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    status: dict[str, Any] = {"phase": "Running" if ip else "Pending",
                              "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}
    if ip:
        status["podIP"] = ip
    spec: dict[str, Any] = {"containers": [{"name": "c"}]}
    if node_name:
        spec["nodeName"] = node_name
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec, "status": status}


def service(name: str, cluster_ip: str, ports: list[dict[str, Any]], *, ns: str = "default", type_: str = "ClusterIP",
            **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            "spec": {"type": type_, "clusterIP": cluster_ip, "ports": ports, **spec}}


def endpoint(ip: str, node_name: str, *, ready: bool = True, terminating: bool = False) -> dict[str, Any]:
    return {"addresses": [ip], "nodeName": node_name,
            "conditions": {"ready": ready, "serving": ready or terminating, "terminating": terminating}}


def slice_(service_name: str, endpoints: list[dict[str, Any]], ports: list[dict[str, Any]], *,
           ns: str = "default") -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"{service_name}-abcde", "namespace": ns,
                         "labels": {"kubernetes.io/service-name": service_name}},
            "endpoints": endpoints, "ports": ports}


def facts(backend: str = "vxlan", nodes: int = 3, *, leases: bool = True, vni: int = 1) -> LabFacts:
    names = [f"node{i}" for i in range(1, nodes + 1)]
    ips = {n: f"192.168.77.{10 + i}" for i, n in enumerate(names, 1)}
    return LabFacts(
        name="t1", backend=backend, proxy_mode="iptables", underlay_cidr="192.168.77.0/24",
        underlay_netns="pn-t1.ul", underlay_bridge="pn-br0", underlay_gateway="192.168.77.1",
        pod_network="10.244.0.0/16", node_netns={n: f"pn-t1.{n}" for n in names}, node_ips=ips,
        subnet_env={n: f"10.244.{i}.1/24" for i, n in enumerate(names, 1)}, vni=vni,
        leases=tuple(LeaseFact(f"10.244.{i}.0/24", ips[n], backend,
                               {"VNI": vni, "VtepMAC": f"aa:bb:cc:00:00:0{i}"} if backend == "vxlan" else {})
                     for i, n in enumerate(names, 1)) if leases else (),
    )


def three_node_objects() -> dict[str, list[dict[str, Any]]]:
    """The demo's cluster on three nodes: two web pods behind a ClusterIP and a NodePort, a client, one
    pod still pending, and a selector-less Service with an endpoint no pod holds."""
    web = {"app": "web"}
    port = [{"name": "", "port": 80, "protocol": "TCP"}]
    eps = [endpoint("10.244.1.2", "node1"), endpoint("10.244.2.2", "node2"),
           endpoint("10.244.3.2", "node3", ready=False, terminating=True)]
    return {
        "Node": [node("node1", "192.168.77.11"), node("node2", "192.168.77.12"), node("node3", "192.168.77.13")],
        "Pod": [pod("web-a", "node1", "10.244.1.2", labels=web), pod("web-b", "node2", "10.244.2.2", labels=web),
                pod("web-c", "node3", "10.244.3.2", labels=web, ready=False, terminating=True),
                pod("client", "node1", "10.244.1.3"), pod("waiting", None, None, ready=False)],
        "Service": [
            service("web", "10.96.0.10", [{"port": 80, "targetPort": 80, "protocol": "TCP"}], selector=web),
            service("web-np", "10.96.0.11", [{"port": 80, "targetPort": 80, "nodePort": 30080, "protocol": "TCP"}],
                    type_="NodePort", selector=web),
            service("outside", "10.96.0.12", [{"name": "http", "port": 8080, "protocol": "TCP"}]),
        ],
        "EndpointSlice": [slice_("web", eps, port), slice_("web-np", eps, port),
                          slice_("outside", [endpoint("192.168.77.200", "")],
                                 [{"name": "http", "port": 8080, "protocol": "TCP"}])],
    }
