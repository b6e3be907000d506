"""The lab's control plane, a process of its own (`podnet lab controller`, one of the supervisor's roles):
what kube-scheduler, the ReplicaSet controller and the EndpointSlice controller do in a cluster, reduced to
what the lab needs. Killed, it is restarted by the supervisor and recomputes everything from the store.

- Deployments: keep `replicas` pods named <deployment>-<hash>-<n> from the template.
- StatefulSets: pods <name>-0..N-1 in order, each once its predecessors run and are ready (lab/statefulset.py).
- Scheduling: a pod without spec.nodeName goes to the node with the fewest pods (ties: by name).
- Endpoints: the EndpointSlices of every Service with a selector follow its pods (controllers.endpoints).
- Repair: at start and every REPAIR_INTERVAL, the repair pass (controllers/repair.py) frees ClusterIP and
  NodePort records no Service holds and EndpointSlices whose Service is gone, as kube-apiserver's repair
  controllers do. It reads every Service, record and slice, so it runs only when the store's revision
  moved since the last pass: an idle lab pays one revision read per interval.
- Node monitor: every few seconds, a lab Node whose agent stopped posting its status is marked Ready
  Unknown (lab/nodestatus.py), as the node lifecycle controller does.
- LoadBalancer addresses: each type LoadBalancer Service gets one from the lab's pool on the underlay into
  status.loadBalancer.ingress (controllers.loadbalancer, MetalLB's controller); the node that answers
  ARP for it is chosen by the speakers (lab/speaker.py), not here.

The work is proportional to the change, as in a cluster's controllers: one Informer over the resources
decodes each object once, when it changes; its handler only notes what the change makes dirty (the
deployment owning a pod, a pod to schedule, the services whose selector matches a pod's old or new
labels) and keeps small indexes (pods by label, slices by service) so a round never scans the cluster.
Every write is conditional on the revision the informer decoded (only-if-revision), so it never
overwrites a concurrent change by `podnet apply` or an agent; a lost race marks the work dirty again
and it is retried after a short pause.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from podnet.api.deployment import Deployment
from podnet.api.endpointslice import EndpointSlice
from podnet.api.loader import from_json
from podnet.api.meta import Resource
from podnet.api.node import Node
from podnet.api.pod import Pod
from podnet.api.service import Service
from podnet.api.statefulset import StatefulSet
from podnet.controllers.endpoints import selector_matches, slice_ops
from podnet.controllers.events import event_put
from podnet.controllers.repair import repair_allocations
from podnet.lab import nodestatus, statefulset
from podnet.lab.labels import LAB_LABEL, OWNER_LABEL
from podnet.lab.lbcontroller import LoadBalancerAllocator
from podnet.lab.loop import change_loop
from podnet.lab.state import LabState
from podnet.store import ConflictError, Delete, Op, Put, Store, StoreError, keys, open_store
from podnet.store.informer import ChangeKind, Informer

log = logging.getLogger("podnet.lab.controller")
REPAIR_INTERVAL = 30.0  # seconds between repair passes (kube-apiserver's repair controllers: 3 minutes)

ServiceRef = tuple[str, str]  # (namespace, name)
LabelKey = tuple[str, str, str]  # (namespace, label, value)


def deployment_pods(d: Deployment) -> list[Pod]:
    """The pods a Deployment wants: names stable per replica index and template, like a ReplicaSet's."""
    tmpl = d.spec.template.to_dict() if hasattr(d.spec.template, "to_dict") else d.spec.template.model_dump(by_alias=True)
    thash = hashlib.sha256(json.dumps(tmpl, sort_keys=True).encode()).hexdigest()[:10]
    pods = []
    for i in range(d.spec.replicas if d.spec.replicas is not None else 1):
        suffix = hashlib.sha256(f"{thash}/{i}".encode()).hexdigest()[:5]
        meta = dict(tmpl.get("metadata") or {})
        labels = dict(meta.get("labels") or {})
        labels[OWNER_LABEL] = d.name
        pods.append(Pod.model_validate({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{d.name}-{thash}-{suffix}", "namespace": d.namespace, "labels": labels},
            "spec": tmpl.get("spec") or {},
        }))
    return pods


