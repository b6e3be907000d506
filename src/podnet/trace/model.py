"""The values a trace is made of: the packet as it changes along the path, one hop, one branch, the result.

JSON shape of a result (`Result.to_json()`, what `podnet trace -o json` prints and the lab web page reads):

    {
      "flow":     {"src": "10.244.1.3", "dst": "10.96.0.10", "proto": "tcp", "sport": 40000, "dport": 80},
      "verdict":  "delivered" | "rejected" | "dropped"   # the most likely outcome (ties: delivered first)
      "outcomes": [                                    # every distinct end of the path, most likely first
        {"verdict": "delivered", "probability": 0.5, "endpoint": "10.244.2.2:80",
         "where": "pod default/web-1", "reason": "", "hops": [<hop>, ...]}
      ],
      "hops":     [<hop>, ...],                        # the hops of the first (most likely) outcome
      "conntrack": {"decides": bool, "entry": "...", "stale": bool} | null,
      "warnings": ["..."]
    }

    <hop> = {"node": "node1", "namespace": "pn-lab-node1", "step": "netfilter" | "route" | "veth" | "bridge"
             | "encap" | "conntrack" | "deliver" | "drop" | "source", "detail": "human text",
             "table": "nat" | null, "chain": "KUBE-SERVICES" | null, "rule": <int> | null,
             "hook": "prerouting" | null, "prio": -100 | null, "verdict": "jump KUBE-SVC-..." | null}

`rule` is the rule's handle for nftables tables and its 1-based position in the chain for iptables tables
(the order `iptables -L --line-numbers` shows); `table` is "family name" for nftables ("ip podnet").
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

PROTO_NUM = {"icmp": 1, "tcp": 6, "udp": 17, "sctp": 132}
PROTO_NAME = {v: k for k, v in PROTO_NUM.items()}


@dataclass(frozen=True)
class Packet:
    src: str
    dst: str
    proto: str = "tcp"
    sport: int = 0
    dport: int = 0
    iif: str = ""
    oif: str = ""
    mark: int = 0
    # Conntrack is per node: the next three describe the entry of the node the packet is in now, and are
    # reset when it crosses to another node (`at_next_node`).
    ct: str = "new"  # conntrack state the rules see: new | established
    nat_done: bool = False  # a conntrack entry already holds the NAT binding: nat chains are skipped
    ct_dnat: bool = False  # this node's entry has DNAT status (`ct status dnat`, `--ctstate DNAT`)
    masquerade: bool = False  # a masquerade/SNAT verdict is pending for postrouting
    masq_random: bool = False  # ... with a random source port (--random-fully, fully-random): port unknown after
    ct_snat: str = ""  # "ip:port" this node's conntrack entry rewrites the source to in postrouting
    endpoint: str = ""  # ip:port the service DNAT chose (on whichever node: what the outcome reports)
    sets_updated: tuple[str, ...] = ()

    def with_(self, **kw: object) -> Packet:
        return replace(self, **kw)  # type: ignore[arg-type]

    def at_next_node(self) -> Packet:
        """The packet as another node first sees it: no conntrack entry yet (that node's lookup decides) and no
        mark (skb marks do not cross the wire)."""
        return replace(self, ct="new", nat_done=False, ct_dnat=False, masquerade=False, masq_random=False, ct_snat="",
                       mark=0)

    def flow(self) -> dict[str, object]:
        return {"src": self.src, "dst": self.dst, "proto": self.proto, "sport": self.sport, "dport": self.dport}


@dataclass(frozen=True)
class Hop:
    node: str
    namespace: str
    step: str
    detail: str
    table: str | None = None
    chain: str | None = None
    rule: int | None = None
    hook: str | None = None
    verdict: str | None = None
    prio: int | None = None  # priority of the base chain the rule was reached from

    def to_json(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Branch:
    """One way through (part of) the path, with its probability."""

    p: float
    pkt: Packet
    hops: list[Hop] = field(default_factory=list)
    verdict: str | None = None  # accept | drop | reject | None (fell through / returned)
    reason: str = ""

    def extend(self, p: float, pkt: Packet, hops: list[Hop]) -> Branch:
        return Branch(self.p * p, pkt, self.hops + hops, None, self.reason)


@dataclass
class Outcome:
    verdict: str  # delivered | rejected | dropped
    probability: float
    endpoint: str
    where: str
    reason: str
    hops: list[Hop]

    def to_json(self) -> dict[str, object]:
        return {"verdict": self.verdict, "probability": round(self.probability, 6), "endpoint": self.endpoint,
                "where": self.where, "reason": self.reason, "hops": [h.to_json() for h in self.hops]}


@dataclass
class Result:
    flow: Packet
    outcomes: list[Outcome]
    conntrack: dict[str, object] | None = None
    warnings: list[str] = field(default_factory=list)
    # (node, src, dst, proto, dport, sport or 0): the packet as it enters each node (what --verify traces)
    entries: list[tuple[str, str, str, str, int, int]] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        order = {"delivered": 0, "rejected": 1, "dropped": 2}
        return max(self.outcomes, key=lambda o: (round(o.probability, 9), -order[o.verdict])).verdict

    def to_json(self) -> dict[str, object]:
        return {
            "flow": self.flow.flow(),
            "verdict": self.verdict,
            "outcomes": [o.to_json() for o in self.outcomes],
            "hops": [h.to_json() for h in self.outcomes[0].hops] if self.outcomes else [],
            "conntrack": self.conntrack,
            "warnings": self.warnings,
        }
