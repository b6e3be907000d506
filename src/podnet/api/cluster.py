"""Namespace, ConfigMap and Event (v1): kinds the API server stores for clients; podnet's daemons only read
ConfigMaps (flannel's net-conf lives in one) and the lab writes Events.

Only the fields podnet looks at are typed; everything else a client sends is kept as it came (extra="allow"),
as the real server keeps every field of its full types.
"""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from podnet.api.meta import Int, K8sModel, Resource


class NamespaceSpec(K8sModel):
    finalizers: list[str] = Field(default_factory=list)


class NamespaceStatus(K8sModel):
    phase: str | None = None


class Namespace(Resource):
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Namespace"
    NAMESPACED: ClassVar[bool] = False

    spec: NamespaceSpec = Field(default_factory=NamespaceSpec)
    status: NamespaceStatus = Field(default_factory=NamespaceStatus)


class ConfigMap(Resource):
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "ConfigMap"

    data: dict[str, str] = Field(default_factory=dict)
    binary_data: dict[str, str] = Field(default_factory=dict)
    immutable: bool | None = None


class EventObjectReference(K8sModel):
    warn_unknown: ClassVar[bool] = False
    kind: str | None = None
    namespace: str | None = None
    name: str | None = None
    uid: str | None = None
    api_version: str | None = None
    resource_version: str | None = None
    field_path: str | None = None


class EventSource(K8sModel):
    component: str | None = None
    host: str | None = None


class Event(Resource):
    """core/v1 Event, the form `kubectl describe` reads (involvedObject, reason, message, count)."""

    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Event"
    warn_unknown: ClassVar[bool] = False

    involved_object: EventObjectReference = Field(default_factory=EventObjectReference)
    reason: str | None = None
    message: str | None = None
    type: str | None = None
    count: Int | None = None
    first_timestamp: str | None = None
    last_timestamp: str | None = None
    source: EventSource = Field(default_factory=EventSource)
    reporting_component: str | None = None
    reporting_instance: str | None = None