def _ns(obj: Resource) -> str:
    return obj.namespace or "default"


@dataclass
class Dirty:
    """What the changes since the last round ask to look at again."""

    deployments: set[str] = field(default_factory=set)  # Deployment keys
    statefulsets: set[str] = field(default_factory=set)  # StatefulSet keys
    unscheduled: set[str] = field(default_factory=set)  # Pod keys that had no node when last seen
    services: set[ServiceRef] = field(default_factory=set)  # whose EndpointSlices to recompute
    load_balancers: set[ServiceRef] = field(default_factory=set)  # whose LoadBalancer address to check

    def __bool__(self) -> bool:
        return bool(self.deployments or self.statefulsets or self.unscheduled or self.services
                    or self.load_balancers)

    def merge(self, other: Dirty) -> None:
        self.deployments |= other.deployments
        self.statefulsets |= other.statefulsets
        self.unscheduled |= other.unscheduled
        self.services |= other.services
        self.load_balancers |= other.load_balancers


class Tracker:
    """The informer's handler: turns object changes into dirty work and keeps the indexes a round uses.

    Pure bookkeeping over typed objects (no store, no threads of its own), so it is unit-tested alone.
    Called on the informer's thread; the controller reads it under `lock`.
    """

    def __init__(self, lab: str) -> None:
        self.lab = lab
        self.lock = threading.Lock()
        self.dirty = Dirty()
        self.parked: set[str] = set()  # pods to schedule while the lab has no node yet
        self.nodes: set[str] = set()  # this lab's nodes
        self.load: dict[str, int] = {}  # node name -> pods bound to it
        self.selectors: dict[LabelKey, set[ServiceRef]] = {}  # first selector pair -> services
        self.service_selector: dict[ServiceRef, dict[str, str]] = {}
        self.pods_by_label: dict[LabelKey, set[str]] = {}  # (ns, label, value) -> pod keys
        self.owned: dict[tuple[str, str], set[str]] = {}  # (ns, deployment) -> pod keys with OWNER_LABEL
        self.sts_owned: dict[tuple[str, str], set[str]] = {}  # (ns, statefulset) -> pods it controls
        self.slices_by_service: dict[ServiceRef, set[str]] = {}  # slices labelled with the service's name
        self.slices_by_stem: dict[tuple[str, str], set[str]] = {}  # (ns, name minus "-xxxxx") -> slice keys
        self.changed = threading.Event()  # set whenever dirty gains something

    # ---- the handler ----------------------------------------------------------------------------------

    def on_change(self, kind: ChangeKind, old: Resource | None, new: Resource | None) -> None:
        obj = new if new is not None else old
        if obj is None:
            return
        with self.lock:
            if isinstance(obj, Pod):
                self._pod(old if isinstance(old, Pod) else None, new if isinstance(new, Pod) else None)
            elif isinstance(obj, Service):
                self._service(old if isinstance(old, Service) else None, new if isinstance(new, Service) else None)
            elif isinstance(obj, EndpointSlice):
                self._slice(old if isinstance(old, EndpointSlice) else None,
                            new if isinstance(new, EndpointSlice) else None)
            elif isinstance(obj, Deployment):
                self.dirty.deployments.add(keys.resource("Deployment", obj.namespace, obj.name))
            elif isinstance(obj, StatefulSet):
                self.dirty.statefulsets.add(keys.resource("StatefulSet", obj.namespace, obj.name))
            elif isinstance(obj, Node):
                self._node(old if isinstance(old, Node) else None, new if isinstance(new, Node) else None)
            if self.dirty:
                self.changed.set()

    def _pod(self, old: Pod | None, new: Pod | None) -> None:
        obj = new or old
        assert obj is not None
        key = keys.resource("Pod", obj.namespace, obj.name)
        for pod, sign in ((old, -1), (new, 1)):
            if pod is None:
                continue
            ns = _ns(pod)
            for k, v in pod.metadata.labels.items():
                members = self.pods_by_label.setdefault((ns, k, v), set())
                if sign > 0:
                    members.add(key)
                else:
                    members.discard(key)
                    if not members:
                        del self.pods_by_label[(ns, k, v)]
            owner = pod.metadata.labels.get(OWNER_LABEL)
            if owner is not None:
                owned = self.owned.setdefault((ns, owner), set())
                if sign > 0:
                    owned.add(key)
                else:
                    owned.discard(key)
                    if not owned:
                        del self.owned[(ns, owner)]
            ctl = statefulset.controller_of(pod)
            if ctl is not None and ctl[0] == StatefulSet.KIND:
                sts_owned = self.sts_owned.setdefault((ns, ctl[1]), set())
                if sign > 0:
                    sts_owned.add(key)
                else:
                    sts_owned.discard(key)
                    if not sts_owned:
                        del self.sts_owned[(ns, ctl[1])]
                # Unlike a Deployment, a StatefulSet waits on its pods' status (Running and Ready).
                self.dirty.statefulsets.add(keys.resource("StatefulSet", ns, ctl[1]))
            if pod.spec.node_name:
                self.load[pod.spec.node_name] = self.load.get(pod.spec.node_name, 0) + sign
            self.dirty.services |= self._selecting(ns, pod.metadata.labels)
        # A deployment cares whether its pods exist, not about their status: an agent's status write
        # must not make it recompute every replica.
        owners = [p.metadata.labels.get(OWNER_LABEL) if p is not None else None for p in (old, new)]
        if owners[0] != owners[1] or old is None or new is None:
            self.dirty.deployments |= {keys.resource("Deployment", _ns(obj), o) for o in owners if o is not None}
        if new is not None and not new.spec.node_name:
            self.dirty.unscheduled.add(key)
        else:
            self.dirty.unscheduled.discard(key)
            self.parked.discard(key)

    def _selecting(self, ns: str, labels: dict[str, str]) -> set[ServiceRef]:
        out = set()
        for k, v in labels.items():
            for ref in self.selectors.get((ns, k, v), ()):
                if selector_matches(self.service_selector.get(ref), labels):
                    out.add(ref)
        return out

    def _service(self, old: Service | None, new: Service | None) -> None:
        obj = new or old
        assert obj is not None
        ref = (_ns(obj), obj.name)
        previous = self.service_selector.pop(ref, None)
        if previous:
            members = self.selectors.get((ref[0], *min(previous.items())), set())
            members.discard(ref)
        if new is not None and new.spec.selector:
            self.service_selector[ref] = dict(new.spec.selector)
            self.selectors.setdefault((ref[0], *min(new.spec.selector.items())), set()).add(ref)
        self.dirty.services.add(ref)
        self.dirty.load_balancers.add(ref)

    def _slice(self, old: EndpointSlice | None, new: EndpointSlice | None) -> None:
        obj = new or old
        assert obj is not None
        ns = _ns(obj)
        key = keys.resource("EndpointSlice", obj.namespace, obj.name)
        if old is not None and old.service_name:
            self.slices_by_service.get((ns, old.service_name), set()).discard(key)
        if new is not None and new.service_name:
            self.slices_by_service.setdefault((ns, new.service_name), set()).add(key)
        stem = (ns, obj.name[:-6])
        if new is None:
            self.slices_by_stem.get(stem, set()).discard(key)
        else:
            self.slices_by_stem.setdefault(stem, set()).add(key)
        # A managed slice changed by someone else (or deleted) is put right; our own writes come back
        # here too and cost one recompute of that service that finds nothing to do.
        for s in (old, new):
            if s is not None and s.is_controller_managed and s.service_name:
                self.dirty.services.add((ns, s.service_name))

    def _node(self, old: Node | None, new: Node | None) -> None:
        for n in (old, new):
            if n is not None:
                self.nodes.discard(n.name)
        if new is not None and new.metadata.labels.get(LAB_LABEL) == self.lab:
            self.nodes.add(new.name)
            self.dirty.unscheduled |= self.parked  # pods waiting for a node may go now
            self.parked.clear()

    # ---- for a round ----------------------------------------------------------------------------------

    def take(self) -> Dirty:
        with self.lock:
            dirty, self.dirty = self.dirty, Dirty()
            if not self.nodes:  # nowhere to go yet: they wait for a node to appear
                self.parked |= dirty.unscheduled
                dirty.unscheduled = set()
            self.changed.clear()
            return dirty

    def give_back(self, dirty: Dirty) -> None:
        """Work a round could not finish (a lost race, an error): to be retried."""
        with self.lock:
            self.dirty.merge(dirty)

    def pod_candidates(self, refs: Iterable[ServiceRef]) -> set[str]:
        """Keys of pods that may be selected by the given services (by their first selector pair)."""
        with self.lock:
            out: set[str] = set()
            for ref in refs:
                selector = self.service_selector.get(ref)
                if selector:
                    out |= self.pods_by_label.get((ref[0], *min(selector.items())), set())
            return out

    def slice_candidates(self, refs: Iterable[ServiceRef]) -> set[str]:
        """Keys of slices slice_ops may write or delete for these services: labelled with the service's
        name, or named like one of its derived slices (`<service[:57]>-<5 hex>`)."""
        with self.lock:
            out: set[str] = set()
            for ns, name in refs:
                out |= self.slices_by_service.get((ns, name), set())
                out |= self.slices_by_stem.get((ns, name[:57]), set())
            return out

    def owned_pods(self, namespace: str, deployment: str) -> set[str]:
        with self.lock:
            return set(self.owned.get((namespace, deployment), set()))

    def statefulset_pods(self, namespace: str, name: str) -> set[str]:
        with self.lock:
            return set(self.sts_owned.get((namespace, name), set()))

    def node_load(self) -> dict[str, int]:
        with self.lock:
            return {n: self.load.get(n, 0) for n in self.nodes}


