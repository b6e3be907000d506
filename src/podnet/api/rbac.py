"""ServiceAccount (v1), ClusterRole and ClusterRoleBinding (rbac.authorization.k8s.io/v1): stored so the
deployment files in deploy/ apply to podnet's API server (`kubectl apply --dry-run=server -f deploy/`).

podnet authorizes nothing by them (its server authenticates, every client may do everything); only the
shapes are checked, the rest of each object is kept as sent.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from podnet.api.meta import Bool, K8sModel, Resource


class ServiceAccount(Resource):
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "ServiceAccount"

    secrets: list[dict[str, Any]] = Field(default_factory=list)
    image_pull_secrets: list[dict[str, Any]] = Field(default_factory=list)
    automount_service_account_token: Bool | None = None


class PolicyRule(K8sModel):
    verbs: list[str] = Field(default_factory=list)
    api_groups: list[str] = Field(default_factory=list)
    resources: list[str] = Field(default_factory=list)
    resource_names: list[str] = Field(default_factory=list)
    non_resource_urls: list[str] = Field(default_factory=list, alias="nonResourceURLs")


class ClusterRole(Resource):
    API_VERSION: ClassVar[str] = "rbac.authorization.k8s.io/v1"
    KIND: ClassVar[str] = "ClusterRole"
    NAMESPACED: ClassVar[bool] = False

    rules: list[PolicyRule] = Field(default_factory=list)
    aggregation_rule: dict[str, Any] | None = None


class RoleRef(K8sModel):
    api_group: str = ""
    kind: str = ""
    name: str = ""


class Subject(K8sModel):
    kind: str = ""
    name: str = ""
    namespace: str | None = None
    api_group: str | None = None


class ClusterRoleBinding(Resource):
    API_VERSION: ClassVar[str] = "rbac.authorization.k8s.io/v1"
    KIND: ClassVar[str] = "ClusterRoleBinding"
    NAMESPACED: ClassVar[bool] = False

    role_ref: RoleRef = Field(default_factory=RoleRef)
    subjects: list[Subject] = Field(default_factory=list)
