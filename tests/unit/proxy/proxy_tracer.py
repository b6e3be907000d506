"""Follow a packet through rendered iptables rules, the way kube-proxy's unit tests do (tracePacket),
with podnet's own packet walker (podnet.trace.ipt) doing the walking.

As upstream: nat KUBE-SERVICES first, then the filter chains kube-proxy fills, against the DNATed
destination; every endpoint a probabilistic branch can reach is collected; rules that test history
(recent lists, conntrack state) see a first packet with nothing recorded yet.
"""

from __future__ import annotations

from podnet.trace.ipt import IptablesRules, IptablesWalker, IptContext
from podnet.trace.model import Hop, Packet

LOCAL_ALWAYS = ["127.0.0.0/8", "::1/128"]


class Tracer:
    def __init__(self, text: str, node_ips: list[str]) -> None:
        self.rules = IptablesRules.parse(text)
        self.walker = IptablesWalker(self.rules, IptContext(LOCAL_ALWAYS + node_ips))

    @property
    def tables(self) -> dict:
        return self.rules.tables

    def trace(self, src: str, dst: str, dport: int, proto: str = "tcp") -> tuple[str, bool, list[str]]:
        """(comma-separated outputs, masqueraded?, matched rules) for one packet."""
        pkt = Packet(src, dst, proto, 40000, dport, ct="none")
        matches: list[str] = []
        outputs: list[str] = []
        masq = False

        def keep(h: Hop) -> Hop:
            return h

        branches = self.walker.run("nat", "KUBE-SERVICES", pkt, keep)
        for b in branches:
            masq |= bool(b.pkt.mark & 0x4000)
            for h in b.hops:
                line = self.rules.tables["nat"][h.chain][h.rule - 1].line  # type: ignore[index, operator]
                if line not in matches:
                    matches.append(line)
            if b.pkt.endpoint and b.pkt.endpoint not in outputs:
                outputs.append(b.pkt.endpoint)
            elif b.verdict in ("drop", "reject", "accept") and not b.pkt.endpoint:
                outputs.append(b.verdict.upper())
        after = branches[0].pkt if branches and branches[0].pkt.endpoint else pkt
        for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"):
            if outputs and outputs[-1] in ("DROP", "REJECT"):
                break
            for b in self.walker.run("filter", chain, after.with_(mark=0), keep):
                if b.verdict:
                    outputs.append(b.verdict.upper())
                    matches += [self.rules.tables["filter"][h.chain][h.rule - 1].line for h in b.hops]  # type: ignore
                    break
        return ", ".join(outputs), masq, matches