def _created(pod: Pod) -> Pod:
    """What the API server adds to an object it creates: a uid and the creation time (`kubectl get`'s AGE)."""
    pod.metadata.uid = pod.metadata.uid or str(uuid.uuid4())
    pod.metadata.creation_timestamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    return pod


def _decode(value: bytes) -> Resource:
    return from_json(value)


class LabController:
    def __init__(self, st: LabState, store: Store | None = None, *, repair_interval: float = REPAIR_INTERVAL,
                 monitor_period: float = nodestatus.MONITOR_PERIOD, node_grace: float = nodestatus.GRACE) -> None:
        self.st = st
        self.repair_interval = repair_interval
        self.monitor_period = monitor_period
        self.node_grace = node_grace
        self.repaired_at: int | None = None  # store revision the last pass found nothing to repair at
        self.store = store or open_store(st.store_url)
        self.tracker = Tracker(st.spec.name)
        self.informer: Informer[Resource] = Informer(self.store, keys.RESOURCES_PREFIX, _decode,
                                                     on_change=self.tracker.on_change, name="lab-controller")
        self.inflight: dict[str, str] = {}  # pod key -> node we bound it to, until the informer shows it
        self.lb = LoadBalancerAllocator(self.store, self.informer, st.spec.lb_addresses())

    def run(self, stop: threading.Event) -> None:
        self.informer.start()
        periodic = [threading.Thread(target=_every, args=(interval, fn, stop), daemon=True, name=fn.__name__)
                    for interval, fn in ((self.repair_interval, self.repair_once),
                                         (self.monitor_period, self.monitor_nodes))]
        for t in periodic:
            t.start()
        try:
            change_loop(self.tracker.changed, self.round, stop)
        finally:
            self.informer.stop()
            for t in periodic:
                t.join(5)

    # ---- periodic work --------------------------------------------------------------------------------

    def monitor_nodes(self) -> list[str]:
        return nodestatus.monitor(self.store, self.st.spec.name, grace=self.node_grace)

    def repair_once(self) -> bool:
        """One repair pass, skipped when nothing was written since the last one. True if it ran."""
        revision = self.store.revision()  # read first: a write during the pass makes the next one run
        if revision == self.repaired_at:
            return False
        report = repair_allocations(self.store)
        for line in report.lines():
            log.info("repair: %s", line)
        # What the pass wrote moves the revision: the next turn runs once more and finds nothing.
        self.repaired_at = None if report.changed else revision
        return True

    def round(self) -> bool:
        """One pass over the dirty work; False if something must be retried."""
        if not self.informer.wait_synced(1.0):
            return False
        dirty = self.tracker.take()
        retry = Dirty()
        for step in (self.sync_deployments, self.sync_statefulsets, self.schedule, self.sync_endpoints,
                     self.sync_load_balancers):
            try:
                step(dirty, retry)
            except Exception:  # a bad object or a store hiccup must not end the loop
                log.exception("%s failed; retrying", step.__name__)
                retry.merge(dirty)
                break
        if retry:
            self.tracker.give_back(retry)
            return False
        return True

    # ---- Deployments ----------------------------------------------------------------------------------

    def sync_deployments(self, dirty: Dirty, retry: Dirty) -> None:
        for dkey in sorted(dirty.deployments):
            d = self.informer.get(dkey)
            ns, name = dkey.rsplit("/", 2)[-2:]
            want: dict[str, Pod] = {}
            if isinstance(d, Deployment):
                want = {keys.resource("Pod", p.namespace, p.name): p for p in deployment_pods(d)}
            ops: list[Op] = []
            for key, p in want.items():
                if self.informer.get(key) is None:
                    ops.append(Put(key, json.dumps(_created(p).to_dict()).encode(), if_absent=True))
            for key in sorted(self.tracker.owned_pods(ns, name)):
                seen = self.informer.get_with_revision(key)
                if key not in want and seen is not None:
                    ops.append(Delete(key, if_revision=seen[1]))
            if not self._commit(ops):
                retry.deployments.add(dkey)

    # ---- StatefulSets ---------------------------------------------------------------------------------

    def sync_statefulsets(self, dirty: Dirty, retry: Dirty) -> None:
        for skey in sorted(dirty.statefulsets):
            sts = self.informer.get_with_revision(skey)
            ns, name = skey.rsplit("/", 2)[-2:]
            owned: dict[str, tuple[Pod, int]] = {}
            for key in self.tracker.statefulset_pods(ns, name):
                seen = self.informer.get_with_revision(key)
                if seen is not None and isinstance(seen[0], Pod):
                    owned[key] = (seen[0], seen[1])
            if sts is None or not isinstance(sts[0], StatefulSet):
                # Deleted: its pods go with it (the garbage collector's cascading delete).
                ops: list[Op] = [Delete(k, if_revision=r) for k, (_, r) in sorted(owned.items())]
                if not self._commit(ops):
                    retry.statefulsets.add(skey)
                continue
            if not self._commit(self._statefulset_ops(skey, sts[0], sts[1], owned)):
                retry.statefulsets.add(skey)

    def _statefulset_ops(self, skey: str, sts: StatefulSet, rev: int,
                         owned: dict[str, tuple[Pod, int]]) -> list[Op]:
        ops: list[Op] = []
        mine: list[Pod] = []
        for key, (pod, pod_rev) in sorted(owned.items()):
            ctl = statefulset.controller_of(pod)
            if ctl is not None and sts.metadata.uid and ctl[2] and ctl[2] != sts.metadata.uid:
                ops.append(Delete(key, if_revision=pod_rev))  # left by an earlier set of the same name
            else:
                mine.append(pod)
        p = statefulset.plan(sts, mine)
        for pod in p.create:
            key = keys.resource("Pod", pod.namespace, pod.name)
            if self.informer.get(key) is not None:
                log.warning("statefulset %s: pod %s exists and is not its own; waiting", sts.ref, pod.name)
                continue
            ops.append(Put(key, json.dumps(_created(pod).to_dict()).encode(), if_absent=True))
            ops.append(event_put(sts, "SuccessfulCreate",
                                 f"create Pod {pod.name} in StatefulSet {sts.name} successful",
                                 component="statefulset-controller"))
        by_name = {pod.name: key for key, (pod, _) in owned.items()}
        for pod_name in p.delete:
            key = by_name[pod_name]
            ops.append(Delete(key, if_revision=owned[key][1]))
            ops.append(event_put(sts, "SuccessfulDelete",
                                 f"delete Pod {pod_name} in StatefulSet {sts.name} successful",
                                 component="statefulset-controller"))
        if p.status != sts.status:
            updated = sts.model_copy(deep=True)
            updated.status = p.status
            ops.append(Put(skey, json.dumps(updated.to_dict()).encode(), if_revision=rev))
        return ops

    # ---- scheduling -----------------------------------------------------------------------------------

    def schedule(self, dirty: Dirty, retry: Dirty) -> None:
        if not dirty.unscheduled:
            return
        load = self.tracker.node_load()
        for key, node in list(self.inflight.items()):  # bound by us, not yet seen by the informer
            seen = self.informer.get(key)
            if not isinstance(seen, Pod) or seen.spec.node_name:
                del self.inflight[key]
            elif node in load:
                load[node] += 1
        if not load:
            retry.unscheduled |= dirty.unscheduled
            return
        for key in sorted(dirty.unscheduled):
            entry = self.informer.get_with_revision(key)
            if entry is None:
                continue
            current, revision = entry
            if not isinstance(current, Pod) or current.spec.node_name:
                continue
            pod = current.model_copy(deep=True)
            node = min(load, key=lambda n: (load[n], n))
            pod.spec.node_name = node
            scheduled = event_put(pod, "Scheduled", f"Successfully assigned {pod.namespace}/{pod.name} to {node}",
                                  component="default-scheduler")
            if self._commit([Put(key, json.dumps(pod.to_dict()).encode(), if_revision=revision), scheduled]):
                load[node] += 1
                self.inflight[key] = node
            else:
                retry.unscheduled.add(key)

    # ---- endpoints ------------------------------------------------------------------------------------

    def sync_endpoints(self, dirty: Dirty, retry: Dirty) -> None:
        scope = dirty.services
        if not scope:
            return
        services = []
        for ns, name in scope:
            svc = self.informer.get(keys.resource("Service", ns, name))
            if isinstance(svc, Service):
                services.append(svc)
        pods = [p for p in map(self.informer.get, sorted(self.tracker.pod_candidates(scope))) if isinstance(p, Pod)]
        existing: dict[str, tuple[EndpointSlice, int]] = {}
        for key in self.tracker.slice_candidates(scope):
            seen = self.informer.get_with_revision(key)
            if seen is not None and isinstance(seen[0], EndpointSlice):
                existing[key] = (seen[0], seen[1])
        if not self._commit(slice_ops(services, pods, existing, scope)):
            retry.services |= scope

    # ---- LoadBalancer addresses ------------------------------------------------------------------------

    def sync_load_balancers(self, dirty: Dirty, retry: Dirty) -> None:
        retry.load_balancers |= self.lb.sync(dirty.load_balancers)

    def _commit(self, ops: list[Any]) -> bool:
        if not ops:
            return True
        try:
            self.store.commit(ops)
            return True
        except ConflictError as e:
            log.info("lost a race (%s); retrying", e)
            return False


