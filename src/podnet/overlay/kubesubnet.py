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
- IPv6 (net-conf EnableIPv6): our IPv6 subnet is the IPv6 entry of `spec.podCIDRs`, and we also write
  `backend-v6-data` and `public-ipv6` (with `node-public-ipv6` / `public-ipv6-overwrite` as their inputs).
  An IPv6-only config (EnableIPv4: false) writes only those two, not backend-data / public-ip.
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
from typing import Any, TypeVar

from podnet.api.loader import parse_object
from podnet.api.node import Node
from podnet.errors import PodnetError, Problem, ValidationError
from podnet.overlay.lease import NO_PUBLIC_IP, NO_SUBNET, BackendData, Lease, LeaseEvent, go_json
from podnet.overlay.netconf import NetConf
from podnet.source.base import Source

_Addr = TypeVar("_Addr", ipaddress.IPv4Address, ipaddress.IPv6Address)
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
    backend_v6_data: str = ""
    public_ipv6: str = ""
    node_public_ipv6: str = ""
    public_ipv6_overwrite: str = ""

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
                                                 "node-public-ip", "public-ip-overwrite", "backend-v6-data",
                                                 "public-ipv6", "node-public-ipv6", "public-ipv6-overwrite")))


def own_annotations(ann: Annotations, lease: Lease) -> dict[str, str]:
    """Our node's annotations, as flanneld writes them (backend-data is Go's json.Marshal of the raw
    message: compact, "null" when a backend has none)."""
    out = {ann.backend_type: lease.backend_type or "", ann.subnet_manager: "true"}
    if lease.has_v4:
        out[ann.backend_data] = go_json(lease.backend_data)
        out[ann.public_ip] = str(lease.public_ip)
    if lease.subnet_v6 is not None and lease.public_ipv6 is not None:
        out[ann.backend_v6_data] = go_json(lease.backend_v6_data)
        out[ann.public_ipv6] = str(lease.public_ipv6)
    return out


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


def pod_cidr_v6(node: Node) -> ipaddress.IPv6Network | None:
    """The node's IPv6 pod CIDR: the IPv6 entry of spec.podCIDRs (or spec.podCIDR); None if unassigned."""
    cidrs = list(node.spec.pod_cidrs) or ([node.spec.pod_cidr] if node.spec.pod_cidr else [])
    for c in cidrs:
        try:
            net = ipaddress.ip_network(c, strict=True)
        except (TypeError, ValueError) as e:
            raise NodeLeaseError(f"node {node.name!r}: spec.podCIDRs {c!r}: not a CIDR") from e
        if isinstance(net, ipaddress.IPv6Network):
            return net
    return None


def pod_cidrs(node: Node, conf: NetConf) -> tuple[ipaddress.IPv4Network, ipaddress.IPv6Network | None] | None:
    """Our lease's (IPv4 subnet or NO_SUBNET, IPv6 subnet or None) for the families the config enables;
    None while a needed one is unassigned."""
    v4 = pod_cidr(node) if conf.enable_ipv4 else NO_SUBNET
    v6 = pod_cidr_v6(node) if conf.enable_ipv6 else None
    if v4 is None or (conf.enable_ipv6 and v6 is None):
        return None
    return v4, v6


def _json_annotation(name: str, a: dict[str, str], key: str) -> BackendData:
    try:
        data: BackendData = json.loads(a[key])
    except ValueError as e:
        raise NodeLeaseError(f"node {name!r}: annotation {key}: {a[key]!r}: not JSON") from e
    if data is not None and not isinstance(data, dict):
        raise NodeLeaseError(f"node {name!r}: annotation {key}: {a[key]!r}: not an object")
    return data


def _address_annotation(name: str, a: dict[str, str], key: str, kind: type[_Addr]) -> _Addr:
    try:
        return kind(a[key])
    except ValueError as e:
        family = "IPv4" if kind is ipaddress.IPv4Address else "IPv6"
        raise NodeLeaseError(f"node {name!r}: annotation {key}: {a[key]!r}: not an {family} address") from e


