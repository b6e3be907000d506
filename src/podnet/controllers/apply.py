"""The write path of `podnet apply` and `podnet delete`: what the API server and its controllers do
between receiving objects and storing them, done in ONE store commit so that it is all-or-nothing.

1. defaulting (server-populated fields: clusterIPs, ipFamilies, policies, targetPort, uid, ...);
2. keeping what the user does not own: allocated clusterIP/nodePorts, a pod's nodeName and status
   when the manifest has none (the scheduler's and the kubelet's in a cluster, the lab's here);
3. allocation of ClusterIPs and NodePorts (controllers/allocators.py), each new allocation key written
   only-if-absent, released ones deleted;
4. the EndpointSlices derived from services and pods of every namespace the change touches
   (controllers/endpoints.py), so proxies only ever watch EndpointSlices.

Every op is conditional on the revision that was read; when another writer got in between, the commit
fails as a whole and the plan is made again from a fresh read.

What is read is proportional to the change, not to the store (see _View): applying one EndpointSlice
into a store of thousands of objects reads one key, not all of them.
"""

from __future__ import annotations

import json
import random
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal, TypeVar

from podnet.api import defaults
from podnet.api.deployment import Deployment
from podnet.api.endpointslice import EndpointSlice
from podnet.api.loader import from_json, to_json
from podnet.api.meta import Resource
from podnet.api.node import Node
from podnet.api.pod import Pod, PodStatus
from podnet.api.service import Service
from podnet.api.statefulset import StatefulSet
from podnet.controllers import ipfamilies
from podnet.controllers.allocators import AllocatorConfig, ClusterIPAllocator, NodePortAllocator
from podnet.controllers.endpoints import selector_matches, slice_ops
from podnet.controllers.writeindex import Index, index_for
from podnet.errors import (
    AllocationError,
    AlreadyExists,
    Conflict,
    NotFound,
    PodnetError,
    Problem,
    ValidationError,
)
from podnet.store import ConflictError, Delete, KeyValue, Op, Put, Store, keys

Action = Literal["created", "configured", "unchanged", "deleted"]
MAX_ATTEMPTS = 40
_T = TypeVar("_T")


@dataclass
class Result:
    obj: Resource
    action: Action

    def __str__(self) -> str:
        return f"{self.obj.kubectl_name} {self.action}"


# A group of keys under one parent larger than this is read with one list instead of one get per key.
_GET_LIMIT = 16
# More needles than this and a byte scan costs more than it saves: decode every candidate instead.
_NEEDLE_LIMIT = 32
# A change of more pods and services than this reads the touched namespaces whole rather than bucket by
# bucket: one list costs less than a few hundred bucket reads (10k pods into 10k services: 15 s against
# 21 s planned from the SQLite bucket table).
BULK_CHANGE = 256


