"""The lab's control plane, a thread of the supervisor: what kube-scheduler, the ReplicaSet controller and
the EndpointSlice controller do in a cluster, reduced to what the lab needs.

- Deployments: keep `replicas` pods named <deployment>-<hash>-<n> from the template.
- Scheduling: a pod without spec.nodeName goes to the node with the fewest pods (ties: by name).
- Endpoints: the EndpointSlices of every Service with a selector follow its pods (controllers.endpoints).
Every write is conditional on the revision it read (only-if-revision), so it never overwrites a concurrent
change by `podnet apply` or an agent; a lost race is retried on the next round.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
from typing import Any

from podnet.api.deployment import Deployment
from podnet.api.node import Node
from podnet.api.pod import Pod
from podnet.lab.loop import reconcile_loop
from podnet.lab.state import LabState
from podnet.store import ConflictError, Delete, KeyValue, Put, Store, keys, open_store

log = logging.getLogger("podnet.lab.controller")
OWNER_LABEL = "podnet.io/deployment"


def _objs(store: Store, kind: str, cls: Any) -> dict[str, tuple[Any, KeyValue]]:
    out: dict[str, tuple[Any, KeyValue]] = {}
    for kv in store.list(keys.kind_prefix(kind)).items:
        try:
            out[kv.key] = (cls.model_validate(json.loads(kv.value)), kv)
        except Exception as e:  # one bad object must not stop the others
            log.error("%s: skipped, not a valid %s: %s", kv.key, kind, e)
    return out


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


class LabController:
    def __init__(self, st: LabState) -> None:
        self.st = st
        self.store = open_store(st.store_url)

    def run(self, stop: threading.Event) -> None:
        reconcile_loop(self.store, keys.RESOURCES_PREFIX, self.reconcile, stop)

    def reconcile(self) -> None:
        self.sync_deployments()
        self.schedule()
        self.sync_endpoints()

    def sync_deployments(self) -> None:
        deployments = _objs(self.store, "Deployment", Deployment)
        pods = _objs(self.store, "Pod", Pod)
        want: dict[str, Pod] = {}
        for d, _ in deployments.values():
            for p in deployment_pods(d):
                want[keys.resource("Pod", p.namespace, p.name)] = p
        ops: list[Put | Delete] = []
        for key, p in want.items():
            if key not in pods:
                ops.append(Put(key, json.dumps(p.to_dict()).encode(), if_absent=True))
        for key, (p, kv) in pods.items():
            if OWNER_LABEL in p.metadata.labels and key not in want:
                ops.append(Delete(key, if_revision=kv.mod_revision))
        self._commit(ops)

    def schedule(self) -> None:
        nodes = sorted(n.name for n, _ in _objs(self.store, "Node", Node).values()
                       if n.metadata.labels.get("podnet.io/lab") == self.st.spec.name)
        if not nodes:
            return
        pods = _objs(self.store, "Pod", Pod)
        load = {n: 0 for n in nodes}
        for p, _ in pods.values():
            if p.spec.node_name in load:
                load[p.spec.node_name] += 1
        for key, (p, kv) in sorted(pods.items()):
            if p.spec.node_name:
                continue
            node = min(nodes, key=lambda n: (load[n], n))
            p.spec.node_name = node
            load[node] += 1
            self._commit([Put(key, json.dumps(p.to_dict()).encode(), if_revision=kv.mod_revision)])

    def sync_endpoints(self) -> None:
        from podnet.controllers.endpoints import sync_ops

        self._commit(sync_ops(self.store))

    def _commit(self, ops: list[Any]) -> None:
        if not ops:
            return
        try:
            self.store.commit(ops)
        except ConflictError as e:
            log.info("lost a race (%s); next round", e)