def lease_of(node: Node, ann: Annotations) -> Lease | None:
    """A peer's lease from its Node, or None if it is not (yet) a flannel node. Raises NodeLeaseError.
    An IPv4 part needs public-ip + backend-data + an IPv4 podCIDR, an IPv6 part public-ipv6 +
    backend-v6-data + an IPv6 podCIDR; a node with neither is not a peer."""
    name = node.name
    a = node.metadata.annotations
    if a.get(ann.subnet_manager) != "true" or not a.get(ann.backend_type):
        return None
    has4 = bool(a.get(ann.public_ip)) and ann.backend_data in a
    has6 = bool(a.get(ann.public_ipv6)) and ann.backend_v6_data in a
    subnet = pod_cidr(node) if has4 else None
    subnet_v6 = pod_cidr_v6(node) if has6 else None
    if subnet is None and subnet_v6 is None:
        return None  # flannel ignores nodes lacking the annotations or a podCIDR
    data = data6 = None
    public_ip, public_ipv6 = NO_PUBLIC_IP, None
    if subnet is not None:
        data = _json_annotation(name, a, ann.backend_data)
        public_ip = _address_annotation(name, a, ann.public_ip, ipaddress.IPv4Address)
    if subnet_v6 is not None:
        data6 = _json_annotation(name, a, ann.backend_v6_data)
        public_ipv6 = _address_annotation(name, a, ann.public_ipv6, ipaddress.IPv6Address)
    return Lease(subnet=subnet or NO_SUBNET, public_ip=public_ip, backend_type=a[ann.backend_type],
                 backend_data=data, public_ipv6=public_ipv6, backend_v6_data=data6, subnet_v6=subnet_v6)


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

    def wait_for_node(self, stopping: threading.Event, timeout: float | None = None,
                      conf: NetConf | None = None) -> Node:
        """Our Node once it has the pod CIDR(s) `conf` needs (an IPv4 one without conf). Says every
        WAIT_LOG_EVERY seconds what it waits for."""
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
                    if (pod_cidr(own) if conf is None else pod_cidrs(own, conf)) is not None:
                        return own
                except NodeLeaseError as e:
                    raise PodnetError(str(e)) from e
                which = "an IPv6 entry in spec.podCIDRs" if conf is not None and conf.enable_ipv6 else "spec.podCIDR"
                why = (f'node "{self.node}" pod cidr not assigned: waiting for {which} (assigned by '
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

    def public_ipv6(self, own: Node, given: str | None) -> str | None:
        """node-public-ipv6 wins over --public-ipv6."""
        return own.metadata.annotations.get(self.ann.node_public_ipv6) or given

    def acquire(self, conf: NetConf, own: Node, public_ip: ipaddress.IPv4Address, *,
                backend_type: str, backend_data: BackendData, public_ipv6: ipaddress.IPv6Address | None = None,
                backend_v6_data: BackendData = None) -> Lease:
        """Our lease = our podCIDR(s), advertised in our annotations (only written when they differ)."""
        cidrs = pod_cidrs(own, conf)
        assert cidrs is not None
        subnet, subnet_v6 = cidrs
        if conf.enable_ipv4 and conf.network is not None and not subnet.subnet_of(conf.network):
            raise PodnetError(f'subnet "{conf.network}" specified in the flannel net config doesn\'t contain '
                              f'"{subnet}" PodCIDR of the "{self.node}" node')
        if subnet_v6 is not None and conf.ipv6_network is not None and not subnet_v6.subnet_of(conf.ipv6_network):
            raise PodnetError(f'subnet "{conf.ipv6_network}" specified in the flannel net config doesn\'t contain '
                              f'"{subnet_v6}" IPv6 PodCIDR of the "{self.node}" node')
        if conf.enable_ipv6 and public_ipv6 is None:
            raise PodnetError(f"node {self.node}: the net-conf enables IPv6 but there is no public IPv6 "
                              "(--public-ipv6 or a global IPv6 address on --iface)")
        have = own.metadata.annotations
        overwrite = have.get(self.ann.public_ip_overwrite)
        if overwrite and conf.enable_ipv4:
            try:
                public_ip = ipaddress.IPv4Address(overwrite)
            except ValueError:
                log.error("node %s: annotation %s: %r: not an IPv4 address; advertising %s", self.node,
                          self.ann.public_ip_overwrite, overwrite, public_ip)
        overwrite6 = have.get(self.ann.public_ipv6_overwrite)
        if overwrite6 and conf.enable_ipv6:
            try:
                public_ipv6 = ipaddress.IPv6Address(overwrite6)
            except ValueError:
                log.error("node %s: annotation %s: %r: not an IPv6 address; advertising %s", self.node,
                          self.ann.public_ipv6_overwrite, overwrite6, public_ipv6)
        if not conf.enable_ipv4:
            public_ip, backend_data = NO_PUBLIC_IP, None
        lease = Lease(subnet=subnet, public_ip=public_ip, backend_type=backend_type, backend_data=backend_data,
                      public_ipv6=public_ipv6 if conf.enable_ipv6 else None,
                      backend_v6_data=backend_v6_data if conf.enable_ipv6 else None, subnet_v6=subnet_v6)
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
            elif before is None or not before.attrs_equal(lease) or before.ident != lease.ident:
                if before is not None and before.ident != lease.ident:
                    events.append(LeaseEvent("removed", before))
                self._peers[name] = lease
                events.append(LeaseEvent("added", lease))
            handler = self._handler
        if events and handler is not None:
            handler(events)


__all__ = ["Annotations", "DEFAULT_NET_CONFIG_PATH", "DEFAULT_PREFIX", "KubeSubnetManager", "NodeLeaseError",
           "lease_of", "own_annotations", "pod_cidr", "pod_cidr_v6", "pod_cidrs"]
