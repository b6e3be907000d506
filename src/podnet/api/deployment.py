"""Deployment (apps/v1): replicas of a pod template; the lab turns it into pods."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from podnet.api.meta import Int, K8sModel, Resource
from podnet.api.pod import PodSpec


class LabelSelector(K8sModel):
    match_labels: dict[str, str] = Field(default_factory=dict)


class PodTemplateMeta(K8sModel):
    name: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class PodTemplateSpec(K8sModel):
    metadata: PodTemplateMeta = Field(default_factory=PodTemplateMeta)
    spec: PodSpec = Field(default_factory=PodSpec)


class DeploymentSpec(K8sModel):
    replicas: Int | None = None
    selector: LabelSelector = Field(default_factory=LabelSelector)
    template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)


class Deployment(Resource):
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "Deployment"

    spec: DeploymentSpec = Field(default_factory=DeploymentSpec)

    @property
    def replicas(self) -> int:
        """Kubernetes' default is 1 replica."""
        return 1 if self.spec.replicas is None else self.spec.replicas