@dataclass
class _View:
    """The store as one attempt reads it, updated as the plan proceeds.

    Reads are lazy and proportional to the change, not to the store: the keys of the objects applied or
    deleted, the allocation keys only when a service is involved, the nodes only when a pod is, and for
    the derived slices only the touched namespaces (see _Planner.derived_slices). Reads are not one
    snapshot, which is safe because every op is conditional on the revision of the key it writes, and
    outputs (the keys written) are always read before the inputs they are derived from: an input that
    changes after its output was read also moves that output (its writer rewrote it), so the commit fails
    and the plan is made again.
    """

    store: Store
    objects: dict[str, Resource] = field(default_factory=dict)  # key -> object, for keys in known
    revs: dict[str, int] = field(default_factory=dict)  # key -> mod_revision of stored keys in known
    known: set[str] = field(default_factory=set)  # keys read (or planned): objects/revs are their truth
    ips: dict[str, str] = field(default_factory=dict)  # clusterIP -> owner
    ports: dict[int, str] = field(default_factory=dict)  # nodePort -> owner
    alloc_revs: dict[str, int] = field(default_factory=dict)
    allocations_read: bool = False
    _absent_ips: set[str] = field(default_factory=set)  # point reads that found no record
    _absent_ports: set[int] = field(default_factory=set)
    nodes: set[str] | None = None
    index: Index | None = None  # writeindex.index_for: the writer's watch cache or the store's bucket table
    _use_index: bool | None = None

    @property
    def indexed(self) -> Index | None:
        """The index, if there is one and it has caught up with the store (asked once per attempt)."""
        if self._use_index is None:
            self._use_index = self.index is not None and self.index.caught_up()
        return self.index if self._use_index else None

    def bypass_index(self) -> None:
        """Read the store itself for the rest of this attempt (a bulk change lists faster)."""
        self._use_index = False

    def fetch(self, wanted: Iterable[str]) -> None:
        """Read the given resource keys (once each)."""
        groups: dict[str, list[str]] = {}
        for key in wanted:
            if key not in self.known:
                groups.setdefault(key[:key.rindex("/") + 1], []).append(key)
        for parent, group in groups.items():
            found: dict[str, KeyValue] = {}
            if len(group) > _GET_LIMIT:
                members = set(group)
                found = {kv.key: kv for kv in self.store.list(parent).items if kv.key in members}
            else:
                for key in group:
                    kv = self.store.get(key)
                    if kv is not None:
                        found[key] = kv
            for key in group:
                self.known.add(key)
                kv = found.get(key)
                if kv is None:
                    continue
                self.revs[key] = kv.mod_revision
                try:
                    self.objects[key] = from_json(kv.value)
                except PodnetError:
                    pass  # an undecodable object cannot be reasoned about; writes to it still carry its revision

    def read_allocations(self) -> None:
        if self.allocations_read:
            return
        self.allocations_read = True
        for kv in self.store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items:
            self.ips[kv.key[len(keys.ALLOC_CLUSTER_IP_PREFIX):]] = kv.value.decode(errors="replace")
            self.alloc_revs[kv.key] = kv.mod_revision
        for kv in self.store.list(keys.ALLOC_NODE_PORT_PREFIX).items:
            try:
                self.ports[int(kv.key[len(keys.ALLOC_NODE_PORT_PREFIX):])] = kv.value.decode(errors="replace")
            except ValueError:
                continue
            self.alloc_revs[kv.key] = kv.mod_revision

    def ip_owner(self, ip: str) -> str | None:
        """The owner of one ClusterIP's record: one point read (once), unless every record was read."""
        if not self.allocations_read and ip not in self.ips and ip not in self._absent_ips:
            kv = self.store.get(keys.cluster_ip(ip))
            if kv is None:
                self._absent_ips.add(ip)
            else:
                self.ips[ip] = kv.value.decode(errors="replace")
                self.alloc_revs[kv.key] = kv.mod_revision
        return self.ips.get(ip)

    def port_owner(self, port: int) -> str | None:
        if not self.allocations_read and port not in self.ports and port not in self._absent_ports:
            kv = self.store.get(keys.node_port(port))
            if kv is None:
                self._absent_ports.add(port)
            else:
                self.ports[port] = kv.value.decode(errors="replace")
                self.alloc_revs[kv.key] = kv.mod_revision
        return self.ports.get(port)

    def all_ips(self) -> dict[str, str]:
        self.read_allocations()
        return self.ips

    def all_ports(self) -> dict[int, str]:
        self.read_allocations()
        return self.ports

    def node_names(self) -> set[str]:
        """Names of the stored nodes (as planned so far), read once."""
        if self.nodes is None:
            prefix = keys.kind_prefix("Node")
            names = set()
            index = self.indexed
            stored = index.members([("node",)]) if index is not None else self.store.list(prefix).items
            for kv in stored:
                if kv.key in self.known:
                    continue
                try:
                    obj = from_json(kv.value)
                except PodnetError:
                    continue
                if isinstance(obj, Node):
                    names.add(obj.name)
            names |= {o.name for k, o in self.objects.items() if k.startswith(prefix) and isinstance(o, Node)}
            self.nodes = names
        return self.nodes

    def stored(self, kind: str, namespace: str) -> list[KeyValue]:
        """The raw stored objects of a kind in a namespace, except keys this view already knows."""
        return self.unknown(self.store.list(keys.kind_prefix(kind, namespace)).items)

    def unknown(self, kvs: Iterable[KeyValue]) -> list[KeyValue]:
        """kvs except keys this view already knows (read or planned)."""
        return [kv for kv in kvs if kv.key not in self.known]

    def planned(self, kind: str, namespace: str) -> list[tuple[str, Resource]]:
        """The known objects of a kind in a namespace, as planned so far."""
        prefix = keys.kind_prefix(kind, namespace)
        return [(k, o) for k, o in self.objects.items() if k.startswith(prefix)]


def _needle(text: str) -> bytes:
    """How a string appears in stored JSON that has no escapes in it."""
    return b'"' + text.encode() + b'"'


def _prefilter(needles: set[bytes]) -> Callable[[bytes], bool]:
    """A cheap test that is False only if a JSON value surely has none of the needles as a string.

    JSON without a backslash has no escapes, so each of its strings appears literally between quotes;
    with one, the value is always a candidate. Too many needles: everything is a candidate.
    """
    if len(needles) > _NEEDLE_LIMIT:
        return lambda _value: True
    wanted = (b"\\", *sorted(needles))

    def may_contain(value: bytes) -> bool:
        for needle in wanted:  # a plain loop: cheaper than a regex alternation or any() here
            if needle in value:
                return True
        return False

    return may_contain


def _loads(value: bytes) -> dict[str, object] | None:
    try:
        data = json.loads(value)
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        return None
    return data if isinstance(data, dict) else None


def _str_dict(data: dict[str, object], *path: str) -> dict[str, str]:
    """data[path...] if it is a dict of strings, else {} (raw JSON from the store may be anything)."""
    cur: object = data
    for p in path:
        cur = cur.get(p) if isinstance(cur, dict) else None
    if not isinstance(cur, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in cur.items()):
        return {}
    return cur


def key_of(obj: Resource) -> str:
    return keys.resource(obj.KIND, obj.namespace, obj.name)


def _comparable(obj: Resource) -> dict[str, object]:
    d = obj.to_dict()
    d.get("metadata", {}).pop("resourceVersion", None)
    return d


# ---- defaulting ---------------------------------------------------------------------------------------


