"""Which endpoints of a service port this node uses (kube-proxy's topology.go: CategorizeEndpoints)."""

from __future__ import annotations

from dataclasses import dataclass

from podnet.proxy.model import Endpoint, ServicePort


@dataclass(frozen=True, slots=True)
class Categorized:
    cluster: tuple[Endpoint, ...]  # endpoints for "Cluster" policy (empty if never used)
    local: tuple[Endpoint, ...]  # endpoints for "Local" policy (empty if never used)
    reachable: tuple[Endpoint, ...]  # union of both, sorted: these get KUBE-SEP chains
    has_any: bool  # usable endpoints exist somewhere in the cluster


def categorize_endpoints(
    sp: ServicePort, node_name: str, zone: str = "", *, prefer_same_node: bool = False
) -> Categorized:
    """Split a service port's endpoints into the Cluster and Local sets kube-proxy would use.

    Usable means Ready; if none are, Serving+Terminating ones are used instead (independently for
    the Cluster and the Local set) so rolling updates drain instead of blackholing. Topology hints
    narrow the Cluster set when every ready endpoint carries one and one matches this node/zone.
    `prefer_same_node` is the PreferSameTrafficDistribution feature gate (off in v1.33).
    """
    eps = sp.endpoints
    if not eps:
        return Categorized((), (), (), False)
    cluster: tuple[Endpoint, ...] = ()
    local: tuple[Endpoint, ...] = ()
    has_any = False
    mode = ""
    serving_terminating_local = False
    if sp.uses_cluster_endpoints:
        mode = _topology_mode(eps, node_name, zone, prefer_same_node)
        cluster = tuple(e for e in eps if e.ready and _available(e, mode, node_name, zone))
        if not cluster:
            cluster = tuple(e for e in eps if e.serving and e.terminating)
        has_any = bool(cluster)
    if not sp.uses_local_endpoints:
        return Categorized(cluster, (), cluster, has_any)

    local_ready = local_st = False
    for e in eps:
        if e.ready:
            has_any = True
            local_ready = local_ready or e.local
        elif e.serving and e.terminating:
            has_any = True
            local_st = local_st or e.local
    if local_ready:
        local = tuple(e for e in eps if e.local and e.ready)
    elif local_st:
        serving_terminating_local = True
        local = tuple(e for e in eps if e.local and e.serving and e.terminating)

    if not sp.uses_cluster_endpoints:
        return Categorized((), local, local, has_any)
    if mode == "" and not serving_terminating_local:
        return Categorized(cluster, local, cluster, has_any)
    merged = {str(e): e for e in cluster}
    merged.update({str(e): e for e in local})
    reachable = tuple(merged[k] for k in sorted(merged))
    return Categorized(cluster, local, reachable, has_any)


def _topology_mode(eps: tuple[Endpoint, ...], node: str, zone: str, prefer_same_node: bool) -> str:
    ready = [e for e in eps if e.ready]
    if not ready:
        return ""
    if prefer_same_node and all(e.node_hints for e in ready):
        if any(node in e.node_hints for e in ready):
            return "PreferSameNode"
    if all(e.zone_hints for e in ready) and any(zone in e.zone_hints for e in ready):
        return "PreferSameZone"
    return ""


def _available(e: Endpoint, mode: str, node: str, zone: str) -> bool:
    if mode == "":
        return True
    if mode == "PreferSameNode":
        return node in e.node_hints
    return zone in e.zone_hints
