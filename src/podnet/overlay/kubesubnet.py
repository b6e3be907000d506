"""flannel's Kubernetes subnet manager (`--kube-subnet-mgr`, flannel pkg/subnet/kube): leases are Nodes.

- Our subnet is `node.spec.podCIDR` (the first of podCIDRs), assigned by kube-controller-manager's node
  IPAM (--allocate-node-cidrs), or by the lab's control plane. We wait for it, saying so.
- What peers need to reach us goes into our Node's annotations, byte for byte what flanneld writes, so a
  flanneld node and a podnet node are peers (shared/reference/flannel.md section 3):

      flannel.alpha.coreos.com/backend-type: vxlan
      flannel.alpha.coreos.com/backend-data: '{"VNI":1,"VtepMAC":"e6:7c:02:8e:e8:7e"}'   ("null" for host-gw)
      flannel.alpha.coreos.com/public-ip: 192.168.1.10
      flannel.alpha.coreos.com/kube-subnet-manager: "true"

  written with a strategic-merge patch of nodes/NAME/status (flannel's RBAC grants only that).
  `public-ip-overwrite` (set by an operator for a NATed node) replaces the address we advertise;
  `node-public-ip` replaces --public-ip as the address we pick.
- Peers are the other Nodes with `kube-subnet-manager: "true"`, a podCIDR and those annotations; a change
  of backend-type, backend-data or public-ip is an "added" event (flannel's rule), a vanished node a
  "removed" one carrying the lease as last seen. A node whose annotations cannot be read is logged by
  name and skipped; it does not stop the others.

Leases here have no TTL and are never renewed (flannel's RenewLease is unimplemented in kube mode).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from podnet.api.loader import parse_object
from podnet.api.node import Node
from podnet.errors import PodnetError, Problem, ValidationError
from podnet.overlay.lease import BackendData, Lease, LeaseEvent, go_json
from podnet.overlay.netconf import NetConf
from podnet.source.base import Source

log = logging.getLogger(__name__)

DEFAULT_PREFIX = "flannel.alpha.coreos.com"
DEFAULT_NET_CONFIG_PATH = "/etc/kube-flannel/net-conf.json"
WAIT_LOG_EVERY = 10.0

_DOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)+$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?-?$")


@dataclass(frozen=True)
class Annotations:
    """The annotation keys for a prefix, as flannel's newAnnotations builds them."""

    backend_type: str
    backend_data: str
    public_ip: str
    subnet_manager: str
    node_public_ip: str
    public_ip_overwrite: str

    @staticmethod
    def for_prefix(prefix: str = DEFAULT_PREFIX) -> Annotations:
        """`a.b` and `a.b/` give `a.b/<name>`; `a.b/x` and `a.b/x-` give `a.b/x-<name>`. Raises
        ValidationError for anything else (no dot in the domain, upper case, more than one slash)."""
        domain, _, name = prefix.partition("/")
        bad = "/" in name or not _DOMAIN.match(domain) or (name and not _NAME.match(name))
        if bad:
            raise ValidationError([Problem("--kube-annotation-prefix", prefix,
                                           "must be a lower-case DNS domain with a dot, optionally /name")])
        head = f"{domain}/" if not name else f"{domain}/{name if name.endswith('-') else name + '-'}"
        return Annotations(*(head + n for n in ("backend-type", "backend-data", "public-ip", "kube-subnet-manager",
                                                 "node-public-ip", "public-ip-overwrite")))


def own_annotations(ann: Annotations, lease: Lease) -> dict[str, str]:
    """Our node's annotations, as flanneld writes them (backend-data is Go's json.Marshal of the raw
    message: compact, "null" when a backend has none)."""
    return {
        ann.backend_data: go_json(lease.backend_data),
        ann.backend_type: lease.backend_type or "",
        ann.subnet_manager: "true",
        ann.public_ip: str(lease.public_ip),
    }


class NodeLeaseError(PodnetError, ValueError):
    """A node whose flannel annotations or podCIDR cannot be used (logged with its name, skipped)."""