def default_service(svc: Service) -> None:
    """The fields the API server fills in on a Service (pkg/apis/core/v1/defaults.go and the registry)."""
    s = svc.spec
    for p in s.ports:
        if p.target_port is None or p.target_port == 0 or p.target_port == "":
            p.target_port = p.port
    if s.type == "ExternalName":
        # a DNS name only: no virtual IP, no IP families, no traffic policies (defaults.go skips them too)
        return
    # clusterIPs, ipFamilies and ipFamilyPolicy depend on the stored object and the cluster: the planner
    # sets them (controllers/ipfamilies.py)
    if not s.internal_traffic_policy:
        s.internal_traffic_policy = defaults.DEFAULT_TRAFFIC_POLICY
    if s.type in ("NodePort", "LoadBalancer") and not s.external_traffic_policy:
        s.external_traffic_policy = defaults.DEFAULT_TRAFFIC_POLICY
    if s.session_affinity == "ClientIP":
        from podnet.api.service import ClientIPConfig, SessionAffinityConfig

        if s.session_affinity_config is None:
            s.session_affinity_config = SessionAffinityConfig()
        if s.session_affinity_config.client_ip is None:
            s.session_affinity_config.client_ip = ClientIPConfig()
        if s.session_affinity_config.client_ip.timeout_seconds is None:
            s.session_affinity_config.client_ip.timeout_seconds = defaults.DEFAULT_SESSION_AFFINITY_TIMEOUT


def default_statefulset(sts: StatefulSet) -> None:
    """apps/v1 defaults (pkg/apis/apps/v1/defaults.go) for the fields the controller reads."""
    from podnet.api.statefulset import ORDERED_READY, ROLLING_UPDATE, RollingUpdateStatefulSetStrategy

    s = sts.spec
    if s.replicas is None:
        s.replicas = 1
    if not s.pod_management_policy:
        s.pod_management_policy = ORDERED_READY
    if not s.update_strategy.type:
        s.update_strategy.type = ROLLING_UPDATE
    if s.update_strategy.type == ROLLING_UPDATE:
        if s.update_strategy.rolling_update is None:
            s.update_strategy.rolling_update = RollingUpdateStatefulSetStrategy()
        if s.update_strategy.rolling_update.partition is None:
            s.update_strategy.rolling_update.partition = 0
    if s.revision_history_limit is None:
        s.revision_history_limit = 10


# ---- the plan -----------------------------------------------------------------------------------------


