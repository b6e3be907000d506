"""Node (v1): a machine of the cluster, with its addresses and pod CIDR."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from podnet.api.meta import Bool, K8sModel, Resource


class NodeAddress(K8sModel):
    type: str = ""
    address: str = ""


class NodeSpec(K8sModel):
    pod_cidr: str | None = Field(default=None, alias="podCIDR")
    pod_cidrs: list[str] = Field(default_factory=list, alias="podCIDRs")
    unschedulable: Bool | None = None


class NodeCondition(K8sModel):
    """Ready (and, on a real kubelet, MemoryPressure, DiskPressure, ...): posted by the node's agent,
    set to Unknown by the control plane when the agent stops posting (lab/nodestatus.py)."""

    type: str = ""
    status: str = ""  # "True" | "False" | "Unknown"
    last_heartbeat_time: str | None = None
    last_transition_time: str | None = None
    reason: str | None = None
    message: str | None = None


class NodeSystemInfo(K8sModel):
    machine_id: str = Field(default="", alias="machineID")
    system_uuid: str = Field(default="", alias="systemUUID")
    boot_id: str = Field(default="", alias="bootID")
    kernel_version: str = ""
    os_image: str = ""
    container_runtime_version: str = ""
    kubelet_version: str = ""
    kube_proxy_version: str = ""
    operating_system: str = ""
    architecture: str = ""


class NodeStatus(K8sModel):
    addresses: list[NodeAddress] = Field(default_factory=list)
    conditions: list[NodeCondition] = Field(default_factory=list)
    node_info: NodeSystemInfo | None = None


class Node(Resource):
    API_VERSION: ClassVar[str] = "v1"
    KIND: ClassVar[str] = "Node"
    NAMESPACED: ClassVar[bool] = False

    spec: NodeSpec = Field(default_factory=NodeSpec)
    status: NodeStatus = Field(default_factory=NodeStatus)

    def address(self, kind: str = "InternalIP") -> str | None:
        for a in self.status.addresses:
            if a.type == kind:
                return a.address
        return None

    @property
    def internal_ip(self) -> str | None:
        return self.address("InternalIP")

    @property
    def ready(self) -> str | None:
        """The Ready condition's status ("True", "False", "Unknown"), None if it has none."""
        return next((c.status for c in self.status.conditions if c.type == "Ready"), None)