def pod_cidr(node: Node) -> ipaddress.IPv4Network | None:
    """The node's IPv4 pod CIDR: spec.podCIDRs' first IPv4 entry, else spec.podCIDR; None if unassigned."""
    name = node.name
    cidrs = list(node.spec.pod_cidrs) or ([node.spec.pod_cidr] if node.spec.pod_cidr else [])
    for c in cidrs:
        try:
            net = ipaddress.ip_network(c, strict=True)
        except (TypeError, ValueError) as e:
            raise NodeLeaseError(f"node {name!r}: spec.podCIDR {c!r}: not a CIDR") from e
        if net.version == 4:
            return net
    return None


def lease_of(node: Node, ann: Annotations) -> Lease | None:
    """A peer's lease from its Node, or None if it is not (yet) a flannel node. Raises NodeLeaseError."""
    name = node.name
    a = node.metadata.annotations
    if a.get(ann.subnet_manager) != "true":
        return None
    if not a.get(ann.backend_type) or not a.get(ann.public_ip) or ann.backend_data not in a:
        return None  # flannel ignores nodes lacking the annotations
    subnet = pod_cidr(node)
    if subnet is None:
        return None
    try:
        data: BackendData = json.loads(a[ann.backend_data])
    except ValueError as e:
        raise NodeLeaseError(f"node {name!r}: annotation {ann.backend_data}: {a[ann.backend_data]!r}: not JSON") from e
    if data is not None and not isinstance(data, dict):
        raise NodeLeaseError(f"node {name!r}: annotation {ann.backend_data}: {a[ann.backend_data]!r}: not an object")
    try:
        public_ip = ipaddress.IPv4Address(a[ann.public_ip])
    except ValueError as e:
        raise NodeLeaseError(f"node {name!r}: annotation {ann.public_ip}: {a[ann.public_ip]!r}: not an IPv4 "
                             "address") from e
    return Lease(subnet=subnet, public_ip=public_ip, backend_type=a[ann.backend_type], backend_data=data)


