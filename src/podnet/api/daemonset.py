"""DaemonSet (apps/v1): stored so deploy/'s DaemonSets apply to podnet's API server. podnet runs no
DaemonSet controller (the lab starts its node agents itself); the pod template is kept as sent."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from podnet.api.meta import Int, K8sModel, Resource


class DaemonSetSpec(K8sModel):
    selector: dict[str, Any] = Field(default_factory=dict)
    template: dict[str, Any] = Field(default_factory=dict)
    update_strategy: dict[str, Any] = Field(default_factory=dict)
    min_ready_seconds: Int | None = None
    revision_history_limit: Int | None = None


class DaemonSet(Resource):
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "DaemonSet"

    spec: DaemonSetSpec = Field(default_factory=DaemonSetSpec)
    status: dict[str, Any] = Field(default_factory=dict)
