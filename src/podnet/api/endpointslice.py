"""EndpointSlice (discovery.k8s.io/v1): the backends of a Service, as kube-proxy reads them."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from podnet.api.defaults import DEFAULT_ADDRESS_TYPE, DEFAULT_PROTOCOL, SERVICE_NAME_LABEL
from podnet.api.meta import Bool, Int, K8sModel, Resource

MANAGED_BY_LABEL = "endpointslice.kubernetes.io/managed-by"
CONTROLLER_NAME = "endpointslice-controller.k8s.io"


class EndpointConditions(K8sModel):
    ready: Bool | None = None
    serving: Bool | None = None
    terminating: Bool | None = None


class ObjectReference(K8sModel):
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None


class Endpoint(K8sModel):
    addresses: list[str] = Field(default_factory=list)
    conditions: EndpointConditions = Field(default_factory=EndpointConditions)
    hostname: str | None = None
    node_name: str | None = None
    zone: str | None = None
    target_ref: ObjectReference | None = None

    # Unset conditions are read the way kube-proxy reads them: ready and serving default to true
    # ("unknown state, assume ready"), terminating to false.
    @property
    def is_ready(self) -> bool:
        return self.conditions.ready is None or self.conditions.ready

    @property
    def is_serving(self) -> bool:
        return self.conditions.serving is None or self.conditions.serving

    @property
    def is_terminating(self) -> bool:
        return bool(self.conditions.terminating)


class EndpointPort(K8sModel):
    name: str | None = None
    protocol: str | None = DEFAULT_PROTOCOL
    port: Int | None = None
    app_protocol: str | None = None


class EndpointSlice(Resource):
    API_VERSION: ClassVar[str] = "discovery.k8s.io/v1"
    KIND: ClassVar[str] = "EndpointSlice"

    address_type: str = DEFAULT_ADDRESS_TYPE
    endpoints: list[Endpoint] = Field(default_factory=list)
    ports: list[EndpointPort] = Field(default_factory=list)

    @property
    def service_name(self) -> str | None:
        return self.metadata.labels.get(SERVICE_NAME_LABEL)

    @property
    def is_controller_managed(self) -> bool:
        return self.metadata.labels.get(MANAGED_BY_LABEL) == CONTROLLER_NAME
