"""The rules one service port contributes: kube-proxy's per-service loop body, pure.

ServicePlan makes kube-proxy's decisions for a service port (which chains exist, where internal and external
traffic go); ServiceOutput holds its rules: capture rules in the shared chains (KUBE-SERVICES, KUBE-NODEPORTS,
the filter table) at once, its own SVC/SVL/EXT/FW/SEP chains built on first use. render.py puts them together.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from podnet.api.defaults import IPV6
from podnet.proxy.iptables.names import (
    KUBE_EXTERNAL_SERVICES,
    KUBE_MARK_MASQ,
    KUBE_NODEPORTS,
    KUBE_PROXY_FIREWALL,
    KUBE_SERVICES,
    NFACCT_LOCALHOST,
    endpoint_chain_name,
    probability,
    service_chains,
)
from podnet.proxy.model import DesiredState, ServicePort
from podnet.proxy.settings import ProxierSettings
from podnet.proxy.topology import categorize_endpoints


class ServicePlan:
    __slots__ = (
        "sp", "spn", "proto", "names", "cat", "uses_cluster_chain", "uses_local_chain", "internal_chain",
        "has_internal", "external_policy_chain", "has_external", "uses_ext", "uses_fw", "lb_chain",
    )

    def __init__(self, sp: ServicePort, desired: DesiredState, s: ProxierSettings) -> None:
        self.sp = sp
        self.spn = str(sp.name)
        self.proto = sp.protocol.lower()
        self.names = names = service_chains(sp)
        self.cat = cat = categorize_endpoints(
            sp, desired.node_name, desired.topology_zone, prefer_same_node=s.prefer_same_node
        )
        self.uses_cluster_chain = bool(cat.cluster) and sp.uses_cluster_endpoints
        self.uses_local_chain = bool(cat.local) and sp.uses_local_endpoints
        self.internal_chain = names.svc
        self.has_internal = cat.has_any
        if sp.internal_policy_local:
            self.internal_chain = names.svl
            if not cat.local:
                self.has_internal = False
        self.external_policy_chain = names.svc
        self.has_external = cat.has_any
        if sp.external_policy_local:
            self.external_policy_chain = names.svl
            if not cat.local:
                self.has_external = False
        # The EXT chain exists whenever there are endpoints anywhere: even with eTP=Local and no
        # local endpoint it short-circuits pod- and node-originated traffic to the cluster chain.
        self.uses_ext = cat.has_any and sp.externally_accessible
        self.uses_fw = cat.has_any and bool(sp.load_balancer_ips) and bool(sp.load_balancer_source_ranges)
        self.lb_chain = names.fw if self.uses_fw else names.ext

    def active_chains(self) -> list[str]:
        out = []
        if self.uses_ext:
            out.append(self.names.ext)
        if self.uses_fw:
            out.append(self.names.fw)
        if self.uses_cluster_chain:
            out.append(self.names.svc)
        if self.uses_local_chain:
            out.append(self.names.svl)
        proto = self.proto
        out.extend(endpoint_chain_name(self.spn, proto, str(ep)) for ep in self.cat.reachable)
        return out


@dataclass(frozen=True, slots=True)
class RenderContext:
    """Everything besides the ServicePort that a service's rules depend on."""

    s: ProxierSettings
    node_name: str
    zone: str
    large: bool


