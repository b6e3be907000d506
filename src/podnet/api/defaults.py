"""Kubernetes' enumerations and API defaults, once: what a Service, EndpointSlice or Node field means when unset.

The API server fills these in (`SetDefaults_Service`, `SetDefaults_EndpointPort`, ...); objects that never went
through one (kube-proxy's golden inputs, hand-written YAML) arrive without them, so every reader that interprets
an object (validation, `podnet apply`'s defaulting, the models' properties and the proxy's decoder) takes the
value from here instead of writing its own literal.
"""

from __future__ import annotations

# Address families, as spec.ipFamilies and EndpointSlice.addressType spell them.
IPV4 = "IPv4"
IPV6 = "IPv6"
FQDN = "FQDN"
ADDRESS_TYPES = (IPV4, IPV6, FQDN)
DEFAULT_ADDRESS_TYPE = IPV4

# Ports: kube-proxy's order (TCP first); validation messages list them sorted, as Kubernetes' do.
PROTOCOLS = ("TCP", "UDP", "SCTP")
DEFAULT_PROTOCOL = "TCP"

DEFAULT_NAMESPACE = "default"

SERVICE_TYPES = ("ClusterIP", "ExternalName", "LoadBalancer", "NodePort")
DEFAULT_SERVICE_TYPE = "ClusterIP"

TRAFFIC_POLICIES = ("Cluster", "Local")
DEFAULT_TRAFFIC_POLICY = "Cluster"

SESSION_AFFINITIES = ("ClientIP", "None")
DEFAULT_SESSION_AFFINITY = "None"
DEFAULT_SESSION_AFFINITY_TIMEOUT = 10800  # sessionAffinityConfig.clientIP.timeoutSeconds: three hours
MAX_SESSION_AFFINITY_TIMEOUT = 86400  # one day

# Labels that carry meaning for readers of these objects.
SERVICE_NAME_LABEL = "kubernetes.io/service-name"  # EndpointSlice -> its Service
ZONE_LABEL = "topology.kubernetes.io/zone"  # Node -> its zone (topology-aware routing)
SERVICE_PROXY_NAME_LABEL = "service.kubernetes.io/service-proxy-name"  # Service -> implemented by another proxy
HEADLESS_LABEL = "service.kubernetes.io/headless"  # EndpointSlice of a headless Service (set by the controller)
