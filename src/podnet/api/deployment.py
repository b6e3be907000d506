"""Deployment (apps/v1): replicas of a pod template; the lab turns it into pods."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from podnet.api.meta import Bool, Int, IntOrString, K8sModel, Resource
from podnet.api.pod import PodSpec


class LabelSelector(K8sModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


class PodTemplateMeta(K8sModel):
    name: str | None = None
    creation_timestamp: str | None = None  # kubectl writes null here; no template has one
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PodTemplateSpec(K8sModel):
    metadata: PodTemplateMeta = Field(default_factory=PodTemplateMeta)
    spec: PodSpec = Field(default_factory=PodSpec)


class RollingUpdateDeployment(K8sModel):
    max_unavailable: IntOrString | None = None
    max_surge: IntOrString | None = None


class DeploymentStrategy(K8sModel):
    """Kept as given (`kubectl create deployment` sends an empty one); the lab replaces pods at once."""

    type: str | None = None
    rolling_update: RollingUpdateDeployment | None = None


class DeploymentSpec(K8sModel):
    replicas: Int | None = None
    selector: LabelSelector = Field(default_factory=LabelSelector)
    template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)
    strategy: DeploymentStrategy | None = None
    min_ready_seconds: Int | None = None
    revision_history_limit: Int | None = None
    paused: Bool | None = None
    progress_deadline_seconds: Int | None = None


class DeploymentStatus(K8sModel):
    observed_generation: Int | None = None
    replicas: Int | None = None
    updated_replicas: Int | None = None
    ready_replicas: Int | None = None
    available_replicas: Int | None = None
    unavailable_replicas: Int | None = None
    conditions: list[dict[str, str]] = Field(default_factory=list)


class Deployment(Resource):
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "Deployment"

    spec: DeploymentSpec = Field(default_factory=DeploymentSpec)
    status: DeploymentStatus = Field(default_factory=DeploymentStatus)

    @property
    def replicas(self) -> int:
        """Kubernetes' default is 1 replica."""
        return 1 if self.spec.replicas is None else self.spec.replicas
