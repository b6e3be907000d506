"""The resources the server serves, as discovery describes them to clients.

One row per resource; discovery documents, routing, short names (`svc`, `po`...) and the store's kind all come
from this table. `stored=False` marks Endpoints: computed from EndpointSlices on every read, as Kubernetes'
endpoints mirroring keeps them, and read-only here.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podnet.api.cluster import ConfigMap, Event, Namespace
from podnet.api.daemonset import DaemonSet
from podnet.api.deployment import Deployment
from podnet.api.endpointslice import EndpointSlice
from podnet.api.meta import Resource
from podnet.api.node import Node
from podnet.api.pod import Pod
from podnet.api.rbac import ClusterRole, ClusterRoleBinding, ServiceAccount
from podnet.api.service import Service
from podnet.api.statefulset import StatefulSet

ALL_VERBS = ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"]
READ_VERBS = ["get", "list", "watch"]


@dataclass(frozen=True)
class ResourceType:
    plural: str
    kind: str
    group: str  # "" for the core group
    version: str
    namespaced: bool
    model: type[Resource] | None
    short_names: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    verbs: list[str] = field(default_factory=lambda: list(ALL_VERBS))
    subresources: dict[str, list[str]] = field(default_factory=dict)
    stored: bool = True

    @property
    def group_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def singular(self) -> str:
        return self.kind.lower()


RESOURCES: list[ResourceType] = [
    ResourceType("namespaces", "Namespace", "", "v1", False, Namespace, ["ns"],
                 verbs=["create", "delete", "get", "list", "patch", "update", "watch"],
                 subresources={"status": ["get", "patch", "update"]}),
    ResourceType("services", "Service", "", "v1", True, Service, ["svc"], ["all"],
                 subresources={"status": ["get", "patch", "update"]}),
    ResourceType("endpoints", "Endpoints", "", "v1", True, None, ["ep"], verbs=list(READ_VERBS), stored=False),
    ResourceType("pods", "Pod", "", "v1", True, Pod, ["po"], ["all"],
                 subresources={"status": ["get", "patch", "update"], "log": ["get"], "exec": ["create", "get"]}),
    ResourceType("nodes", "Node", "", "v1", False, Node, ["no"],
                 subresources={"status": ["get", "patch", "update"]}),
    ResourceType("configmaps", "ConfigMap", "", "v1", True, ConfigMap, ["cm"]),
    ResourceType("events", "Event", "", "v1", True, Event, ["ev"]),
    ResourceType("endpointslices", "EndpointSlice", "discovery.k8s.io", "v1", True, EndpointSlice),
    ResourceType("deployments", "Deployment", "apps", "v1", True, Deployment, ["deploy"], ["all"],
                 subresources={"scale": ["get", "patch", "update"]}),
    ResourceType("statefulsets", "StatefulSet", "apps", "v1", True, StatefulSet, ["sts"], ["all"],
                 subresources={"status": ["get", "patch", "update"], "scale": ["get", "patch", "update"]}),
]

# Stored for deploy/'s manifests (RBAC is not enforced: any authenticated client may do everything).
RESOURCES += [
    ResourceType("serviceaccounts", "ServiceAccount", "", "v1", True, ServiceAccount, ["sa"]),
    ResourceType("clusterroles", "ClusterRole", "rbac.authorization.k8s.io", "v1", False, ClusterRole),
    ResourceType("clusterrolebindings", "ClusterRoleBinding", "rbac.authorization.k8s.io", "v1", False,
                 ClusterRoleBinding),
    ResourceType("daemonsets", "DaemonSet", "apps", "v1", True, DaemonSet, ["ds"], ["all"],
                 subresources={"status": ["get", "patch", "update"]}),
]

GROUPS: dict[str, list[str]] = {}
for _r in RESOURCES:
    if _r.group:
        GROUPS.setdefault(_r.group, [])
        if _r.version not in GROUPS[_r.group]:
            GROUPS[_r.group].append(_r.version)

_BY_PATH = {(r.group, r.version, r.plural): r for r in RESOURCES}
BY_KIND = {r.kind: r for r in RESOURCES}


def lookup(group: str, version: str, plural: str) -> ResourceType | None:
    return _BY_PATH.get((group, version, plural))


def resource_list(group: str, version: str) -> dict[str, object] | None:
    """The APIResourceList of one group version (GET /api/v1, /apis/<g>/<v>)."""
    rows: list[dict[str, object]] = []
    for r in RESOURCES:
        if (r.group, r.version) != (group, version):
            continue
        row: dict[str, object] = {"name": r.plural, "singularName": r.singular, "namespaced": r.namespaced,
                                  "kind": r.kind, "verbs": r.verbs}
        if r.short_names:
            row["shortNames"] = r.short_names
        if r.categories:
            row["categories"] = r.categories
        rows.append(row)
        for sub, verbs in r.subresources.items():
            row = {"name": f"{r.plural}/{sub}", "singularName": "", "namespaced": r.namespaced, "kind": r.kind,
                   "verbs": verbs}
            if sub == "scale":  # the scale client finds Scale's own group/version here
                row.update(kind="Scale", group="autoscaling", version="v1")
            rows.append(row)
    if not rows:
        return None
    gv = f"{group}/{version}" if group else version
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": rows}


def groups() -> list[dict[str, object]]:
    """The APIGroup documents (without kind and apiVersion), one per named group."""
    out: list[dict[str, object]] = []
    for g, versions in GROUPS.items():
        vs = [{"groupVersion": f"{g}/{v}", "version": v} for v in versions]
        out.append({"name": g, "versions": vs, "preferredVersion": vs[0]})
    return out


def group_list() -> dict[str, object]:
    return {"kind": "APIGroupList", "apiVersion": "v1", "groups": groups()}
