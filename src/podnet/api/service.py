"""Service (v1): the shape kube-proxy consumes."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, SerializerFunctionWrapHandler, model_serializer

from podnet.api.defaults import (
    DEFAULT_PROTOCOL,
    DEFAULT_SERVICE_TYPE,
    DEFAULT_SESSION_AFFINITY,
    DEFAULT_SESSION_AFFINITY_TIMEOUT,
    DEFAULT_TRAFFIC_POLICY,
)
from podnet.api.meta import Bool, Int, IntOrString, K8sModel, Resource


class ServicePort(K8sModel):
    name: str = ""
    protocol: str = DEFAULT_PROTOCOL
    app_protocol: str | None = None
    port: Int = 0
    target_port: IntOrString | None = None
    node_port: Int | None = None

    @model_serializer(mode="wrap")
    def _omit_empty_name(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # Go's omitempty: an unnamed service port has no name field (unlike EndpointPort's *string).
        data = handler(self)
        if data.get("name") == "":
            del data["name"]
        return data

    @property
    def effective_target_port(self) -> int | str:
        """targetPort as Kubernetes defaults it: unset or 0 means the service port itself."""
        if self.target_port is None or self.target_port == 0 or self.target_port == "":
            return self.port
        return self.target_port


class ClientIPConfig(K8sModel):
    timeout_seconds: Int | None = None


class SessionAffinityConfig(K8sModel):
    client_ip: ClientIPConfig | None = Field(default=None, alias="clientIP")


class ServiceSpec(K8sModel):
    # in the order of Kubernetes' ServiceSpec, so `get -o json` reads like kubectl's
    ports: list[ServicePort] = Field(default_factory=list)
    selector: dict[str, str] | None = None
    cluster_ip: str | None = Field(default=None, alias="clusterIP")
    cluster_ips: list[str] = Field(default_factory=list, alias="clusterIPs")
    type: str = DEFAULT_SERVICE_TYPE
    external_ips: list[str] = Field(default_factory=list, alias="externalIPs")
    session_affinity: str = DEFAULT_SESSION_AFFINITY
    load_balancer_ip: str | None = Field(default=None, alias="loadBalancerIP")
    load_balancer_source_ranges: list[str] = Field(default_factory=list)
    external_name: str | None = None
    external_traffic_policy: str | None = None
    health_check_node_port: Int | None = None
    publish_not_ready_addresses: Bool | None = None
    session_affinity_config: SessionAffinityConfig | None = None
    ip_families: list[str] = Field(default_factory=list, alias="ipFamilies")
    ip_family_policy: str | None = None
    allocate_load_balancer_node_ports: Bool | None = None
    load_balancer_class: str | None = None
    internal_traffic_policy: str | None = None


class LoadBalancerIngress(K8sModel):
    ip: str | None = None
    hostname: str | None = None
    ip_mode: str | None = None


class LoadBalancerStatus(K8sModel):
    ingress: list[LoadBalancerIngress] = Field(default_factory=list)


class ServiceStatus(K8sModel):
    load_balancer: LoadBalancerStatus = Field(default_factory=LoadBalancerStatus)


class Service(Resource):
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Service"

    spec: ServiceSpec = Field(default_factory=ServiceSpec)
    status: ServiceStatus = Field(default_factory=ServiceStatus)

    @property
    def ports(self) -> list[ServicePort]:
        return self.spec.ports

    @property
    def is_headless(self) -> bool:
        return self.spec.cluster_ip == "None"

    @property
    def has_selector(self) -> bool:
        """Services without a selector get their EndpointSlices from the user, not from the controller."""
        return bool(self.spec.selector)

    @property
    def cluster_ips(self) -> list[str]:
        """The allocated cluster IPs; none for a headless Service (whose clusterIPs is ["None"])."""
        if self.spec.cluster_ips:
            return [ip for ip in self.spec.cluster_ips if ip and ip != "None"]
        if self.spec.cluster_ip and self.spec.cluster_ip != "None":
            return [self.spec.cluster_ip]
        return []

    @property
    def uses_node_ports(self) -> bool:
        """NodePort services always; LoadBalancer ones unless allocateLoadBalancerNodePorts is false."""
        if self.spec.type == "NodePort":
            return True
        return self.spec.type == "LoadBalancer" and self.spec.allocate_load_balancer_node_ports is not False

    @property
    def external_traffic_policy(self) -> str:
        """Cluster unless Local (the Kubernetes default for externally reachable services)."""
        return self.spec.external_traffic_policy or DEFAULT_TRAFFIC_POLICY

    @property
    def internal_traffic_policy(self) -> str:
        return self.spec.internal_traffic_policy or DEFAULT_TRAFFIC_POLICY

    @property
    def session_affinity_timeout(self) -> int | None:
        """Seconds of ClientIP affinity (Kubernetes' default: three hours), None without affinity."""
        if self.spec.session_affinity != "ClientIP":
            return None
        cfg = self.spec.session_affinity_config
        if cfg and cfg.client_ip and cfg.client_ip.timeout_seconds is not None:
            return cfg.client_ip.timeout_seconds
        return DEFAULT_SESSION_AFFINITY_TIMEOUT

    @property
    def load_balancer_ips(self) -> list[str]:
        return [i.ip for i in self.status.load_balancer.ingress if i.ip]
