"""What a lab writes into the store when it comes up, and removes when it goes down.

Node objects (one per node, InternalIP = underlay address, labelled with the lab's name), flannel's
network config and the kube-dns Service (lab/dns.py; it stays, like the API server's namespaces). Services, Pods and Deployments belong to the user: `lab down` leaves them, and a new lab
picks them up again; their status is kept true by lifecycle.py (no pod claims an address nobody holds).
Only Node objects labelled with this lab's name are ever removed: another lab may share the store.
"""

from __future__ import annotations

import json

from podnet.api.node import Node
from podnet.lab import lifecycle
from podnet.lab.labels import LAB_LABEL
from podnet.lab.state import LabState
from podnet.lab.topology import LabSpec
from podnet.store import Delete, Put, Store, keys, open_store


def net_conf(spec: LabSpec) -> bytes:
    """flannel's net-conf.json for the lab's families (kube-flannel's dual-stack and IPv6-only configs)."""
    backend: dict[str, object] = {"Type": spec.backend}
    if spec.backend == "vxlan":
        backend["VNI"] = 1
    conf: dict[str, object] = {}
    if 4 in spec.families:
        conf["Network"] = spec.pod_network
    else:
        conf["EnableIPv4"] = False
    if 6 in spec.families:
        conf |= {"EnableIPv6": True, "IPv6Network": spec.pod_network6}
    return json.dumps(conf | {"Backend": backend}).encode()


def node_object(spec: LabSpec, index: int) -> Node:
    """A node as it registers: its conditions come from its agent's first heartbeat (nodestatus.py)."""
    from datetime import UTC, datetime

    from podnet.lab.nodestatus import stamp

    n = spec.node_specs[index]
    return Node.model_validate({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {"name": n.name, "labels": {"kubernetes.io/hostname": n.name, LAB_LABEL: spec.name},
                     "creationTimestamp": stamp(datetime.now(UTC))},
        "status": {"addresses": [*({"type": "InternalIP", "address": ip} for ip in n.internal_ips(spec.ip_family)),
                                 {"type": "Hostname", "address": n.name}]},
    })


def register(st: LabState) -> None:
    from podnet.overlay.netconf import parse_netconf

    spec = st.spec
    data = net_conf(spec)
    parse_netconf(data)  # refuse before writing anything
    ops: list[Put | Delete] = [Put(keys.NETWORK_CONFIG, data)]
    for i, _ in enumerate(spec.node_specs):
        node = node_object(spec, i)
        ops.append(Put(keys.resource("Node", None, node.name), json.dumps(node.to_dict()).encode()))
    store = open_store(st.store_url)
    try:
        _drop_stale_leases(store, spec)
        names = {n.name for n in spec.node_specs}
        # Nodes an earlier lab of this name had and this one has not (a lab up with fewer nodes).
        ops += [Delete(key) for key, name in _lab_nodes(store, spec.name) if name not in names]
        store.commit(ops)
        lifecycle.reconcile(store, names)
        from podnet.lab import dns

        dns.ensure_service(store, spec)
    finally:
        store.close()


def _lab_nodes(store: Store, lab: str | None) -> list[tuple[str, str]]:
    """(key, name) of the Node objects labelled as this lab's (lab None: as any lab's, or none's)."""
    out = []
    for kv in store.list(keys.kind_prefix("Node")).items:
        try:
            meta = json.loads(kv.value).get("metadata") or {}
        except (ValueError, AttributeError):
            continue
        if lab is None or (meta.get("labels") or {}).get(LAB_LABEL) == lab:
            out.append((kv.key, meta.get("name", "")))
    return out


def _drop_stale_leases(store: Store, spec: LabSpec) -> None:
    """Leases of a previous lab on the same store whose node IPs this lab reuses would make the new nodes
    route to ghosts until the old leases expire (24 h); they belong to namespaces that no longer exist."""
    _delete_leases_of(store, spec)


def _delete_leases_of(store: Store, spec: LabSpec) -> None:
    """Remove the subnet leases whose public address (IPv4 or IPv6) is one of the lab's nodes'."""
    ips = {n.underlay_ip for n in spec.node_specs} | {n.underlay_ip6 for n in spec.node_specs if n.underlay_ip6}
    for kv in store.list(keys.SUBNETS_PREFIX).items:
        try:
            doc = json.loads(kv.value)
            if doc.get("PublicIP") in ips or doc.get("PublicIPv6") in ips:
                store.delete(kv.key)
        except (ValueError, AttributeError):
            continue


def unregister_spec(spec: LabSpec, store_url: str) -> None:
    store = open_store(store_url)
    try:
        names = {n.name for n in spec.node_specs}
        for key, name in _lab_nodes(store, spec.name):
            if name in names:
                store.delete(key)
        # Pods bound to these node names, unless another lab on this store has a node of that name now.
        taken = {kv_name for _, kv_name in _lab_nodes(store, None)}
        lifecycle.nodes_gone(store, names - taken, f"went down with lab {spec.name}")
        _delete_leases_of(store, spec)
    finally:
        store.close()


def unregister(st: LabState) -> None:
    unregister_spec(st.spec, st.store_url)