class _Planner:
    def __init__(self, view: _View, config: AllocatorConfig, rng: random.Random) -> None:
        self.view = view
        self.config = config
        self.rng = rng
        self.ops: dict[str, Op] = {}
        self.problems: list[Problem] = []
        self.results: list[Result] = []
        self.affected: set[tuple[str, str]] = set()  # (namespace, service) whose slices to recompute
        self.touched_pods: list[tuple[str, dict[str, str]]] = []
        self.batch_nodes: set[str] = set()  # nodes applied together with pods count as known
        self._ip_allocs: dict[str, ClusterIPAllocator] = {}
        self._port_alloc: NodePortAllocator | None = None

    # -- allocation keys

    def ip_alloc(self, family: str) -> ClusterIPAllocator:
        """The allocator of one of the cluster's families (ipfamilies.init_families let no other through)."""
        if family not in self._ip_allocs:
            cidr = self.config.cidr_of(family)
            assert cidr is not None, family
            self._ip_allocs[family] = ClusterIPAllocator(str(cidr), lookup=self.view.ip_owner,
                                                         load_all=self.view.all_ips)
        return self._ip_allocs[family]

    @property
    def port_alloc(self) -> NodePortAllocator:
        if self._port_alloc is None:
            self._port_alloc = NodePortAllocator(self.config.node_port_range, lookup=self.view.port_owner,
                                                 load_all=self.view.all_ports)
        return self._port_alloc

    def _claim(self, key: str, owner: str, current_owner: str | None) -> None:
        if current_owner == owner:
            self.ops.pop(key, None)  # re-claimed within this plan after a release: keep the stored key
            return
        self.ops[key] = Put(key, owner.encode(), if_absent=True)

    def _release(self, key: str, owner: str, current_owner: str | None) -> None:
        if current_owner != owner:
            return
        if key in self.view.alloc_revs:
            self.ops[key] = Delete(key, if_revision=self.view.alloc_revs[key])
        else:
            self.ops.pop(key, None)

    def _allocate_service(self, new: Service, old: Service | None) -> None:
        owner = new.ref
        s = new.spec
        before = len(self.problems)
        # Cluster IPs: one per IP family (ipfamilies.py decides the families), the primary immutable once
        # set, the secondary added or released only with the policy; headless and ExternalName services
        # have none (a Service that becomes ExternalName gives its addresses back, as the API server does).
        old_svc = old if old is not None and old.spec.type != "ExternalName" else None
        old_ips = old_svc.cluster_ips if old_svc is not None else []
        if s.type == "ExternalName":
            for ip in old_ips:
                self._release(keys.cluster_ip(ip), owner, self.view.ip_owner(ip))
            s.cluster_ip, s.cluster_ips, s.ip_families, s.ip_family_policy = None, [], [], None
        else:
            ipfamilies.prepare(s, old_svc.spec if old_svc is not None else None)
            problems = ipfamilies.init_families(new, old_svc, self.config.families)
            if problems:
                self.problems.extend(problems)
                return
            if s.cluster_ip == "None" or s.cluster_ips == ["None"]:
                s.cluster_ip, s.cluster_ips = "None", ["None"]
            else:
                self._allocate_cluster_ips(new, old_ips)

        # NodePorts: a port without one keeps what the stored object had for the same port/protocol.
        old_ports: dict[tuple[int, str], int] = {}
        if old is not None:
            old_ports = {(p.port, p.protocol): p.node_port for p in old.spec.ports if p.node_port}
        wanted: set[int] = set()
        if new.uses_node_ports:
            for i, p in enumerate(s.ports):
                field_name = f"spec.ports[{i}].nodePort"
                if not p.node_port and (p.port, p.protocol) in old_ports:
                    p.node_port = old_ports[(p.port, p.protocol)]
                if p.node_port:
                    if p.node_port in wanted:
                        continue  # same number for TCP and UDP of one service: one allocation
                    reason = self.port_alloc.check(p.node_port, owner)
                    if reason:
                        self.problems.append(Problem(field_name, p.node_port, reason, owner))
                        continue
                    self.port_alloc.take(p.node_port, owner)
                else:
                    p.node_port = self.port_alloc.allocate(owner, field_name, self.rng)
                wanted.add(p.node_port)
            if s.type == "LoadBalancer" and s.external_traffic_policy == "Local":
                old_hc = old.spec.health_check_node_port if old is not None else None
                if not s.health_check_node_port and old_hc:
                    s.health_check_node_port = old_hc
                if s.health_check_node_port:
                    reason = self.port_alloc.check(s.health_check_node_port, owner)
                    if reason and s.health_check_node_port not in wanted:
                        self.problems.append(Problem("spec.healthCheckNodePort", s.health_check_node_port,
                                                     reason, owner))
                    else:
                        self.port_alloc.take(s.health_check_node_port, owner)
                else:
                    s.health_check_node_port = self.port_alloc.allocate(owner, "spec.healthCheckNodePort",
                                                                        self.rng)
                wanted.add(s.health_check_node_port)
        else:
            for p in s.ports:
                p.node_port = None
        if len(self.problems) > before:
            return
        for port in wanted:
            self._claim(keys.node_port(port), owner, self.view.port_owner(port))
        for port in self._owned_ports(old):
            if port not in wanted:
                self._release(keys.node_port(port), owner, self.view.port_owner(port))

    def _allocate_cluster_ips(self, svc: Service, old_ips: list[str]) -> None:
        """One address per family in ipFamilies: kept from the stored object, the one asked for, or a
        free one; a stored address the Service no longer has (a downgrade) is released."""
        s, owner = svc.spec, svc.ref
        asked = list(s.cluster_ips)
        got: list[str] = []
        for i, fam in enumerate(s.ip_families):
            alloc = self.ip_alloc(fam)
            field_name = "spec.clusterIP" if i == 0 else f"spec.clusterIPs[{i}]"
            want = asked[i] if i < len(asked) else ""
            if i < len(old_ips) and want in ("", old_ips[i]):
                ip = old_ips[i]
                if self.view.ip_owner(ip) is None:  # its record went missing: claim it again
                    alloc.take(ip, owner)
                    self._claim(keys.cluster_ip(ip), owner, None)
            elif want:
                reason = alloc.check(want, owner)
                if reason:
                    self.problems.append(Problem(field_name, want, reason, owner))
                    continue
                ip = want
                alloc.take(ip, owner)
                self._claim(keys.cluster_ip(ip), owner, self.view.ip_owner(ip))
            else:
                ip = alloc.allocate(owner, self.rng, field_name)
                self._claim(keys.cluster_ip(ip), owner, None)
            got.append(ip)
        s.cluster_ips = got
        s.cluster_ip = got[0] if got else None
        for ip in old_ips:
            if ip not in got:
                self._release(keys.cluster_ip(ip), owner, self.view.ip_owner(ip))

    def _release_all_of(self, owner: str, keep_ips: Iterable[str] = (), keep_ports: Iterable[int] = ()) -> None:
        """Release every allocation record naming owner, except those kept."""
        self.view.read_allocations()
        kept_ips, kept_ports = set(keep_ips), set(keep_ports)
        for ip, who in list(self.view.ips.items()):
            if who == owner and ip not in kept_ips:
                self._release(keys.cluster_ip(ip), owner, who)
        for port, who in list(self.view.ports.items()):
            if who == owner and port not in kept_ports:
                self._release(keys.node_port(port), owner, who)

    @staticmethod
    def _owned_ports(svc: Service | None) -> set[int]:
        if svc is None:
            return set()
        ports = {p.node_port for p in svc.spec.ports if p.node_port}
        if svc.spec.health_check_node_port:
            ports.add(svc.spec.health_check_node_port)
        return ports

    # -- objects

    def apply(self, obj: Resource) -> None:
        key = key_of(obj)
        old = self.view.objects.get(key)
        new = obj.model_copy(deep=True)
        if isinstance(new, Service):
            default_service(new)
            self._allocate_service(new, old if isinstance(old, Service) else None)
            if old is None and key in self.view.revs and not self.problems:
                # it replaces an undecodable object: free what that one held and this one does not
                self._release_all_of(new.ref, new.cluster_ips or [new.spec.cluster_ip or ""],
                                     self._owned_ports(new))
            if isinstance(old, Service) and "status" not in obj.model_fields_set:
                # status.loadBalancer is the load-balancer controller's, as a pod's status is the kubelet's:
                # a manifest without one keeps what is stored (the API server never takes status from a
                # write to the object itself). A status given, even empty, is taken (a status write).
                new.status = old.status.model_copy(deep=True)
        if isinstance(new, StatefulSet):
            default_statefulset(new)
            if isinstance(old, StatefulSet) and "status" not in obj.model_fields_set:
                new.status = old.status.model_copy(deep=True)
        if isinstance(new, Pod):
            self._pod(new, old if isinstance(old, Pod) else None)
        meta = new.metadata
        meta.resource_version = None
        if old is not None:
            meta.uid = old.metadata.uid
            meta.creation_timestamp = old.metadata.creation_timestamp
        else:
            meta.uid = meta.uid or str(uuid.uuid4())
            meta.creation_timestamp = meta.creation_timestamp or datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        if isinstance(new, Deployment | StatefulSet):
            # a workload's spec version, which its status.observedGeneration answers (apps/v1 strategy)
            prev = old.metadata.generation if old is not None else None
            changed = old is None or old.to_dict().get("spec") != new.to_dict().get("spec")
            meta.generation = (prev or 0) + 1 if changed else prev
        self._touch(old, new)
        if old is not None and _comparable(old) == _comparable(new):
            self.results.append(Result(new, "unchanged"))
            return
        self.ops[key] = Put(key, to_json(new), if_revision=self.view.revs.get(key, 0))
        self.view.objects[key] = new
        self.results.append(Result(new, "configured" if old is not None or key in self.view.revs else "created"))

    def _pod(self, new: Pod, old: Pod | None) -> None:
        """A pod's node and status belong to the scheduler and the kubelet (the lab's agents here).

        With nodes in the store (a cluster runs pods), podnet acts like the API server: spec.nodeName
        must name a known node, and a manifest's status is ignored (a new pod starts Pending; an update
        keeps the live status). Without nodes there is nobody to run pods, so a manifest's status is
        taken as given on create: that is how examples/webapp1 shows endpoints without a lab.
        """
        nodes = sorted(self.view.node_names() | self.batch_nodes)
        if old is not None:
            if not new.spec.node_name:
                new.spec.node_name = old.spec.node_name
            new.status = old.status.model_copy(deep=True)
        elif nodes:
            new.status = PodStatus(phase="Pending")
        if nodes and new.spec.node_name and new.spec.node_name not in nodes and (
                old is None or new.spec.node_name != old.spec.node_name):
            self.problems.append(Problem("spec.nodeName", new.spec.node_name,
                                         f"no such node (nodes: {', '.join(nodes)})", new.ref))

    def delete(self, kind: str, namespace: str | None, name: str) -> bool:
        key = keys.resource(kind, namespace, name)
        if key not in self.view.revs:
            return False
        old = self.view.objects.pop(key, None)
        self.ops[key] = Delete(key, if_revision=self.view.revs[key])
        if old is None:
            # Undecodable: deleted by key all the same. What it held is still known: every allocation
            # record names its owner, and its derived slices are found by the service's name.
            old = _stub(kind, namespace, name)
            if isinstance(old, Service):
                self._release_all_of(old.ref)
                self.affected.add((old.namespace or "default", old.name))
            self.results.append(Result(old, "deleted"))
            return True
        if isinstance(old, Service):
            owner = old.ref
            for ip in old.cluster_ips:
                self._release(keys.cluster_ip(ip), owner, self.view.ip_owner(ip))
            for port in self._owned_ports(old):
                self._release(keys.node_port(port), owner, self.view.port_owner(port))
        self._touch(old, None)
        if old is not None:
            self.results.append(Result(old, "deleted"))
        return True

    def _touch(self, old: Resource | None, new: Resource | None) -> None:
        """Note what a change old -> new may alter: the service itself, or the services selecting a pod."""
        for obj in (old, new):
            if isinstance(obj, Service):
                self.affected.add((obj.namespace or "default", obj.name))
            elif isinstance(obj, Pod):
                self.touched_pods.append((obj.namespace or "default", dict(obj.metadata.labels)))

    def derived_slices(self) -> None:
        """Add the ops that bring the derived slices of every affected service up to date.

        Only the touched namespaces are read, outputs before inputs (see _View): their slices, then
        (when pods were touched) their services, then (when some service is affected) their pods. Stored
        JSON is decoded into models only where it can matter: a byte pre-filter on the label values or
        service names in question, then json.loads and a selector check, then pydantic for the survivors.
        """
        namespaces = {ns for ns, _ in self.affected} | {ns for ns, _ in self.touched_pods}
        if not namespaces:
            return
        if len(self.touched_pods) + len(self.affected) > BULK_CHANGE:
            self.view.bypass_index()
        services: dict[tuple[str, str], Service] = {}
        for ns in sorted(namespaces):
            for _, obj in self.view.planned("Service", ns):
                if isinstance(obj, Service):
                    services[(ns, obj.name)] = obj
        index = self.view.indexed
        stored_services: dict[str, list[KeyValue]] | None = None
        if index is not None:
            raw_slices, stored_services = self._indexed_reads(index, namespaces, services)
        elif self.touched_pods:  # the affected services are known only after reading services: all slices first
            raw_slices = {ns: self.view.stored("EndpointSlice", ns) for ns in sorted(namespaces)}
        else:
            raw_slices = {ns: self._slices_named_for(ns, {n for sns, n in self.affected if sns == ns})
                          for ns in sorted(namespaces)}
        self._services_selecting_touched_pods(services, stored_services)
        if not self.affected:
            return
        pods = [pod for ns in sorted({ns for ns, _ in self.affected}) for pod in self._candidate_pods(ns, services)]
        existing: dict[str, tuple[EndpointSlice, int]] = {}
        for ns, items in raw_slices.items():
            existing |= self._candidate_slices(ns, items)
        scoped = [svc for ref, svc in services.items() if ref in self.affected]
        for op in slice_ops(scoped, pods, existing, self.affected):
            prior = self.ops.get(op.key)
            if isinstance(prior, Delete) and isinstance(op, Put):
                # the user deleted a slice the controller wants: rewrite it instead (upstream recreates it)
                op = Put(op.key, op.value, if_revision=prior.if_revision)
            elif isinstance(prior, Put) and isinstance(op, Delete):
                continue
            self.ops[op.key] = op

    def _indexed_reads(self, index: Index, namespaces: set[str], services: dict[tuple[str, str], Service],
                       ) -> tuple[dict[str, list[KeyValue]], dict[str, list[KeyValue]]]:
        """From the index, per namespace: the stored slices of every service this change may affect, and
        the stored services that may select a touched pod (their selector's smallest pair is one of the
        pod's labels).

        Outputs before inputs (see _View): the slices of the services the selector buckets name are read
        first, then the buckets are asked again for the services themselves; a service that appeared in
        between has its slices read and the buckets are asked once more, until they name nothing new.
        """
        raw_slices: dict[str, list[KeyValue]] = {}
        stored_services: dict[str, list[KeyValue]] = {}
        for ns in sorted(namespaces):
            selectors = {("selector", ns, k, v) for pns, labels in self.touched_pods if pns == ns
                         for k, v in labels.items()}
            names = {n for sns, n in self.affected if sns == ns} | {n for sns, n in services if sns == ns}
            names |= {_name(kv.key) for kv in index.members(selectors)}
            read: set[str] = set()
            slices: dict[str, KeyValue] = {}
            while True:
                todo = names - read
                for kv in self.view.unknown(index.members(
                        b for n in sorted(todo) for b in (("slice", ns, n), ("stem", ns, n[:57])))):
                    slices[kv.key] = kv
                read |= todo
                svcs = self.view.unknown(index.members(selectors))
                names = read | {_name(kv.key) for kv in svcs}
                if names <= read:
                    break
            raw_slices[ns] = list(slices.values())
            stored_services[ns] = svcs
        return raw_slices, stored_services

    def _slices_named_for(self, ns: str, names: set[str]) -> list[KeyValue]:
        """The stored slices of ns whose names start as a controller's slices of these services do.

        Controller-managed slices are named `<service[:57]>-<suffix>` (podnet's hash, upstream's
        generateName), so a prefix read per service finds every slice slice_ops may write or delete for
        it, at a cost that does not grow with the namespace. Many services: one list of the namespace.
        (A managed-by slice someone named otherwise is left to `podnet repair`.)
        """
        if len(names) > _GET_LIMIT:
            return self.view.stored("EndpointSlice", ns)
        prefix = keys.kind_prefix("EndpointSlice", ns)
        found: dict[str, KeyValue] = {}
        for name in sorted(names):
            for kv in self.view.store.list(prefix + name[:57] + "-").items:
                if kv.key not in self.view.known:
                    found[kv.key] = kv
        return list(found.values())

    def _services_selecting_touched_pods(self, services: dict[tuple[str, str], Service],
                                         stored: dict[str, list[KeyValue]] | None) -> None:
        """Add the services selecting a touched pod (old or new labels) to affected and to services.

        services holds the planned ones on entry; stored ones are those the index found (stored), or
        without an index every one of each touched namespace. An inverted
        index (namespace, label key, value) -> selectors keeps a bulk apply of many pods from comparing
        every pod with every service.
        """
        if not self.touched_pods:
            return
        by_ns: dict[str, list[dict[str, str]]] = {}
        for ns, labels in self.touched_pods:
            if labels:
                by_ns.setdefault(ns, []).append(labels)
        for ns, pod_labels in sorted(by_ns.items()):
            may_select = _prefilter({_needle(v) for labels in pod_labels for v in labels.values()})
            index: dict[tuple[str, str], list[tuple[dict[str, str], str | None, object]]] = {}
            for (sns, sname), svc in services.items():
                if sns == ns and svc.spec.selector:
                    index.setdefault(min(svc.spec.selector.items()), []).append((svc.spec.selector, sname, svc))
            for kv in stored.get(ns, []) if stored is not None else self.view.stored("Service", ns):
                if not may_select(kv.value):
                    continue
                data = _loads(kv.value)
                selector = _str_dict(data, "spec", "selector") if data is not None else {}
                if selector:
                    index.setdefault(min(selector.items()), []).append((selector, None, kv))
            for labels in pod_labels:
                for pair in labels.items():
                    for i, (selector, name, ref) in enumerate(index.get(pair, ())):
                        if not selector_matches(selector, labels):
                            continue
                        if name is None:  # a stored service: decode it now, once
                            assert isinstance(ref, KeyValue)
                            try:
                                obj = from_json(ref.value)
                            except PodnetError:
                                continue
                            if not isinstance(obj, Service):
                                continue
                            name = obj.name
                            services[(ns, name)] = obj
                            index[pair][i] = (selector, name, obj)
                        self.affected.add((ns, name))

    def _candidate_pods(self, ns: str, services: dict[tuple[str, str], Service]) -> list[Pod]:
        """The pods of ns that some affected service's selector may select (planned state wins)."""
        out = [o for _, o in self.view.planned("Pod", ns) if isinstance(o, Pod)]
        wanted = [dict(svc.spec.selector) for ref, svc in services.items()
                  if ref[0] == ns and ref in self.affected and svc.spec.selector]
        if not wanted:
            return out
        cache = self.view.indexed
        if cache is not None:  # each selector's smallest label bucket holds every pod it can select
            smallest = [cache.smallest(("pod", ns, k, v) for k, v in sorted(sel.items())) for sel in wanted]
            stored = self.view.unknown(cache.members(b for b in smallest if b is not None))
        else:
            stored = self.view.stored("Pod", ns)
        may_match = _prefilter({_needle(min(sel.items())[1]) for sel in wanted})
        index: dict[tuple[str, str], list[dict[str, str]]] = {}
        for sel in wanted:
            index.setdefault(min(sel.items()), []).append(sel)
        for kv in stored:
            if not may_match(kv.value):
                continue
            data = _loads(kv.value)
            labels = _str_dict(data, "metadata", "labels") if data is not None else {}
            if not any(selector_matches(sel, labels) for pair in labels.items() for sel in index.get(pair, ())):
                continue
            try:
                obj = from_json(kv.value)
            except PodnetError:
                continue
            if isinstance(obj, Pod):
                out.append(obj)
        return out

    def _candidate_slices(self, ns: str, stored: list[KeyValue]) -> dict[str, tuple[EndpointSlice, int]]:
        """The stored slices of ns that slice_ops may write or delete for the affected services.

        That is a slice labelled with an affected service's name, or one whose name is a derived name of
        one (`<service[:57]>-<5 hex>`). Keys already written by this plan are the user's: left out.
        """
        names = {name for sns, name in self.affected if sns == ns}
        stems = {name[:57] for name in names}
        may_name = _prefilter({_needle(name) for name in names})
        prefix = keys.kind_prefix("EndpointSlice", ns)
        out: dict[str, tuple[EndpointSlice, int]] = {}
        for key, obj in self.view.planned("EndpointSlice", ns):
            if isinstance(obj, EndpointSlice) and key in self.view.revs and key not in self.ops:
                out[key] = (obj, self.view.revs[key])
        for kv in stored:
            if kv.key in self.ops:
                continue
            name = kv.key[len(prefix):]
            if name[:-6] not in stems and not may_name(kv.value):
                continue
            try:
                obj = from_json(kv.value)
            except PodnetError:
                continue
            if isinstance(obj, EndpointSlice):
                out[kv.key] = (obj, kv.mod_revision)
        return out


