"""Resource types (Service, EndpointSlice, Pod, Node, Deployment, StatefulSet), YAML/JSON in and out, validation.

Imports only pydantic and PyYAML, so daemons and CNI plugins can use the types cheaply.
"""

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