class ServiceOutput:
    """The rules one service port contributes: capture rules, filter rules, and its own chains."""

    __slots__ = ("sp", "ctx", "plan", "filter_lines", "nat_head", "chains", "no_local_internal",
                 "no_local_external", "_lines")

    def __init__(self, sp: ServicePort, desired: DesiredState, ctx: RenderContext) -> None:
        s = ctx.s
        self.sp, self.ctx = sp, ctx
        self.plan = plan = ServicePlan(sp, desired, s)
        self._lines: list[str] | None = None
        spn, proto, names, cat = plan.spn, plan.proto, plan.names, plan.cat
        match = f"-m {proto} -p {proto}"
        port = sp.port
        filt: list[str] = []
        nat: list[str] = []
        self.no_local_internal = self.no_local_external = 0

        if not cat.has_any:
            int_target = ext_target = "REJECT"
            int_comment = ext_comment = f'"{spn} has no endpoints"'
        else:
            int_target = ext_target = ""
            int_comment = ext_comment = ""
            if not plan.has_internal:
                int_target, int_comment = "DROP", f'"{spn} has no local endpoints"'
                self.no_local_internal = 1
            if not plan.has_external:
                ext_target, ext_comment = "DROP", f'"{spn} has no local endpoints"'
                self.no_local_external = 1

        def capture(chain: str, comment: str, dst: str, target: str) -> str:
            """A rule that sends this port's traffic to `dst` to `target` (comment given quoted if it must be)."""
            return f"-A {chain} -m comment --comment {comment} {match} -d {dst} --dport {port} -j {target}"

        # Capture the cluster IP.
        if plan.has_internal:
            nat.append(capture(KUBE_SERVICES, f'"{spn} cluster IP"', sp.cluster_ip, plan.internal_chain))
        else:
            filt.append(capture(KUBE_SERVICES, int_comment, sp.cluster_ip, int_target))

        # Capture external IPs.
        for eip in sp.external_ips:
            if cat.has_any:
                nat.append(capture(KUBE_SERVICES, f'"{spn} external IP"', eip, names.ext))
            if not plan.has_external:
                filt.append(capture(KUBE_EXTERNAL_SERVICES, ext_comment, eip, ext_target))

        # Capture load-balancer ingress IPs.
        for lbip in sp.load_balancer_ips:
            if cat.has_any:
                nat.append(capture(KUBE_SERVICES, f'"{spn} loadbalancer IP"', lbip, plan.lb_chain))
            if plan.uses_fw:
                filt.append(capture(KUBE_PROXY_FIREWALL, f'"{spn} traffic not accepted by {names.fw}"', lbip, "DROP"))
        if not plan.has_external:
            for lbip in sp.load_balancer_ips:
                filt.append(capture(KUBE_EXTERNAL_SERVICES, ext_comment, lbip, ext_target))

        # Capture node ports. By design they bypass loadBalancerSourceRanges.
        if sp.node_port:
            if cat.has_any:
                if s.localhost_node_ports and s.ip_family != IPV6 and s.nfacct_localhost:
                    nat.append(
                        f"-A {KUBE_NODEPORTS} -m comment --comment {spn} {match} -d 127.0.0.0/8 "
                        f"--dport {sp.node_port} -m nfacct --nfacct-name {NFACCT_LOCALHOST} -j {names.ext}"
                    )
                nat.append(
                    f"-A {KUBE_NODEPORTS} -m comment --comment {spn} {match} --dport {sp.node_port} -j {names.ext}"
                )
            if not plan.has_external:
                filt.append(
                    f"-A {KUBE_EXTERNAL_SERVICES} -m comment --comment {ext_comment} -m addrtype --dst-type LOCAL "
                    f"{match} --dport {sp.node_port} -j {ext_target}"
                )

        # Health check node port: accepted whether or not this node has local endpoints.
        if sp.health_check_node_port:
            filt.append(
                f'-A {KUBE_NODEPORTS} -m comment --comment "{spn} health check node port" -m tcp -p tcp '
                f"--dport {sp.health_check_node_port} -j ACCEPT"
            )
        self.filter_lines = filt
        self.nat_head = nat
        self.chains = plan.active_chains()

    def chain_lines(self) -> list[str]:
        """Rules of the service's own SVC/SVL/EXT/FW/SEP chains (built once, then kept)."""
        if self._lines is None:
            s = self.ctx.s
            out: list[str] = []
            _write_service_chains(self.plan, s, self.ctx.large, out, " ".join(s.local_detector.if_local),
                                  " ".join(s.local_detector.if_not_local))
            self._lines = out
        return self._lines

    def chain_rule_count(self) -> int:
        """How many rules chain_lines holds (counted from them: no second copy of the rules' logic)."""
        return len(self.chain_lines())



