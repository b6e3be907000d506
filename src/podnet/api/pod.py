"""Pod (v1): only what networking needs. A container has no image here: the lab runs command/args in the
pod's network namespace, and a container without a command runs podnet's built-in HTTP server."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from podnet.api.meta import Bool, Int, K8sModel, Resource


class ContainerPort(K8sModel):
    name: str | None = None
    container_port: Int = 0
    protocol: str = "TCP"
    host_port: Int | None = None
    host_ip: str | None = Field(default=None, alias="hostIP")


class Container(K8sModel):
    warn_unknown = False  # a real Container has dozens of fields podnet ignores (resources, probes, ...)

    name: str = ""
    image: str | None = None
    command: list[str] = Field(default_factory=list)
    args: list[str] = Field(default_factory=list)
    ports: list[ContainerPort] = Field(default_factory=list)


class PodDNSConfigOption(K8sModel):
    name: str = ""
    value: str | None = None


class PodDNSConfig(K8sModel):
    """What a pod adds to (or, with dnsPolicy None, is) the resolver configuration the kubelet writes."""

    nameservers: list[str] = Field(default_factory=list)
    searches: list[str] = Field(default_factory=list)
    options: list[PodDNSConfigOption] = Field(default_factory=list)


class PodSpec(K8sModel):
    warn_unknown = False

    node_name: str | None = None
    containers: list[Container] = Field(default_factory=list)
    host_network: Bool | None = None
    hostname: str | None = None
    subdomain: str | None = None
    restart_policy: str | None = None
    dns_policy: str | None = None  # ClusterFirst (the default), ClusterFirstWithHostNet, Default, None
    dns_config: PodDNSConfig | None = Field(default=None, alias="dnsConfig")


class PodCondition(K8sModel):
    type: str = ""
    status: str = ""
    reason: str | None = None
    message: str | None = None


class PodIP(K8sModel):
    ip: str = ""


class PodStatus(K8sModel):
    phase: str | None = None
    reason: str | None = None  # e.g. NodeLost: what `kubectl get pods` shows as STATUS when set
    message: str | None = None
    pod_ip: str | None = Field(default=None, alias="podIP")
    pod_ips: list[PodIP] = Field(default_factory=list, alias="podIPs")
    host_ip: str | None = Field(default=None, alias="hostIP")
    conditions: list[PodCondition] = Field(default_factory=list)


class Pod(Resource):
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Pod"

    spec: PodSpec = Field(default_factory=PodSpec)
    status: PodStatus = Field(default_factory=PodStatus)

    @property
    def is_ready(self) -> bool:
        """Kubernetes' IsPodReady: the Ready condition is True."""
        return any(c.type == "Ready" and c.status == "True" for c in self.status.conditions)

    @property
    def is_terminal(self) -> bool:
        return self.status.phase in ("Succeeded", "Failed")

    @property
    def ips(self) -> list[str]:
        if self.status.pod_ips:
            return [p.ip for p in self.status.pod_ips if p.ip]
        return [self.status.pod_ip] if self.status.pod_ip else []

    def find_port(self, name: str, protocol: str) -> int | None:
        """The containerPort of the named port with that protocol (Kubernetes' FindPort), else None."""
        for c in self.spec.containers:
            for p in c.ports:
                if p.name == name and (p.protocol or "TCP") == protocol:
                    return p.container_port
        return None
