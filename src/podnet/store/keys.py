"""Every key name podnet reads or writes. Nothing else in the code base builds a key string.

flannel's keys are kept byte-for-byte (etcd prefix /coreos.com/network) so a real flanneld on the same etcd
sees podnet's leases and podnet sees its. podnet's own objects live under /podnet/.
"""

from __future__ import annotations

import ipaddress
import re

FLANNEL_PREFIX = "/coreos.com/network"
NETWORK_CONFIG = f"{FLANNEL_PREFIX}/config"
SUBNETS_PREFIX = f"{FLANNEL_PREFIX}/subnets/"

PODNET_PREFIX = "/podnet/"
RESOURCES_PREFIX = "/podnet/resources/"
ALLOC_CLUSTER_IP_PREFIX = "/podnet/alloc/clusterips/"
ALLOC_NODE_PORT_PREFIX = "/podnet/alloc/nodeports/"
ALLOC_LB_IP_PREFIX = "/podnet/alloc/loadbalancerips/"  # the lab's LoadBalancer controller's records
# etcd only: the planner's buckets (store/buckets.py) as keys <prefix><bucket as JSON><object key>, empty
# values, and the marker saying they are complete (store/etcd_buckets.py). SQLite keeps them in a table.
BUCKETS_PREFIX = "/podnet/buckets/"
BUCKETS_READY = "/podnet/meta/buckets-ready"

# Resource kinds as stored: plural lower-case, as in the Kubernetes API paths.
KIND_PLURAL = {
    "Service": "services",
    "EndpointSlice": "endpointslices",
    "Pod": "pods",
    "Node": "nodes",
    "Deployment": "deployments",
    "StatefulSet": "statefulsets",
    "Namespace": "namespaces",
    "ConfigMap": "configmaps",
    "Event": "events",
}
KIND_PLURAL.update({"ServiceAccount": "serviceaccounts", "ClusterRole": "clusterroles",
                    "ClusterRoleBinding": "clusterrolebindings", "DaemonSet": "daemonsets"})
CLUSTER_SCOPED = {"Node", "Namespace"}
CLUSTER_SCOPED.update({"ClusterRole", "ClusterRoleBinding"})


def kind_prefix(kind: str, namespace: str | None = None) -> str:
    """Prefix of all objects of a kind (all namespaces if namespace is None)."""
    plural = KIND_PLURAL[kind]
    if kind in CLUSTER_SCOPED or namespace is None:
        return f"{RESOURCES_PREFIX}{plural}/"
    return f"{RESOURCES_PREFIX}{plural}/{namespace}/"


def resource(kind: str, namespace: str | None, name: str) -> str:
    if kind in CLUSTER_SCOPED:
        return f"{RESOURCES_PREFIX}{KIND_PLURAL[kind]}/{name}"
    return f"{RESOURCES_PREFIX}{KIND_PLURAL[kind]}/{namespace or 'default'}/{name}"


def cluster_ip(ip: str) -> str:
    return f"{ALLOC_CLUSTER_IP_PREFIX}{ipaddress.ip_address(ip)}"


def node_port(port: int) -> str:
    return f"{ALLOC_NODE_PORT_PREFIX}{port}"


def lb_ip(ip: str) -> str:
    return f"{ALLOC_LB_IP_PREFIX}{ipaddress.ip_address(ip)}"


def subnet_lease(subnet: str, subnet_v6: str | None = None) -> str:
    """/coreos.com/network/subnets/10.244.1.0-24 for 10.244.1.0/24 (flannel's MakeSubnetKey).

    Dual stack: 10.12.13.0-24&fd00:12:13::-56.
    """
    net = ipaddress.ip_network(subnet)
    key = f"{SUBNETS_PREFIX}{net.network_address}-{net.prefixlen}"
    if subnet_v6 is not None:
        net6 = ipaddress.ip_network(subnet_v6)
        key += f"&{net6.network_address}-{net6.prefixlen}"
    return key


# flannel's ParseSubnetKey regex: anchored at the end only, so any prefix is accepted.
_SUBNET_KEY_RE = re.compile(r"(\d+\.\d+.\d+.\d+)-(\d+)(?:&([a-f\d:]+)-(\d+))?$")


def parse_subnet_key(key: str) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network | None] | None:
    """(v4 subnet, v6 subnet or None) of a flannel subnet key, or None if it is not one (flannel skips those)."""
    m = _SUBNET_KEY_RE.search(key)
    if m is None:
        return None
    try:
        v4 = ipaddress.IPv4Network(f"{ipaddress.IPv4Address(m.group(1))}/{int(m.group(2))}")
        v6 = None
        if m.group(3) is not None:
            v6 = ipaddress.IPv6Network(f"{ipaddress.IPv6Address(m.group(3))}/{int(m.group(4))}")
    except ValueError:
        return None
    return v4, v6


def subnet_from_lease_key(key: str) -> str:
    """Inverse of subnet_lease (the IPv4 subnet); raises ValueError for keys that are not flannel subnet keys."""
    if not key.startswith(SUBNETS_PREFIX):
        raise ValueError(f"{key!r} is not under {SUBNETS_PREFIX}")
    parsed = parse_subnet_key(key[len(SUBNETS_PREFIX):])
    if parsed is None:
        raise ValueError(f"{key!r}: expected <ip>-<prefixlen>[&<ipv6>-<prefixlen>]")
    return str(parsed[0])
