"""Delete stale UDP conntrack entries after a sync, as kube-proxy's conntrack reconciler does.

UDP has no connection end: a client that keeps sending from one source port matches the same conntrack entry
forever, and that entry still carries the DNAT to the endpoint chosen when the flow began. When that
endpoint goes away (or a service gets its first endpoint while the flow was not NATed), the flow blackholes
until the entry times out, which never happens while the client keeps sending. So after every sync: for each
UDP service IP:port (cluster, external, load-balancer IPs) and NodePort, delete the entries whose original
destination matches but whose reply source is not one of the service's serving endpoints. Unlike kube-proxy
before kubernetes#139629 this also covers services with no endpoints left.

The entries are read and deleted with the `conntrack` tool, run in the namespace the proxy runs in.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from podnet.api.defaults import IPV4, IPV6
from podnet.proxy.iptables.restore import Runner

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Flow:
    orig_src: str
    orig_dst: str
    orig_sport: int
    orig_dport: int
    reply_src: str
    reply_sport: int


@dataclass
class UdpServicePort:
    """What the reconciler needs to know of one UDP service port."""

    ips: list[str]  # cluster IP(s), external IPs, load-balancer ingress IPs
    port: int
    node_port: int = 0
    serving: set[str] = field(default_factory=set)  # IPs of serving endpoints


def parse_flows(text: str) -> list[Flow]:
    """Parse `conntrack -L -p udp` lines: the first src/dst/sport/dport group is the original direction."""
    flows: list[Flow] = []
    for line in text.splitlines():
        if not line.startswith(("udp", "ipv4", "ipv6")):
            continue
        kv: dict[str, list[str]] = {}
        for tok in line.split():
            k, sep, v = tok.partition("=")
            if sep:
                kv.setdefault(k, []).append(v)
        try:
            flows.append(
                Flow(
                    orig_src=kv["src"][0], orig_dst=kv["dst"][0], orig_sport=int(kv["sport"][0]),
                    orig_dport=int(kv["dport"][0]), reply_src=kv["src"][1], reply_sport=int(kv["sport"][1]),
                )
            )
        except (KeyError, IndexError, ValueError):
            continue
    return flows


@dataclass(frozen=True, order=True)
class Deletion:
    """One `conntrack -D` filter: orig dst IP (or any, for NodePorts), orig dst port, reply source."""

    orig_dst: str | None
    orig_dport: int
    reply_src: str

    def argv(self) -> list[str]:
        args = ["-D", "-p", "udp"]
        if self.orig_dst is not None:
            args += ["--orig-dst", self.orig_dst]
        return args + ["--orig-port-dst", str(self.orig_dport), "--reply-src", self.reply_src]


def stale(flows: Iterable[Flow], services: Iterable[UdpServicePort]) -> list[Deletion]:
    """The deletions that remove every flow to a service whose reply does not come from a serving endpoint."""
    by_ip_port: dict[tuple[str, int], set[str]] = {}
    by_node_port: dict[int, set[str]] = {}
    for sp in services:
        for ip in sp.ips:
            by_ip_port[(ip, sp.port)] = sp.serving
        if sp.node_port:
            by_node_port[sp.node_port] = sp.serving
    out: set[Deletion] = set()
    for f in flows:
        eps = by_ip_port.get((f.orig_dst, f.orig_dport))
        if eps is not None and f.reply_src not in eps:
            out.add(Deletion(f.orig_dst, f.orig_dport, f.reply_src))
        eps = by_node_port.get(f.orig_dport)
        if eps is not None and f.reply_src not in eps:
            out.add(Deletion(None, f.orig_dport, f.reply_src))
    return sorted(out, key=lambda d: (d.orig_dst or "", d.orig_dport, d.reply_src))


class ConntrackCleaner:
    """The cleaner of one IP family: the conntrack tool lists and deletes IPv4 entries unless told
    `-f ipv6` (kube-proxy's IPv6 proxier cleans with that family too)."""

    def __init__(self, runner: Runner | None = None, binary: str = "conntrack", *, ip_family: str = IPV4) -> None:
        self.runner = runner or Runner()
        self.binary = binary
        self.ip_family = ip_family

    def _argv(self, args: Sequence[str]) -> list[str]:
        fam = ["-f", "ipv6"] if self.ip_family == IPV6 else []
        return [self.binary, *args[:1], *fam, *args[1:]]

    def list_udp(self) -> list[Flow]:
        p = self.runner.run(self._argv(["-L", "-p", "udp"]), timeout=60)
        if p.returncode != 0:
            raise OSError(f"conntrack -L failed: {p.stderr.strip()}")
        return parse_flows(p.stdout)

    def delete(self, deletions: Sequence[Deletion]) -> int:
        done = 0
        for d in deletions:
            try:
                p = self.runner.run(self._argv(d.argv()), timeout=30)
            except subprocess.TimeoutExpired:
                log.error("conntrack %s timed out", " ".join(d.argv()))
                continue
            # exit 1 with "0 flow entries" is fine: the entry already went
            if p.returncode == 0:
                done += 1
            elif "0 flow entries" not in p.stderr:
                log.error("conntrack %s failed: %s", " ".join(d.argv()), p.stderr.strip())
        return done

    def cleanup(self, services: Sequence[UdpServicePort]) -> list[Deletion]:
        """Delete stale UDP entries of these services; returns the deletions made."""
        if not services:
            return []
        dels = stale(self.list_udp(), services)
        if dels:
            self.delete(dels)
            log.info("deleted stale UDP conntrack entries: %s", ", ".join(
                f"{d.orig_dst or '*'}:{d.orig_dport} via {d.reply_src}" for d in dels))
        return dels


def udp_service_ports(ports: Iterable[Any]) -> list[UdpServicePort]:
    """The UDP service ports of a sync, as the cleaner matches flows: every service IP, the NodePort, and
    the serving endpoints (flows NATed to any other address are stale)."""
    return [
        UdpServicePort(
            ips=[sp.cluster_ip, *sp.external_ips, *sp.load_balancer_ips],
            port=sp.port,
            node_port=sp.node_port,
            serving={ep.ip for ep in sp.endpoints if ep.serving},
        )
        for sp in ports
        if sp.protocol == "UDP"
    ]
