"""The names proxy/state.py used to define, importable from here while their users move.

The desired state now lives in three places, one job each: decoding objects in api/decode.py (IP parsing in
api/ipaddr.py, defaults in api/defaults.py), the data in proxy/model.py, and objects -> service ports in
proxy/tracker.py (endpoint selection in proxy/topology.py). New code imports from those modules.
"""

from __future__ import annotations

from podnet.api.decode import DecodedSlice as ParsedSlice
from podnet.api.decode import SliceEndpoint, as_dict
from podnet.api.decode import decode_endpoint_slice as parse_endpoint_slice
from podnet.api.decode import decode_node as parse_node
from podnet.api.defaults import DEFAULT_SESSION_AFFINITY_TIMEOUT as DEFAULT_STICKY_SECONDS
from podnet.api.defaults import IPV4, IPV6, PROTOCOLS, SERVICE_NAME_LABEL, ZONE_LABEL
from podnet.api.ipaddr import (
    IPAddress,
    IPNetwork,
    canonical_ip,
    ip_family_of,
    join_host_port,
    parse_cidr,
    parse_ip,
)
from podnet.proxy.model import (
    DesiredState,
    Endpoint,
    ServicePort,
    ServicePortName,
    changed_service_ports,
    changed_services,
    needs_full_sync,
    service_port_order,
)
from podnet.proxy.topology import Categorized, categorize_endpoints
from podnet.proxy.tracker import (
    ParsedService,
    build_desired_state,
    desired_state_from_objects,
    parse_service,
)

__all__ = [
    "DEFAULT_STICKY_SECONDS",
    "IPV4",
    "IPV6",
    "PROTOCOLS",
    "SERVICE_NAME_LABEL",
    "ZONE_LABEL",
    "Categorized",
    "DesiredState",
    "Endpoint",
    "IPAddress",
    "IPNetwork",
    "ParsedService",
    "ParsedSlice",
    "ServicePort",
    "ServicePortName",
    "SliceEndpoint",
    "as_dict",
    "build_desired_state",
    "canonical_ip",
    "categorize_endpoints",
    "changed_service_ports",
    "changed_services",
    "desired_state_from_objects",
    "ip_family_of",
    "join_host_port",
    "needs_full_sync",
    "parse_cidr",
    "parse_endpoint_slice",
    "parse_ip",
    "parse_node",
    "parse_service",
    "service_port_order",
]
