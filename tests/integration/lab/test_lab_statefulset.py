"""A 3-replica StatefulSet behind a headless Service in a 2-node lab: pods web-0, web-1, web-2 come up one
after the other (each only once the one before runs and is ready, as the store's own history shows), keep
their names when deleted, answer on the addresses the headless Service's EndpointSlice lists (with their
hostnames), and go in reverse order on scale down and all together with the set."""

from __future__ import annotations

import json
import threading

import pytest

from podnet.store import keys, open_store

from .test_cluster import wait_for

pytestmark = pytest.mark.integration

MANIFEST = """\
apiVersion: v1
kind: Service
metadata: {name: nginx, labels: {app: nginx}}
spec:
  clusterIP: None
  selector: {app: nginx}
  ports: [{port: 80, name: web}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web}
spec:
  serviceName: nginx
  replicas: REPLICAS
  selector: {matchLabels: {app: nginx}}
  template:
    metadata: {labels: {app: nginx}}
    spec:
      containers: [{name: nginx, ports: [{containerPort: 80, name: web}]}]
  volumeClaimTemplates:
  - metadata: {name: www}
    spec: {accessModes: [ReadWriteOnce], resources: {requests: {storage: 1Gi}}}
"""


def _pods(lab) -> dict[str, dict]:  # type: ignore[no-untyped-def, type-arg]
    items = json.loads(lab.podnet("get", "pods", "-o", "json").stdout)["items"]
    return {p["metadata"]["name"]: p for p in items if p["metadata"]["name"].startswith("web-")}


def _ready(p: dict) -> bool:  # type: ignore[type-arg]
    return any(c.get("type") == "Ready" and c.get("status") == "True"
               for c in (p.get("status") or {}).get("conditions") or [])


def _history(lab, since: int) -> list[tuple[str, str, dict | None]]:  # type: ignore[no-untyped-def, type-arg]
    """(event type, pod name, object) of every pod write after revision `since`, in the store's order."""
    store = open_store(lab.store)
    try:
        end = store.revision()
        w = store.watch(keys.kind_prefix("Pod"), since + 1)
        guard = threading.Timer(10, w.close)  # a safety net only: the loop stops at `end`
        guard.start()
        out = []
        try:
            for ev in w:
                obj = json.loads(ev.value) if ev.value else None
                out.append((ev.type, ev.key.rsplit("/", 1)[-1], obj))
                if ev.revision >= end:
                    break
        finally:
            guard.cancel()
            w.close()
        return out
    finally:
        store.close()


def _last_pod_revision(lab) -> int:  # type: ignore[no-untyped-def]
    store = open_store(lab.store)
    try:
        return max((kv.mod_revision for kv in store.list(keys.kind_prefix("Pod")).items), default=0)
    finally:
        store.close()


def _answers(lab, ip: str) -> str:  # type: ignore[no-untyped-def]
    r = lab.exec("node1", "curl", "-sS", "--max-time", "3", f"http://{ip}/")
    return r.stdout


def test_statefulset_ordered_stable_and_reachable(lab_factory):
    lab = lab_factory()
    lab.up()
    start = open_store(lab.store)
    since = start.revision()
    start.close()
    lab.podnet("apply", "-f", "-", input=MANIFEST.replace("REPLICAS", "3"))
    pods = wait_for(lambda: (lambda ps: ps if len(ps) == 3 and all(map(_ready, ps.values())) else None)(_pods(lab)),
                    60, "3 ready pods")
    assert sorted(pods) == ["web-0", "web-1", "web-2"]

    # Ordered: the store's history shows each pod created only after its predecessor was Running and Ready.
    ready_at: dict[str, int] = {}
    created: list[str] = []
    for i, (kind, name, obj) in enumerate(_history(lab, since)):
        if kind == "put" and obj is not None and name not in created and not (obj.get("status") or {}).get("phase"):
            created.append(name)
            ordinal = int(name.rsplit("-", 1)[1])
            if ordinal:
                assert f"web-{ordinal - 1}" in ready_at, f"{name} created before web-{ordinal - 1} was ready"
        if kind == "put" and obj is not None and _ready(obj) and (obj.get("status") or {}).get("phase") == "Running":
            ready_at.setdefault(name, i)
    assert created == ["web-0", "web-1", "web-2"]

    # Identity: hostname, subdomain, the pod-name label, the owner; the headless Service lists them by hostname.
    for name, p in pods.items():
        assert p["spec"]["hostname"] == name and p["spec"]["subdomain"] == "nginx"
        assert p["metadata"]["labels"]["statefulset.kubernetes.io/pod-name"] == name
        assert p["metadata"]["ownerReferences"][0]["kind"] == "StatefulSet"
    ips = {name: p["status"]["podIP"] for name, p in pods.items()}

    def slice_hosts() -> dict[str, str]:
        items = json.loads(lab.podnet("get", "endpointslices", "-o", "json").stdout)["items"]
        out = {}
        for es in items:
            if es["metadata"].get("labels", {}).get("kubernetes.io/service-name") == "nginx":
                for ep in es.get("endpoints") or []:
                    if (ep.get("conditions") or {}).get("ready"):
                        out[ep.get("hostname")] = ep["addresses"][0]
        return out

    wait_for(lambda: slice_hosts() == ips, 20, "the headless Service's endpoints")
    for name, ip in ips.items():  # every listed address answers, and it is that pod that answers
        assert f"host: {name} ({ip})" in _answers(lab, ip)

    # Stable names: a deleted pod comes back as itself (a new address, listed again).
    lab.podnet("delete", "pod", "web-1")
    back = wait_for(lambda: (lambda p: p if p and _ready(p) and p["status"].get("podIP") else None)(
        _pods(lab).get("web-1")), 60, "web-1 back")
    new_ip = back["status"]["podIP"]
    wait_for(lambda: slice_hosts().get("web-1") == new_ip, 20, "web-1's new address listed")
    assert "host: web-1" in _answers(lab, new_ip)

    # Scale down: the highest ordinal goes first.
    mark = _last_pod_revision(lab)
    lab.podnet("apply", "-f", "-", input=MANIFEST.replace("REPLICAS", "1"))
    wait_for(lambda: sorted(_pods(lab)) == ["web-0"], 60, "one pod left")
    gone = [name for kind, name, _ in _history(lab, mark) if kind == "delete"]
    assert gone == ["web-2", "web-1"]
    lab.podnet("delete", "statefulset", "web")
    wait_for(lambda: _pods(lab) == {}, 30, "the set's pods gone with it")
