"""The lab's cluster DNS: the kube-dns Service and the DNS servers behind it.

In a kubeadm cluster CoreDNS runs as a Deployment of two pods in kube-system, behind the Service kube-dns
(ClusterIP: the service CIDR's tenth address, ports dns 53/UDP and dns-tcp 53/TCP, metrics 9153), and
the kubelet points every pod's resolver at that ClusterIP. The lab keeps that shape with the lab's own
process model: like the proxy and the overlay (DaemonSets in a cluster), a DNS server is a supervised
process in a node's network namespace, here on the first DNS_REPLICAS nodes, listening on the node's
address like a hostNetwork pod. Each server lists itself in kube-dns's EndpointSlices while it serves
(dns/publish.py, bound to a lease): that is what the EndpointSlice controller does for a Ready CoreDNS
pod. Pods reach it exactly as in a cluster: resolv.conf says 10.96.0.10, and the node's proxy rules
DNAT that to a ready server's address.
"""

from __future__ import annotations

import json
import logging

from podnet.api.service import Service
from podnet.lab.state import LabState
from podnet.lab.topology import LabSpec, NodeSpec
from podnet.net import netns
from podnet.store import Store, keys

log = logging.getLogger(__name__)

NAMESPACE = "kube-system"
NAME = "kube-dns"
PORT = 53


def service(spec: LabSpec) -> Service:
    """kube-dns as kubeadm's CoreDNS addon has it, less the selector: its endpoints are the servers' own."""
    return Service.model_validate({
        "apiVersion": "v1", "kind": "Service",
        "metadata": {"name": NAME, "namespace": NAMESPACE,
                     "labels": {"k8s-app": "kube-dns", "kubernetes.io/cluster-service": "true",
                                "kubernetes.io/name": "CoreDNS"}},
        "spec": {"clusterIP": spec.cluster_dns,
                 "ports": [{"name": "dns", "port": PORT, "protocol": "UDP", "targetPort": PORT},
                           {"name": "dns-tcp", "port": PORT, "protocol": "TCP", "targetPort": PORT}]},
    })


def ensure_service(store: Store, spec: LabSpec) -> None:
    """Create (or keep) kube-dns; its ClusterIP is taken from the static band, so no dynamic allocation
    gets it first. A ClusterIP another Service already holds is refused with that Service named."""
    from podnet.api.validation import validate
    from podnet.controllers.allocators import AllocatorConfig
    from podnet.controllers.apply import apply_objects, delete_objects
    from podnet.errors import ValidationError

    svc = service(spec)
    problems = validate(svc)
    if problems:
        raise ValidationError(problems)
    kv = store.get(keys.resource("Service", NAMESPACE, NAME))
    held = ((json.loads(kv.value).get("spec") or {}).get("clusterIP") if kv is not None else None)
    if held is not None and held != spec.cluster_dns:
        # An earlier lab of another service CIDR or IP family made it. A ClusterIP never changes in place
        # (the API refuses it), so kube-dns, which belongs to the lab, is made again, as `kubectl replace
        # --force` would: deleted (its address freed) and created with this lab's.
        log.info("kube-dns: %s is not this lab's (%s): recreating the Service", held, spec.cluster_dns)
        delete_objects(store, [("Service", NAMESPACE, NAME)], ignore_not_found=True)
    apply_objects(store, [svc], AllocatorConfig(spec.service_cidr))


def argv(st: LabState, exe: str, node: NodeSpec) -> list[str]:
    spec = st.spec
    # on the node's address of kube-dns's family (the cluster's default), as a hostNetwork CoreDNS pod
    ip = node.internal_ips(spec.ip_family)[0]
    listen = f"[{ip}]:{PORT}" if ":" in ip else f"{ip}:{PORT}"
    return netns.exec_argv(node.netns, [
        exe, "--store", st.store_url, "dns", "run", "--listen", listen,
        "--zone", spec.cluster_domain, "--publish", f"{NAMESPACE}/{NAME}", "--node", node.name,
        "--advertise", ip])