def _every(interval: float, fn: Callable[[], object], stop: threading.Event) -> None:
    """fn() at once and every interval until stop; a failure (etcd restarting) waits for the next turn."""
    while not stop.is_set():
        try:
            fn()
        except StoreError as e:  # etcd restarting: expected, no traceback
            log.warning("%s: %s; again in %.0f s", getattr(fn, "__name__", fn), e, interval)
        except Exception:
            log.exception("%s failed; again in %.0f s", getattr(fn, "__name__", fn), interval)
        if stop.wait(interval):
            return


def main(name: str) -> int:
    """`podnet lab controller --name X`: run the lab's control plane until SIGTERM."""
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    st = LabState.load(name)
    if st is None:
        log.error("lab %s: no state (was `podnet lab up` run?)", name)
        return 1
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    if st.spec.source == "kube":
        # kube-controller-manager's node IPAM: flannel's kube subnet manager leases the nodes' podCIDRs.
        from podnet.controllers.nodeipam import NodeIpam

        ipam_store = open_store(st.store_url)
        ipam = NodeIpam(ipam_store, ",".join(st.spec.pod_networks), labels={LAB_LABEL: st.spec.name})
        threading.Thread(target=ipam.run, args=(stop,), name="node-ipam", daemon=True).start()
    LabController(st).run(stop)
    return 0
