"""StatefulSet (apps/v1): pods with stable names <name>-0..N-1, created and removed in order.

Only what the lab's controller acts on is typed; storage (volumeClaimTemplates, the PVC retention policy)
is accepted and kept but not acted on: podnet has no volumes, and a classic "headless Service +
StatefulSet" manifest must still load.
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field

from podnet.api.deployment import LabelSelector, PodTemplateSpec
from podnet.api.meta import Int, IntOrString, K8sModel, Resource

ORDERED_READY = "OrderedReady"
PARALLEL = "Parallel"
ROLLING_UPDATE = "RollingUpdate"
ON_DELETE = "OnDelete"


class RollingUpdateStatefulSetStrategy(K8sModel):
    partition: Int | None = None
    max_unavailable: IntOrString | None = None


class StatefulSetUpdateStrategy(K8sModel):
    type: str | None = None
    rolling_update: RollingUpdateStatefulSetStrategy | None = None


class StatefulSetOrdinals(K8sModel):
    start: Int | None = None


class StatefulSetSpec(K8sModel):
    replicas: Int | None = None
    selector: LabelSelector = Field(default_factory=LabelSelector)
    template: PodTemplateSpec = Field(default_factory=PodTemplateSpec)
    service_name: str | None = None
    pod_management_policy: str | None = None
    update_strategy: StatefulSetUpdateStrategy = Field(default_factory=StatefulSetUpdateStrategy)
    revision_history_limit: Int | None = None
    min_ready_seconds: Int | None = None
    ordinals: StatefulSetOrdinals | None = None
    # kept as given, not acted on (see the module docstring)
    volume_claim_templates: list[dict[str, Any]] = Field(default_factory=list)
    persistent_volume_claim_retention_policy: dict[str, Any] | None = None


class StatefulSetStatus(K8sModel):
    observed_generation: Int | None = None
    replicas: Int = 0  # replicas and availableReplicas have no omitempty in Kubernetes' type
    ready_replicas: Int | None = None
    current_replicas: Int | None = None
    updated_replicas: Int | None = None
    available_replicas: Int = 0
    current_revision: str | None = None
    update_revision: str | None = None
    collision_count: Int | None = None


class StatefulSet(Resource):
    API_VERSION: ClassVar[str] = "apps/v1"
    KIND: ClassVar[str] = "StatefulSet"

    spec: StatefulSetSpec = Field(default_factory=StatefulSetSpec)
    status: StatefulSetStatus = Field(default_factory=StatefulSetStatus)

    @property
    def replicas(self) -> int:
        """Kubernetes' default is 1 replica."""
        return 1 if self.spec.replicas is None else self.spec.replicas

    @property
    def start_ordinal(self) -> int:
        o = self.spec.ordinals
        return o.start if o is not None and o.start is not None else 0

    @property
    def ordered(self) -> bool:
        """OrderedReady (the default): one pod at a time, each after its predecessors are Running and Ready."""
        return (self.spec.pod_management_policy or ORDERED_READY) != PARALLEL

    @property
    def update_type(self) -> str:
        return self.spec.update_strategy.type or ROLLING_UPDATE

    @property
    def partition(self) -> int:
        ru = self.spec.update_strategy.rolling_update
        return ru.partition if ru is not None and ru.partition is not None else 0
