"""Node IPAM: give every Node a pod CIDR, as kube-controller-manager does with --allocate-node-cidrs.

kube-controller-manager's range allocator cuts --cluster-cidr into --node-cidr-mask-size subnets (/24 by
default) and hands each Node without `spec.podCIDR` the lowest free one, writing spec.podCIDR and
spec.podCIDRs; an assigned CIDR is never changed, and a CIDR a Node already has is marked used (also one
set by hand). flannel's kube subnet manager takes its lease from there. `assign` is the pure decision;
`NodeIpam` follows the store's Nodes and writes, conditionally on the revision it read.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from typing import Any

from podnet.store import ConflictError, Store, keys
from podnet.store.informer import Informer

log = logging.getLogger(__name__)

NODE_CIDR_MASK = 24  # kube-controller-manager's --node-cidr-mask-size default for IPv4


def _cidrs(doc: dict[str, Any]) -> list[str]:
    spec = doc.get("spec") or {}
    return list(spec.get("podCIDRs") or []) or ([spec["podCIDR"]] if spec.get("podCIDR") else [])


def assign(cluster_cidr: str, nodes: dict[str, dict[str, Any]], mask: int = NODE_CIDR_MASK) -> dict[str, str]:
    """{node name: CIDR} for the nodes that have none, lowest free subnet first, nodes by name."""
    net = ipaddress.IPv4Network(cluster_cidr)
    used: set[ipaddress.IPv4Network] = set()
    for doc in nodes.values():
        for c in _cidrs(doc):
            try:
                used.add(ipaddress.IPv4Network(c, strict=False))
            except ValueError:
                continue
    free = (s for s in net.subnets(new_prefix=mask) if not any(s.overlaps(u) for u in used))
    out: dict[str, str] = {}
    for name in sorted(n for n, doc in nodes.items() if not _cidrs(doc)):
        subnet = next(free, None)
        if subnet is None:
            log.error("node %s: no pod CIDR left in %s (all /%d subnets are assigned)", name, net, mask)
            break
        out[name] = str(subnet)
    return out


class NodeIpam:
    """Follows the Nodes whose labels match `labels`, assigns pod CIDRs (a thread; stop() ends it)."""

    def __init__(self, store: Store, cluster_cidr: str, labels: dict[str, str] | None = None) -> None:
        self.store = store
        self.cluster_cidr = cluster_cidr
        self.labels = labels or {}
        self._changed = threading.Event()
        self.informer: Informer[dict[str, Any]] = Informer(
            store, keys.kind_prefix("Node"), json.loads, on_change=lambda *_: self._changed.set(), name="node ipam")

    def _mine(self, doc: Any) -> bool:
        labels = ((doc.get("metadata") or {}).get("labels") or {}) if isinstance(doc, dict) else {}
        return all(labels.get(k) == v for k, v in self.labels.items())

    def sync(self) -> int:
        """Assign what is missing now; returns how many nodes got a CIDR."""
        snapshot = self.informer.snapshot()
        nodes = {d["metadata"]["name"]: d for d in snapshot.values() if self._mine(d)}
        done = 0
        for name, cidr in assign(self.cluster_cidr, nodes).items():
            key = keys.resource("Node", None, name)
            kv = self.store.get(key)
            if kv is None:
                continue
            doc = json.loads(kv.value)
            if _cidrs(doc):
                continue
            doc.setdefault("spec", {}).update(podCIDR=cidr, podCIDRs=[cidr])
            try:
                self.store.put(key, json.dumps(doc).encode(), if_revision=kv.mod_revision)
            except ConflictError:
                self._changed.set()  # changed meanwhile: look again
                continue
            log.info("node %s: spec.podCIDR %s", name, cidr)
            done += 1
        return done

    def run(self, stop: threading.Event) -> None:
        self.informer.start()
        try:
            while not stop.is_set():
                if self._changed.wait(1.0):
                    self._changed.clear()
                    try:
                        self.sync()
                    except Exception:  # noqa: BLE001 - a store hiccup: the next change or tick retries
                        log.exception("node ipam sync failed")
                        self._changed.set()
        finally:
            self.informer.stop()