def _name(key: str) -> str:
    return key.rsplit("/", 1)[1]


def _stub(kind: str, namespace: str | None, name: str) -> Resource:
    """A bare object of kind with only its name: what a delete reports for an undecodable object."""
    from podnet.api.loader import KINDS

    cls = KINDS[kind]
    meta: dict[str, str] = {"name": name}
    if cls.NAMESPACED:
        meta["namespace"] = namespace or "default"
    return cls.model_validate({"apiVersion": cls.API_VERSION, "kind": kind, "metadata": meta})


def _run(store: Store, build: Callable[[_View, random.Random], _Planner], *, rng: random.Random | None = None,
         dry_run: bool = False, index: Index | None = None) -> list[Result]:
    """Plan against a fresh view and commit the plan atomically; re-plan if another writer got in between.

    dry_run plans (validation, defaulting, allocation) exactly as a real run and commits nothing: the API
    server's dryRun=All.
    """
    rng = rng or random.Random()
    last: ConflictError | None = None
    for attempt in range(MAX_ATTEMPTS):
        planner = build(_View(store, index=index_for(store, index)), rng)
        if planner.problems:
            raise ValidationError(planner.problems)
        planner.derived_slices()
        if not planner.ops or dry_run:
            return planner.results
        limit = getattr(store, "max_commit_ops", None)  # after every check of the whole set passed
        if limit is not None and len(planner.ops) > limit:
            raise _TooBig(len(planner.ops), limit)
        try:
            store.commit(list(planner.ops.values()))
            return planner.results
        except ConflictError as e:
            last = e  # another writer got in between: read again and re-plan
            time.sleep(rng.uniform(0, 0.005 * (attempt + 1)))
    raise PodnetError(f"the store kept changing while applying ({last}); try again")


