"""The names and fixed data of kube-proxy's iptables layout: chain names, hashes, jumps from built-in chains.

Chain names are kube-proxy's own (sha256/base32 hashes of the service port), so operators' greps and scripts
keep working. The jumps from the built-in chains (INPUT, FORWARD, OUTPUT, PREROUTING, POSTROUTING) cannot be
written by a `--noflush` restore without owning those chains: `JUMPS` is what the restorer ensures on full
syncs (looked up with `iptables -S`, inserted by the restore).
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from podnet.proxy.model import ServicePort

# Chains kube-proxy owns.
KUBE_SERVICES = "KUBE-SERVICES"
KUBE_EXTERNAL_SERVICES = "KUBE-EXTERNAL-SERVICES"
KUBE_NODEPORTS = "KUBE-NODEPORTS"
KUBE_POSTROUTING = "KUBE-POSTROUTING"
KUBE_MARK_MASQ = "KUBE-MARK-MASQ"
KUBE_FORWARD = "KUBE-FORWARD"
KUBE_PROXY_FIREWALL = "KUBE-PROXY-FIREWALL"
KUBE_FIREWALL = "KUBE-FIREWALL"  # kubelet's anti-martian chain, duplicated by kube-proxy

SVC_PREFIX = "KUBE-SVC-"
SVL_PREFIX = "KUBE-SVL-"
FW_PREFIX = "KUBE-FW-"
EXT_PREFIX = "KUBE-EXT-"
SEP_PREFIX = "KUBE-SEP-"
SERVICE_CHAIN_PREFIXES = (SVC_PREFIX, SVL_PREFIX, SEP_PREFIX, FW_PREFIX, EXT_PREFIX)

LARGE_CLUSTER_ENDPOINTS_THRESHOLD = 1000  # above this, per-endpoint comments are dropped

NFACCT_INVALID = "ct_state_invalid_dropped_pkts"
NFACCT_LOCALHOST = "localhost_nps_accepted_pkts"

FILTER_TOP_CHAINS = (KUBE_SERVICES, KUBE_EXTERNAL_SERVICES, KUBE_FORWARD, KUBE_NODEPORTS, KUBE_PROXY_FIREWALL)
NAT_TOP_CHAINS = (KUBE_SERVICES, KUBE_NODEPORTS, KUBE_POSTROUTING, KUBE_MARK_MASQ)


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain that sends traffic into one of podnet's chains (kube-proxy's jump chains)."""

    table: str
    chain: str
    target: str
    comment: str | None
    extra: tuple[str, ...] = ()

    def rule(self) -> str:
        parts = list(self.extra)
        if self.comment is not None:
            parts += ["-m", "comment", "--comment", f'"{self.comment}"']
        parts += ["-j", self.target]
        return " ".join(parts)

    def matches(self, line: str) -> bool:
        """Whether an `iptables -S` / iptables-save line (`-A CHAIN ...`, the kernel's spelling) is this jump."""
        if not line.startswith(f"-A {self.chain} ") or not line.endswith(f"-j {self.target}"):
            return False
        if self.comment is None:
            return "--comment" not in line
        if f'--comment "{self.comment}"' not in line and f"--comment {self.comment}" not in line:
            return False
        return ("--ctstate NEW" in line) == ("--ctstate" in " ".join(self.extra))


_NEW = ("-m", "conntrack", "--ctstate", "NEW")
# kube-proxy's iptablesJumpChains + iptablesKubeletJumpChains, in its order (each is prepended, so the
# resulting order in a built-in chain is the reverse of this list).
JUMPS: tuple[Jump, ...] = (
    Jump("filter", "INPUT", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "FORWARD", "KUBE-EXTERNAL-SERVICES", "kubernetes externally-visible service portals", _NEW),
    Jump("filter", "INPUT", "KUBE-NODEPORTS", "kubernetes health check service ports"),
    Jump("filter", "FORWARD", "KUBE-SERVICES", "kubernetes service portals", _NEW),
    Jump("filter", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals", _NEW),
    Jump("filter", "FORWARD", "KUBE-FORWARD", "kubernetes forwarding rules"),
    Jump("filter", "INPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", _NEW),
    Jump("filter", "OUTPUT", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", _NEW),
    Jump("filter", "FORWARD", "KUBE-PROXY-FIREWALL", "kubernetes load balancer firewall", _NEW),
    Jump("nat", "OUTPUT", "KUBE-SERVICES", "kubernetes service portals"),
    Jump("nat", "PREROUTING", "KUBE-SERVICES", "kubernetes service portals"),
    Jump("nat", "POSTROUTING", "KUBE-POSTROUTING", "kubernetes postrouting rules"),
    Jump("filter", "INPUT", "KUBE-FIREWALL", None),
    Jump("filter", "OUTPUT", "KUBE-FIREWALL", None),
)


@lru_cache(maxsize=1 << 17)
def port_proto_hash(service_port_name: str, protocol: str) -> str:
    """First 16 chars of base32(sha256(name + protocol)); iptables chain names are <= 28 chars."""
    digest = hashlib.sha256((service_port_name + protocol).encode()).digest()
    return base64.b32encode(digest).decode()[:16]


@lru_cache(maxsize=4096)
def endpoint_chain_name(service_port_name: str, protocol: str, endpoint: str) -> str:
    """KUBE-SEP-<16 chars of base32(sha256(name + protocol + "ip:port"))>.

    The cache only serves the few lookups of one service's render (its chain list, dispatch rules and SEP
    chains ask for the same names); rendered services are kept whole by the RenderCache, and a cache of every
    endpoint of a 10k x 10 cluster held ~25 MB."""
    digest = hashlib.sha256((service_port_name + protocol + endpoint).encode()).digest()
    return SEP_PREFIX + base64.b32encode(digest).decode()[:16]


@dataclass(frozen=True, slots=True)
class ServiceChains:
    svc: str  # KUBE-SVC-: endpoints for Cluster policy
    svl: str  # KUBE-SVL-: endpoints for Local policy
    fw: str  # KUBE-FW-: loadBalancerSourceRanges
    ext: str  # KUBE-EXT-: entry for external traffic


def service_chains(sp: ServicePort) -> ServiceChains:
    h = port_proto_hash(str(sp.name), sp.protocol.lower())
    return ServiceChains(SVC_PREFIX + h, SVL_PREFIX + h, FW_PREFIX + h, EXT_PREFIX + h)


def is_service_chain(name: str) -> bool:
    return name.startswith(SERVICE_CHAIN_PREFIXES)


@lru_cache(maxsize=4096)
def probability(n: int) -> str:
    """1/n with 10 decimals, as kube-proxy's computeProbability ("%0.10f")."""
    return f"{1.0 / n:.10f}"