class KubeSubnetManager:
    """Our Node and everyone else's, from a source's Node informer (kube or store)."""

    def __init__(self, source: Source, node: str, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.source = source
        self.node = node
        self.ann = Annotations.for_prefix(prefix)
        self._lock = threading.Lock()
        self._peers: dict[str, Lease] = {}  # node name -> lease as last reported
        self._handler: Callable[[list[LeaseEvent]], None] | None = None
        self._own: Node | None = None
        self._own_changed = threading.Event()
        self.on_own: Callable[[Node], None] | None = None
        self.informer = source.informer("Node", self._decode, self._on_change, name="overlay nodes")

    @staticmethod
    def _decode(doc: dict[str, Any]) -> Node:
        """Through the one loader path (shapes only, as stored objects are read everywhere)."""
        node = parse_object(doc)
        if not isinstance(node, Node) or not node.name:
            raise NodeLeaseError(f"not a Node with a name: {node.ref}")
        return node

    def start(self) -> None:
        self.informer.start()

    def stop(self) -> None:
        self.informer.stop()

    # ---- our node -----------------------------------------------------------------------------------

    def wait_for_node(self, stopping: threading.Event, timeout: float | None = None) -> Node:
        """Our Node once it has a pod CIDR. Says every WAIT_LOG_EVERY seconds what it waits for."""
        deadline = None if timeout is None else time.monotonic() + timeout
        last_said = -1e9
        while True:
            with self._lock:
                own = self._own
            why = None
            if not self.informer.synced:
                why = f"waiting for the first list of Nodes from {self.source.describe()}"
            elif own is None:
                why = f'node "{self.node}" not found (is --node / NODE_NAME the Node\'s name?)'
            else:
                try:
                    if pod_cidr(own) is not None:
                        return own
                except NodeLeaseError as e:
                    raise PodnetError(str(e)) from e
                why = (f'node "{self.node}" pod cidr not assigned: waiting for spec.podCIDR (assigned by '
                       "kube-controller-manager --allocate-node-cidrs, or the lab's node IPAM)")
            if time.monotonic() - last_said >= WAIT_LOG_EVERY:
                log.warning("%s", why)
                last_said = time.monotonic()
            if deadline is not None and time.monotonic() >= deadline:
                raise PodnetError(why)
            self._own_changed.wait(0.5)
            self._own_changed.clear()
            if stopping.is_set():
                raise PodnetError(f"stopped while {why}")

    def public_ip(self, own: Node, given: str | None) -> str | None:
        """node-public-ip wins over --public-ip (flannel: the node annotation overrides the flag)."""
        return own.metadata.annotations.get(self.ann.node_public_ip) or given

    def acquire(self, conf: NetConf, own: Node, public_ip: ipaddress.IPv4Address, *,
                backend_type: str, backend_data: BackendData) -> Lease:
        """Our lease = our podCIDR, advertised in our annotations (only written when they differ)."""
        subnet = pod_cidr(own)
        assert subnet is not None and conf.network is not None
        if not subnet.subnet_of(conf.network):
            raise PodnetError(f'subnet "{conf.network}" specified in the flannel net config doesn\'t contain '
                              f'"{subnet}" PodCIDR of the "{self.node}" node')
        have = own.metadata.annotations
        overwrite = have.get(self.ann.public_ip_overwrite)
        if overwrite:
            try:
                public_ip = ipaddress.IPv4Address(overwrite)
            except ValueError:
                log.error("node %s: annotation %s: %r: not an IPv4 address; advertising %s", self.node,
                          self.ann.public_ip_overwrite, overwrite, public_ip)
        lease = Lease(subnet=subnet, public_ip=public_ip, backend_type=backend_type, backend_data=backend_data)
        want = own_annotations(self.ann, lease)
        if any(have.get(k) != v for k, v in want.items()):
            self.source.patch_node_status(self.node, {"metadata": {"annotations": want}})
            log.info("node %s: annotated %s", self.node, ", ".join(f"{k}={v}" for k, v in want.items()))
        return lease

    def mark_network_available(self) -> None:
        """flannel's CompleteLease in kube mode: NetworkUnavailable=False on our node."""
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        cond = {"type": "NetworkUnavailable", "status": "False", "reason": "FlannelIsUp",
                "message": "Flannel is running on this node", "lastTransitionTime": now, "lastHeartbeatTime": now}
        try:
            self.source.patch_node_status(self.node, {"status": {"conditions": [cond]}})
        except PodnetError as e:
            log.warning("node %s: could not set NetworkUnavailable=False: %s", self.node, e)

    # ---- peers --------------------------------------------------------------------------------------

    def watch(self, handler: Callable[[list[LeaseEvent]], None]) -> None:
        """Report peers to handler from now on: every known peer at once as added, then changes."""
        with self._lock:
            self._handler = handler
            events = [LeaseEvent("added", lease) for lease in self._peers.values()]
        if events:
            handler(events)

    def _on_change(self, kind: str, old: Node | None, new: Node | None) -> None:
        node = new if new is not None else old
        assert node is not None
        name = node.name
        if name == self.node:
            with self._lock:
                self._own = new
            self._own_changed.set()
            if new is not None and self.on_own is not None:
                self.on_own(new)
            return
        lease: Lease | None = None
        if new is not None:
            try:
                lease = lease_of(new, self.ann)
            except NodeLeaseError as e:
                log.error("%s; skipping it", e)
                return  # keep what we had for it: a bad edit must not cut the node off
        with self._lock:
            before = self._peers.get(name)
            events: list[LeaseEvent] = []
            if lease is None:
                if before is not None:
                    del self._peers[name]
                    events.append(LeaseEvent("removed", before))
            elif before is None or not before.attrs_equal(lease) or before.subnet != lease.subnet:
                if before is not None and before.subnet != lease.subnet:
                    events.append(LeaseEvent("removed", before))
                self._peers[name] = lease
                events.append(LeaseEvent("added", lease))
            handler = self._handler
        if events and handler is not None:
            handler(events)


__all__ = ["Annotations", "DEFAULT_NET_CONFIG_PATH", "DEFAULT_PREFIX", "KubeSubnetManager", "NodeLeaseError",
           "lease_of", "own_annotations", "pod_cidr"]