def _write_service_chains(
    plan: ServicePlan, s: ProxierSettings, large: bool, out: list[str], if_local: str, if_not_local: str
) -> None:
    """The SVC/SVL/EXT/FW/SEP rules of one service port, in kube-proxy's order."""
    sp, spn, proto, names, cat = plan.sp, plan.spn, plan.proto, plan.names, plan.cat
    match = f"-m {proto} -p {proto}"

    # Internal traffic: masquerade off-cluster sources reaching the cluster IP (a static route to
    # the service range via any node works, and the reply must come back through that node).
    if plan.has_internal:
        head = f'-A {plan.internal_chain} -m comment --comment "{spn} cluster IP" {match} -d {sp.cluster_ip} --dport {sp.port}'
        if s.masquerade_all:
            out.append(f"{head} -j {KUBE_MARK_MASQ}")
        elif s.local_detector.implemented:
            out.append(f"{head} {if_not_local} -j {KUBE_MARK_MASQ}")

    if plan.uses_ext:
        ext = names.ext
        if not sp.external_policy_local:
            out.append(
                f'-A {ext} -m comment --comment "masquerade traffic for {spn} external destinations" -j {KUBE_MARK_MASQ}'
            )
        else:
            if s.local_detector.implemented:
                out.append(
                    f'-A {ext} -m comment --comment "pod traffic for {spn} external destinations" '
                    f"{if_local} -j {names.svc}"
                )
            out.append(
                f'-A {ext} -m comment --comment "masquerade LOCAL traffic for {spn} external destinations" '
                f"-m addrtype --src-type LOCAL -j {KUBE_MARK_MASQ}"
            )
            out.append(
                f'-A {ext} -m comment --comment "route LOCAL traffic for {spn} external destinations" '
                f"-m addrtype --src-type LOCAL -j {names.svc}"
            )
        if plan.has_external:
            out.append(f"-A {ext} -j {plan.external_policy_chain}")

    if plan.uses_fw:
        head = f'-A {names.fw} -m comment --comment "{spn} loadbalancer IP"'
        allow_from_node = False
        node_ip = _ip_or_none(s.node_ip)
        for cidr in sp.load_balancer_source_ranges:
            out.append(f"{head} -s {cidr} -j {names.ext}")
            if node_ip is not None and _cidr_contains(cidr, node_ip):
                allow_from_node = True
        if allow_from_node:
            # A node reaching a VIP that is also a local address loops back with the VIP as source.
            out.extend(f"{head} -s {lbip} -j {names.ext}" for lbip in sp.load_balancer_ips)
        out.append(
            f'-A {names.fw} -m comment --comment "other traffic to {spn} will be dropped by KUBE-PROXY-FIREWALL"'
        )

    if plan.uses_cluster_chain:
        _write_dispatch(out, names.svc, sp, spn, proto, cat.cluster, large)
    if plan.uses_local_chain:
        _write_dispatch(out, names.svl, sp, spn, proto, cat.local, large)

    comment = "" if large else f" -m comment --comment {spn}"
    recent = ""
    for ep in cat.reachable:
        epstr = str(ep)
        chain = endpoint_chain_name(spn, proto, epstr)
        if sp.client_ip_affinity:
            recent = f" -m recent --name {chain} --set"
        # Hairpin: a pod reaching itself through the service must be masqueraded, or the reply
        # would go straight back to it with the wrong source.
        out.append(f"-A {chain}{comment} -s {ep.ip} -j {KUBE_MARK_MASQ}")
        out.append(f"-A {chain}{comment}{recent} {match} -j DNAT --to-destination {epstr}")


def _write_dispatch(
    out: list[str], chain: str, sp: ServicePort, spn: str, proto: str, endpoints: tuple[Any, ...], large: bool
) -> None:
    """Affinity checks first, then one `statistic` rule per endpoint: endpoint i of n wins with 1/(n-i)."""
    if sp.client_ip_affinity:
        for ep in endpoints:
            epstr = str(ep)
            sep = endpoint_chain_name(spn, proto, epstr)
            comment = "" if large else f' -m comment --comment "{spn} -> {epstr}"'
            out.append(
                f"-A {chain}{comment} -m recent --name {sep} --rcheck --seconds {sp.sticky_max_age_seconds} "
                f"--reap -j {sep}"
            )
    n = len(endpoints)
    for i, ep in enumerate(endpoints):
        epstr = str(ep)
        sep = endpoint_chain_name(spn, proto, epstr)
        comment = "" if large else f' -m comment --comment "{spn} -> {epstr}"'
        stat = f" -m statistic --mode random --probability {probability(n - i)}" if i < n - 1 else ""
        out.append(f"-A {chain}{comment}{stat} -j {sep}")


@lru_cache(maxsize=1024)
def _ip_or_none(text: str) -> Any:
    try:
        return ipaddress.ip_address(text) if text else None
    except ValueError:
        return None


@lru_cache(maxsize=4096)
def _cidr_contains(cidr: str, ip: Any) -> bool:
    net = ipaddress.ip_network(cidr, strict=False)
    return net.version == ip.version and ip in net

