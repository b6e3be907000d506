"""What the StatefulSet controller decides, as a pure function of a StatefulSet and the pods it owns.

The rules are those of Kubernetes' pkg/controller/statefulset/stateful_set_control.go (updateStatefulSet),
reduced to what the lab has (no volumes, no graceful termination, no minReadySeconds clock):

- Pods are named <name>-<ordinal> for ordinals start..start+replicas-1; each gets hostname = its name,
  subdomain = spec.serviceName, the labels statefulset.kubernetes.io/pod-name, apps.kubernetes.io/pod-index
  and controller-revision-hash, and a controller ownerReference to the set.
- OrderedReady (the default), "monotonic": walking the ordinals upwards, a missing pod is created and the
  walk stops; a pod that is not Running and Ready stops the walk. So <name>-1 is created only once
  <name>-0 runs and is ready.
- A Failed or Succeeded pod is deleted (it is created again on a later round).
- Scale down only once every wanted pod is Running and Ready: the pod with the highest ordinal goes first,
  one per round, and a condemned pod that is not ready blocks unless it is the first unhealthy one.
- RollingUpdate: once all of the above holds, the highest-ordinal pod (at or above the partition) whose
  revision is not the template's current one is deleted, so it comes back from the new template; one at a
  time, waiting for an unavailable one. OnDelete never deletes for an update.
- Parallel: the same rules without the stops (every missing pod at once, every condemned pod at once).

minReadySeconds is not honoured (a pod counts as available once Running and Ready): the lab's agent does
not record when a pod became ready.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field

from podnet.api.pod import Pod
from podnet.api.statefulset import ON_DELETE, StatefulSet, StatefulSetStatus

POD_NAME_LABEL = "statefulset.kubernetes.io/pod-name"
POD_INDEX_LABEL = "apps.kubernetes.io/pod-index"
REVISION_LABEL = "controller-revision-hash"
_ORDINAL = re.compile(r"^(.*)-([0-9]+)$")


def revision(sts: StatefulSet) -> str:
    """The name of the set's current revision: <name>-<hash of the pod template> (a ControllerRevision's name)."""
    tmpl = json.dumps(sts.spec.template.to_dict(), sort_keys=True)
    return f"{sts.name}-{hashlib.sha256(tmpl.encode()).hexdigest()[:10]}"


def ordinal(sts_name: str, pod_name: str) -> int | None:
    """The ordinal of a pod of set sts_name (getParentNameAndOrdinal), None if the name is not one of its pods."""
    m = _ORDINAL.match(pod_name)
    if m is None or m.group(1) != sts_name:
        return None
    return int(m.group(2))


def owner_reference(sts: StatefulSet) -> dict[str, object]:
    ref: dict[str, object] = {"apiVersion": sts.API_VERSION, "kind": sts.KIND, "name": sts.name,
                              "controller": True, "blockOwnerDeletion": True}
    if sts.metadata.uid:
        ref["uid"] = sts.metadata.uid
    return ref


def controller_of(pod: Pod) -> tuple[str, str, str | None] | None:
    """(kind, name, uid) of the pod's controller ownerReference, if it has one."""
    for ref in pod.metadata.owner_references:
        if ref.get("controller") is True and isinstance(ref.get("kind"), str) and isinstance(ref.get("name"), str):
            uid = ref.get("uid")
            return ref["kind"], ref["name"], uid if isinstance(uid, str) else None
    return None


def new_pod(sts: StatefulSet, ord_: int) -> Pod:
    """The pod of ordinal ord_ at the set's current revision (newVersionedStatefulSetPod)."""
    tmpl = sts.spec.template
    name = f"{sts.name}-{ord_}"
    labels = dict(tmpl.metadata.labels)
    labels |= {POD_NAME_LABEL: name, POD_INDEX_LABEL: str(ord_), REVISION_LABEL: revision(sts)}
    spec = tmpl.spec.to_dict()
    spec["hostname"] = name
    if sts.spec.service_name:
        spec["subdomain"] = sts.spec.service_name
    meta: dict[str, object] = {"name": name, "namespace": sts.namespace, "labels": labels,
                               "ownerReferences": [owner_reference(sts)]}
    if tmpl.metadata.annotations:
        meta["annotations"] = dict(tmpl.metadata.annotations)
    return Pod.model_validate({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec})


