"""Node IPAM: give every Node a pod CIDR, as kube-controller-manager does with --allocate-node-cidrs.

kube-controller-manager's range allocator cuts --cluster-cidr into --node-cidr-mask-size subnets (/24 by
default) and hands each Node without `spec.podCIDR` the lowest free one, writing spec.podCIDR and
spec.podCIDRs (dual-stack: one subnet of each family, /24 and /64 by default); an assigned CIDR is never changed, and a CIDR a Node already has is marked used (also one
set by hand). flannel's kube subnet manager takes its lease from there. `assign` is the pure decision;
`NodeIpam` follows the store's Nodes and writes, conditionally on the revision it read.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

from podnet.store import ConflictError, Store, keys
from podnet.store.informer import Informer

log = logging.getLogger(__name__)

NODE_CIDR_MASK = 24  # kube-controller-manager's --node-cidr-mask-size-ipv4 default
NODE_CIDR_MASK_V6 = 64  # --node-cidr-mask-size-ipv6 default


def _cidrs(doc: dict[str, Any]) -> list[str]:
    spec = doc.get("spec") or {}
    return list(spec.get("podCIDRs") or []) or ([spec["podCIDR"]] if spec.get("podCIDR") else [])


def assign(cluster_cidr: str, nodes: dict[str, dict[str, Any]], mask: int = NODE_CIDR_MASK,
           mask6: int = NODE_CIDR_MASK_V6) -> dict[str, list[str]]:
    """{node name: its pod CIDRs} for the nodes that have none, lowest free subnet first, nodes by name.

    cluster_cidr is one CIDR or an IPv4 and an IPv6 one, comma-separated (--cluster-cidr of a dual-stack
    cluster): a node gets one subnet of each, in that order, or none when either family has run out."""
    nets = [ipaddress.ip_network(c.strip()) for c in cluster_cidr.split(",")]
    used: list[ipaddress.IPv4Network | ipaddress.IPv6Network] = []
    for doc in nodes.values():
        for c in _cidrs(doc):
            try:
                used.append(ipaddress.ip_network(c, strict=False))
            except ValueError:
                continue

    def free(net: ipaddress.IPv4Network | ipaddress.IPv6Network) -> Iterator[str]:
        theirs = [u for u in used if u.version == net.version]
        for sub in net.subnets(new_prefix=mask if net.version == 4 else mask6):
            if not any(sub.overlaps(u) for u in theirs):  # one family
                yield str(sub)

    pools = [(net, free(net)) for net in nets]
    out: dict[str, list[str]] = {}
    for name in sorted(n for n, doc in nodes.items() if not _cidrs(doc)):
        got = [next(gen, None) for _, gen in pools]
        if None in got:
            empty = ", ".join(str(net) for (net, _), c in zip(pools, got, strict=True) if c is None)
            log.error("node %s: no pod CIDR left in %s (all its node subnets are assigned)", name, empty)
            break
        out[name] = [c for c in got if c is not None]
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
        for name, cidrs in assign(self.cluster_cidr, nodes).items():
            key = keys.resource("Node", None, name)
            kv = self.store.get(key)
            if kv is None:
                continue
            doc = json.loads(kv.value)
            if _cidrs(doc):
                continue
            doc.setdefault("spec", {}).update(podCIDR=cidrs[0], podCIDRs=cidrs)
            try:
                self.store.put(key, json.dumps(doc).encode(), if_revision=kv.mod_revision)
            except ConflictError:
                self._changed.set()  # changed meanwhile: look again
                continue
            log.info("node %s: spec.podCIDRs %s", name, ",".join(cidrs))
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