class _TooBig(Exception):
    """A plan with more operations than the store commits at once (etcd: --max-txn-ops, 128)."""

    def __init__(self, ops: int, limit: int) -> None:
        super().__init__(f"{ops} operations, over the store's {limit} per commit")
        self.ops = ops
        self.limit = limit


def _in_parts(items: Sequence[_T], big: _TooBig, each: Callable[[Sequence[_T]], list[Result]],
              what: Callable[[_T], str]) -> list[Result]:
    """Commit a change too big for one commit as consecutive parts, each whole (each planned against the
    store as the parts before it left it), sized from the operations the whole took per item."""
    if len(items) == 1:
        raise PodnetError(f"{what(items[0])}: its write takes {big.ops} store operations, over the store's "
                          f"{big.limit} per transaction (etcd's --max-txn-ops)")
    size = max(1, min(len(items) // 2, int(len(items) * big.limit * 0.8 / big.ops)))
    out: list[Result] = []
    for i in range(0, len(items), size):
        out += each(items[i:i + size])
    return out


def apply_objects(
    store: Store, objs: Sequence[Resource], config: AllocatorConfig | None = None, *,
    rng: random.Random | None = None, dry_run: bool = False, must: Literal["create", "update"] | None = None,
    index: Index | None = None,
) -> list[Result]:
    """Store objs (already validated) with allocation and derived slices, all in one commit.

    must="create" refuses objects that exist (AlreadyExists); must="update" refuses missing ones (NotFound)
    and, when an object carries metadata.resourceVersion, a stale one (Conflict): the API server's POST and
    PUT. Without it, objects are created or updated as `kubectl apply` does.

    When an allocation fails (range exhausted, or an explicit value already recorded), the repair pass
    runs once (controllers/repair.py): a leaked record is exactly what makes that happen. The apply is
    planned again only if the repair freed something; otherwise the first error stands. A dry run repairs
    nothing (it writes nothing).

    index: a started WriteIndex of this store (a long-running writer keeps one). Without one, a store that
    keeps its own bucket table (SQLite) serves instead (writeindex.index_for). Either way the derived
    slices are planned from buckets and the cost of one apply does not grow with the objects stored; on
    etcd without a WriteIndex the planner lists the namespaces the change touches.

    On etcd a change of more operations than one Txn holds (128 by default) is committed in parts, each
    whole, as kubectl applies object by object. The whole set is planned first (_TooBig comes only from a
    complete plan), so a bad object or a failed precondition anywhere still writes nothing.
    """
    config = config or AllocatorConfig()
    try:
        return _apply_once(store, objs, config, rng, dry_run, must, index)
    except (AllocationError, ValidationError) as e:
        if isinstance(e, ValidationError) and not any("already allocated" in p.reason for p in e.problems):
            raise
        if dry_run:
            raise
        from podnet.controllers.repair import repair_allocations

        if not repair_allocations(store).freed:
            raise
    return _apply_once(store, objs, config, rng, dry_run, must, index)


def _apply_once(store: Store, objs: Sequence[Resource], config: AllocatorConfig, rng: random.Random | None,
                dry_run: bool, must: Literal["create", "update"] | None, index: Index | None) -> list[Result]:

    def build(view: _View, r: random.Random) -> _Planner:
        view.fetch(key_of(o) for o in objs)
        if must is not None:
            _preconditions(view, objs, must)
        p = _Planner(view, config, r)
        p.batch_nodes = {o.name for o in objs if isinstance(o, Node)}
        for obj in objs:
            p.apply(obj)
        return p

    try:
        return _run(store, build, rng=rng, dry_run=dry_run, index=index)
    except _TooBig as big:
        return _in_parts(objs, big, lambda part: _apply_once(store, part, config, rng, dry_run, must, index),
                         lambda o: f"{o.KIND} {o.name}")


def _preconditions(view: _View, objs: Sequence[Resource], must: str) -> None:
    for o in objs:
        key = key_of(o)
        plural = keys.KIND_PLURAL[o.KIND]
        if must == "create" and key in view.revs:
            raise AlreadyExists(f'{plural} "{o.name}" already exists')
        if must == "update":
            if key not in view.revs:
                raise NotFound(f'{plural} "{o.name}" not found')
            rv = o.metadata.resource_version
            if rv and rv != str(view.revs[key]):
                raise Conflict(f'Operation cannot be fulfilled on {plural} "{o.name}": the object has been '
                               "modified; please apply your changes to the latest version and try again")


def delete_objects(
    store: Store, refs: Iterable[tuple[str, str | None, str]], *, ignore_not_found: bool = False,
    config: AllocatorConfig | None = None, dry_run: bool = False, index: Index | None = None,
) -> list[Result]:
    """Delete (kind, namespace, name) refs, freeing allocations and updating derived slices, in one commit.

    Raises NotFound naming every missing object (nothing is deleted then) unless ignore_not_found.
    """
    refs = list(refs)
    config = config or AllocatorConfig()

    def build(view: _View, r: random.Random) -> _Planner:
        view.fetch(keys.resource(kind, ns, name) for kind, ns, name in refs)
        p = _Planner(view, config, r)
        missing = []
        for kind, ns, name in refs:
            if not p.delete(kind, ns, name) and not ignore_not_found:
                missing.append(f'{keys.KIND_PLURAL[kind]} "{name}" not found')
        if missing:
            raise NotFound("\n".join(missing))
        return p

    try:
        return _run(store, build, dry_run=dry_run, index=index)
    except _TooBig as big:
        return _in_parts(refs, big, lambda part: delete_objects(
            store, part, ignore_not_found=True, config=config, index=index), lambda r: f"{r[0]} {r[2]}")