def running_and_ready(pod: Pod) -> bool:
    return pod.status.phase == "Running" and pod.is_ready


def _terminating(pod: Pod) -> bool:
    return pod.metadata.deletion_timestamp is not None


def _unavailable(pod: Pod | None) -> bool:
    return pod is None or _terminating(pod) or not running_and_ready(pod)


@dataclass
class Plan:
    """One round's decisions: pods to create, pods to delete (by name), the status to write, and why it stopped."""

    create: list[Pod] = field(default_factory=list)
    delete: list[str] = field(default_factory=list)
    status: StatefulSetStatus = field(default_factory=StatefulSetStatus)
    waiting_for: str = ""  # the pod the walk stopped at, "" if it ran to the end


def _status(sts: StatefulSet, pods: list[Pod], update_rev: str) -> StatefulSetStatus:
    created = [p for p in pods if not _terminating(p)]
    ready = sum(1 for p in pods if running_and_ready(p))
    updated = sum(1 for p in created if p.metadata.labels.get(REVISION_LABEL) == update_rev)
    current_rev = sts.status.current_revision or update_rev
    if updated == sts.replicas and ready == sts.replicas and len(pods) == sts.replicas:
        current_rev = update_rev  # completeRollingUpdate
    current = sum(1 for p in created if p.metadata.labels.get(REVISION_LABEL) == current_rev)
    return StatefulSetStatus(
        observed_generation=sts.metadata.generation, replicas=len(pods), ready_replicas=ready,
        available_replicas=ready, current_replicas=current, updated_replicas=updated,
        current_revision=current_rev, update_revision=update_rev, collision_count=sts.status.collision_count or 0)


def plan(sts: StatefulSet, pods: list[Pod]) -> Plan:
    """The decisions for sts, given the pods it owns (any order). Pure: nothing is written here."""
    rev = revision(sts)
    start, count = sts.start_ordinal, sts.replicas
    replicas: list[Pod | None] = [None] * count
    condemned: list[tuple[int, Pod]] = []
    for pod in pods:
        o = ordinal(sts.name, pod.name)
        if o is None:
            continue  # not a name of this set: ignored, as upstream ignores unparsable ordinals
        if start <= o < start + count:
            replicas[o - start] = pod
        else:
            condemned.append((o, pod))
    condemned.sort(key=lambda t: t[0], reverse=True)
    out = Plan(status=_status(sts, [p for p in pods if ordinal(sts.name, p.name) is not None], rev))
    monotonic = sts.ordered

    # Scale down is reached (monotonic) only when every wanted pod is healthy, so the first unhealthy pod
    # that may be deleted although not ready is the condemned one with the lowest ordinal.
    first_unhealthy = next((p for _, p in reversed(condemned) if _unavailable(p)), None)

    # The wanted pods, in ordinal order.
    for i, existing in enumerate(replicas):
        name = f"{sts.name}-{start + i}"
        if existing is not None and existing.status.phase in ("Failed", "Succeeded"):
            if not _terminating(existing):
                out.delete.append(existing.name)
            if monotonic:
                out.waiting_for = name
                return out
            continue
        if existing is None:
            out.create.append(new_pod(sts, start + i))
            if monotonic:
                out.waiting_for = name
                return out
            continue
        if monotonic and (_terminating(existing) or not running_and_ready(existing)):
            out.waiting_for = name
            return out

    # Scale down: the highest ordinal first.
    for _, pod in condemned:
        if _terminating(pod):
            if monotonic:
                out.waiting_for = pod.name
                return out
            continue
        if monotonic and not running_and_ready(pod) and pod is not first_unhealthy:
            out.waiting_for = first_unhealthy.name if first_unhealthy is not None else pod.name
            return out
        out.delete.append(pod.name)
        if monotonic:
            return out
    if condemned and not monotonic:
        return out

    if sts.update_type == ON_DELETE:
        return out
    # Rolling update: the highest ordinal not at the current revision goes, one at a time.
    for i in range(count - 1, sts.partition - 1, -1):
        existing = replicas[i]
        if existing is None:
            continue
        if existing.metadata.labels.get(REVISION_LABEL) != rev and not _terminating(existing):
            out.delete.append(existing.name)
            return out
        if _unavailable(existing):
            out.waiting_for = existing.name
            return out
    return out
