"""Resource types (Service, EndpointSlice, Pod, Node, Deployment, StatefulSet), YAML/JSON in and out, validation.

Imports only pydantic and PyYAML, so daemons and CNI plugins can use the types cheaply; the names below are
loaded when first used (PEP 562), so a daemon that needs `podnet.api.defaults` or `podnet.api.decode` does not
load every kind's model (the proxy: ~0.2 s and several MB less at start).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from podnet.api.deployment import Deployment
    from podnet.api.endpointslice import (
        CONTROLLER_NAME,
        MANAGED_BY_LABEL,
        SERVICE_NAME_LABEL,
        Endpoint,
        EndpointConditions,
        EndpointPort,
        EndpointSlice,
        ObjectReference,
    )
    from podnet.api.loader import (
        KINDS,
        Loaded,
        dump_json,
        dump_yaml,
        from_json,
        load,
        load_objects,
        load_paths,
        parse_object,
        to_json,
    )
    from podnet.api.meta import ObjectMeta, Resource
    from podnet.api.node import Node, NodeAddress
    from podnet.api.pod import Container, ContainerPort, Pod, PodCondition
    from podnet.api.service import Service, ServicePort
    from podnet.api.statefulset import StatefulSet
    from podnet.api.validation import validate

_EXPORTS = {
    "CONTROLLER_NAME": "podnet.api.endpointslice",
    "Container": "podnet.api.pod",
    "ContainerPort": "podnet.api.pod",
    "Deployment": "podnet.api.deployment",
    "Endpoint": "podnet.api.endpointslice",
    "EndpointConditions": "podnet.api.endpointslice",
    "EndpointPort": "podnet.api.endpointslice",
    "EndpointSlice": "podnet.api.endpointslice",
    "KINDS": "podnet.api.loader",
    "Loaded": "podnet.api.loader",
    "MANAGED_BY_LABEL": "podnet.api.endpointslice",
    "Node": "podnet.api.node",
    "NodeAddress": "podnet.api.node",
    "ObjectMeta": "podnet.api.meta",
    "ObjectReference": "podnet.api.endpointslice",
    "Pod": "podnet.api.pod",
    "PodCondition": "podnet.api.pod",
    "Resource": "podnet.api.meta",
    "SERVICE_NAME_LABEL": "podnet.api.endpointslice",
    "Service": "podnet.api.service",
    "ServicePort": "podnet.api.service",
    "StatefulSet": "podnet.api.statefulset",
    "dump_json": "podnet.api.loader",
    "dump_yaml": "podnet.api.loader",
    "from_json": "podnet.api.loader",
    "load": "podnet.api.loader",
    "load_objects": "podnet.api.loader",
    "load_paths": "podnet.api.loader",
    "parse_object": "podnet.api.loader",
    "to_json": "podnet.api.loader",
    "validate": "podnet.api.validation",
}

__all__ = [
    "CONTROLLER_NAME",
    "KINDS",
    "MANAGED_BY_LABEL",
    "SERVICE_NAME_LABEL",
    "Container",
    "ContainerPort",
    "Deployment",
    "Endpoint",
    "EndpointConditions",
    "EndpointPort",
    "EndpointSlice",
    "Loaded",
    "Node",
    "NodeAddress",
    "ObjectMeta",
    "ObjectReference",
    "Pod",
    "PodCondition",
    "Resource",
    "Service",
    "ServicePort",
    "StatefulSet",
    "dump_json",
    "dump_yaml",
    "from_json",
    "load",
    "load_objects",
    "load_paths",
    "parse_object",
    "to_json",
    "validate",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *__all__])
