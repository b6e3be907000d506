"""Walking a packet through one ruleset's chains, branch by branch.

The iptables and nftables readers (ipt.py, nft.py) say what one rule does to a packet: it does not match,
it matches and goes on, jumps, goes to, returns, or ends with a verdict, possibly in several ways with a
probability each (`statistic`, `numgen`). This module turns that into every way through a chain, with the
rules each way matched as hops. Nothing here reads the kernel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from podnet.trace.model import Branch, Hop, Packet

MAX_DEPTH = 64  # deeper than any ruleset podnet or kube-proxy writes; a loop in a ruleset stops here


@dataclass
class Effect:
    """What one rule does to a packet, in one of its ways (probability p)."""

    p: float
    kind: str  # nomatch | next | jump | goto | return | verdict
    pkt: Packet
    target: str = ""  # chain for jump/goto, verdict name for verdict
    detail: str = ""  # what a person should read for this hop


class ChainWalker:
    """Subclasses give rules(table, chain), eval_rule() and hop_for()."""

    def rules(self, table: str, chain: str) -> list[object]:
        raise NotImplementedError

    def eval_rule(self, table: str, rule: object, pkt: Packet) -> list[Effect]:
        raise NotImplementedError

    def hop_for(self, table: str, chain: str, index: int, rule: object, eff: Effect) -> Hop:
        raise NotImplementedError

    def run(self, table: str, chain: str, pkt: Packet, hop: Callable[[Hop], Hop]) -> list[Branch]:
        """Every way through `chain`; verdict None = fell off its end or returned (policy/caller decides)."""
        return self._from(table, chain, 0, Branch(1.0, pkt), hop, 0)

    def _from(self, table: str, chain: str, i: int, br: Branch, hop: Callable[[Hop], Hop], depth: int
              ) -> list[Branch]:
        if depth > MAX_DEPTH:
            return [Branch(br.p, br.pkt, br.hops, "drop", f"chain nesting deeper than {MAX_DEPTH} at {chain}")]
        rules = self.rules(table, chain)
        while i < len(rules):
            effects = self.eval_rule(table, rules[i], br.pkt)
            if all(e.kind == "nomatch" for e in effects):
                i += 1
                continue
            out: list[Branch] = []
            for e in effects:
                if e.kind == "nomatch":
                    out += self._from(table, chain, i + 1, br.extend(e.p, e.pkt, []), hop, depth)
                    continue
                nb = br.extend(e.p, e.pkt, [hop(self.hop_for(table, chain, i, rules[i], e))])
                if e.kind == "next":
                    out += self._from(table, chain, i + 1, nb, hop, depth)
                elif e.kind == "jump":
                    for sub in self._from(table, e.target, 0, nb, hop, depth + 1):
                        if sub.verdict is not None:
                            out.append(sub)
                        else:
                            out += self._from(table, chain, i + 1, sub, hop, depth)
                elif e.kind == "goto":
                    out += self._from(table, e.target, 0, nb, hop, depth + 1)
                elif e.kind == "return":
                    out.append(nb)
                else:
                    nb.verdict = e.target
                    out.append(nb)
            return out
        return [br]
