"""Every key name podnet reads or writes. Nothing else in the code base builds a key string.

flannel's keys are kept byte-for-byte (etcd prefix /coreos.com/network) so a real flanneld on the same etcd
sees podnet's leases and podnet sees its. podnet's own objects live under /podnet/.
"""

from __future__ import annotations

import ipaddress

FLANNEL_PREFIX = "/coreos.com/network"
NETWORK_CONFIG = f"{FLANNEL_PREFIX}/config"
SUBNETS_PREFIX = f"{FLANNEL_PREFIX}/subnets/"

PODNET_PREFIX = "/podnet/"
RESOURCES_PREFIX = "/podnet/resources/"
ALLOC_CLUSTER_IP_PREFIX = "/podnet/alloc/clusterips/"
ALLOC_NODE_PORT_PREFIX = "/podnet/alloc/nodeports/"

# Resource kinds as stored: plural lower-case, as in the Kubernetes API paths.
KIND_PLURAL = {
    "Service": "services",
    "EndpointSlice": "endpointslices",
    "Pod": "pods",
    "Node": "nodes",
    "Deployment": "deployments",
}
CLUSTER_SCOPED = {"Node"}


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


def subnet_lease(subnet: str) -> str:
    """/coreos.com/network/subnets/10.244.1.0-24 for 10.244.1.0/24 (flannel's MakeSubnetKey)."""
    net = ipaddress.ip_network(subnet)
    return f"{SUBNETS_PREFIX}{net.network_address}-{net.prefixlen}"


def subnet_from_lease_key(key: str) -> str:
    """Inverse of subnet_lease; raises ValueError for keys that are not flannel subnet keys."""
    if not key.startswith(SUBNETS_PREFIX):
        raise ValueError(f"{key!r} is not under {SUBNETS_PREFIX}")
    tail = key[len(SUBNETS_PREFIX):]
    addr, sep, plen = tail.rpartition("-")
    if not sep:
        raise ValueError(f"{key!r}: expected <ip>-<prefixlen>")
    return str(ipaddress.ip_network(f"{addr}/{plen}"))
