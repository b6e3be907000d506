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


class NodeStatus(K8sModel):
    addresses: list[NodeAddress] = Field(default_factory=list)


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
