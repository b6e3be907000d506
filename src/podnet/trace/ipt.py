"""iptables-save text, read as rules a packet can be walked through (the tables iptables-nft owns).

Matches modelled: -s/-d/-p/-i/-o (with !), tcp/udp/sctp --dport/--sport, multiport, addrtype --src-type/
--dst-type, mark, conntrack --ctstate (NEW, ESTABLISHED, RELATED, DNAT, INVALID), statistic --probability,
recent --rcheck/--set (against the live /proc/net/xt_recent lists), comment. Targets: ACCEPT, DROP, REJECT,
RETURN, MARK, DNAT, SNAT, MASQUERADE, jumps and gotos (-g); LOG/TRACE/NFLOG and counters go on. A match
this reader does not know makes the rule not match and is reported, never guessed.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass, field

from podnet.net import exec as nexec
from podnet.trace.chains import ChainWalker, Effect
from podnet.trace.model import Hop, Packet

CONTINUE_TARGETS = {"LOG", "TRACE", "NFLOG", "CONNMARK", "CT", "NOTRACK", "CHECKSUM"}
KNOWN_MODULES = {"tcp", "udp", "sctp", "icmp", "comment", "addrtype", "mark", "conntrack", "statistic", "recent",
                 "multiport", "nfacct", "state", "physdev"}


@dataclass
class Rule:
    chain: str
    line: str
    words: list[str]
    comment: str = ""


@dataclass
class IptablesRules:
    tables: dict[str, dict[str, list[Rule]]] = field(default_factory=dict)
    policies: dict[tuple[str, str], str] = field(default_factory=dict)

    @staticmethod
    def parse(text: str) -> IptablesRules:
        out = IptablesRules()
        for table, chains in nexec.parse_save(text).items():
            cur = out.tables.setdefault(table, {})
            for name, chain in chains.items():
                out.policies[(table, name)] = chain.policy
                rules = cur.setdefault(name, [])
                for saved in chain.rules:
                    words = shlex.split(saved.line)
                    r = Rule(name, saved.line, words)
                    if "--comment" in words:
                        r.comment = words[words.index("--comment") + 1]
                    rules.append(r)
        return out


def _addr_in(value: str, ip: str) -> bool:
    try:
        return ipaddress.ip_address(ip) in ipaddress.ip_network(value, strict=False)
    except ValueError:
        return False


def _iface(pattern: str, name: str) -> bool:
    return name.startswith(pattern[:-1]) if pattern.endswith("+") else name == pattern


@dataclass
class IptContext:
    local: list[str]  # addresses and prefixes of type local on the node (the local routing table)
    recent: dict[str, set[str]] = field(default_factory=dict)  # xt_recent list name -> source addresses

    def is_local(self, ip: str) -> bool:
        return any(_addr_in(p, ip) for p in self.local)


class IptablesWalker(ChainWalker):
    def __init__(self, rules: IptablesRules, ctx: IptContext) -> None:
        self.r = rules
        self.ctx = ctx
        self.unknown: set[str] = set()

    def rules(self, table: str, chain: str) -> list[object]:
        return list(self.r.tables.get(table, {}).get(chain, []))

    def _match(self, w: list[str], i: int, neg: bool, pkt: Packet) -> tuple[bool | float | None, int]:
        """(matched?, words consumed); a float is a probability of matching; None = unknown option."""
        o = w[i]
        a = w[i + 1] if i + 1 < len(w) else ""
        if o in ("-s", "--source"):
            return _addr_in(a, pkt.src) != neg, 2
        if o in ("-d", "--destination"):
            return _addr_in(a, pkt.dst) != neg, 2
        if o in ("-p", "--protocol"):
            return (a == pkt.proto or a == "all") != neg, 2
        if o in ("-i", "--in-interface"):
            return _iface(a, pkt.iif) != neg, 2
        if o in ("-o", "--out-interface"):
            return _iface(a, pkt.oif) != neg, 2
        if o == "-m":
            if a not in KNOWN_MODULES:
                return None, 2
            return True, 2
        if o in ("--dport", "--destination-port"):
            return (str(pkt.dport) == a) != neg, 2
        if o in ("--sport", "--source-port"):
            return (str(pkt.sport) == a) != neg, 2
        if o in ("--dports", "--destination-ports"):
            return (str(pkt.dport) in a.split(",")) != neg, 2
        if o == "--comment" or o == "--nfacct-name" or o in ("--mode",):
            return True, 2
        if o in ("--src-type", "--dst-type"):
            ip = pkt.src if o == "--src-type" else pkt.dst
            return (a == "LOCAL") == (self.ctx.is_local(ip)) != neg, 2
        if o == "--limit-iface-in" or o == "--limit-iface-out":
            return True, 1
        if o == "--mark":
            v, _, m = a.partition("/")
            mask = int(m, 0) if m else 0xFFFFFFFF
            return ((pkt.mark & mask) == int(v, 0)) != neg, 2
        if o in ("--ctstate", "--state"):
            states = set(a.split(","))
            have = {pkt.ct.upper()} | ({"DNAT"} if pkt.ct_dnat else set())
            return bool(states & have) != neg, 2
        if o == "--probability":
            p = float(a)
            return (1 - p if neg else p), 2
        if o == "--rcheck" or o == "--update":
            name = w[w.index("--name") + 1] if "--name" in w else "DEFAULT"
            return (pkt.src in self.ctx.recent.get(name, set())) != neg, 1
        if o in ("--set", "--rsource", "--reap", "--mask"):
            return True, (2 if o == "--mask" else 1)
        if o in ("--seconds", "--name", "--hitcount"):
            return True, 2
        if o == "--physdev-is-bridged" or o == "--physdev-in" or o == "--physdev-out":
            return False, 1 if o == "--physdev-is-bridged" else 2
        return None, 1

    def eval_rule(self, table: str, rule: object, pkt: Packet) -> list[Effect]:
        assert isinstance(rule, Rule)
        w = rule.words
        i, neg, p = 2, False, 1.0
        target = ""
        goto = False
        targs: list[str] = []
        while i < len(w):
            if w[i] == "!":
                neg, i = True, i + 1
                continue
            if w[i] in ("-j", "--jump", "-g", "--goto"):
                goto = w[i] in ("-g", "--goto")
                target, targs = w[i + 1], w[i + 2:]
                break
            ok, n = self._match(w, i, neg, pkt)
            if ok is None:
                self.unknown.add(f"{table} {rule.chain}: {w[i]} {w[i + 1] if i + 1 < len(w) else ''}".strip())
                return [Effect(1.0, "nomatch", pkt)]
            if ok is False:
                return [Effect(1.0, "nomatch", pkt)]
            if ok is not True:
                p *= float(ok)
            neg = False
            i += n
        effects = self._target(target, targs, goto, pkt, rule)
        if p < 1.0:
            return [Effect(p * e.p, e.kind, e.pkt, e.target, e.detail) for e in effects] + \
                [Effect(1 - p, "nomatch", pkt)]
        return effects

    def _target(self, target: str, args: list[str], goto: bool, pkt: Packet, rule: Rule) -> list[Effect]:
        def arg(name: str) -> str:
            return args[args.index(name) + 1] if name in args else ""

        if not target:
            return [Effect(1.0, "next", pkt, detail="(no target)")]
        if target in ("ACCEPT", "DROP", "REJECT"):
            return [Effect(1.0, "verdict", pkt, target.lower())]
        if target == "RETURN":
            return [Effect(1.0, "return", pkt)]
        if target == "MARK":
            v, _, m = (arg("--set-xmark") or arg("--set-mark") or "0").partition("/")
            mask = int(m, 0) if m else 0xFFFFFFFF
            val = int(v, 0)
            if "--or-mark" in args:
                mark = pkt.mark | int(arg("--or-mark"), 0)
            elif "--and-mark" in args:
                mark = pkt.mark & int(arg("--and-mark"), 0)
            else:
                mark = (pkt.mark & ~mask) ^ val
            return [Effect(1.0, "next", pkt.with_(mark=mark & 0xFFFFFFFF), detail=f"mark {pkt.mark:#x} -> {mark:#x}")]
        if target == "DNAT":
            to = arg("--to-destination")
            ip, _, port = to.rpartition(":") if ":" in to else (to, "", "")
            new = pkt.with_(dst=ip or to, dport=int(port) if port else pkt.dport, endpoint=to, ct_dnat=True)
            return [Effect(1.0, "verdict", new, "accept", detail=f"DNAT to {to}")]
        if target == "SNAT":
            to = arg("--to-source")
            return [Effect(1.0, "verdict", pkt.with_(src=to.split(":")[0]), "accept", detail=f"SNAT to {to}")]
        if target == "MASQUERADE":
            rnd = "--random-fully" in args or "--random" in args
            return [Effect(1.0, "verdict", pkt.with_(masquerade=True, masq_random=rnd), "accept",
                           detail="MASQUERADE" + (" (random source port)" if rnd else ""))]
        if target in CONTINUE_TARGETS:
            return [Effect(1.0, "next", pkt)]
        if target in self.r.tables.get("nat", {}) or any(target in t for t in self.r.tables.values()):
            return [Effect(1.0, "goto" if goto else "jump", pkt, target)]
        self.unknown.add(f"target {target}")
        return [Effect(1.0, "next", pkt)]

    def hop_for(self, table: str, chain: str, index: int, rule: object, eff: Effect) -> Hop:
        assert isinstance(rule, Rule)
        what = {"jump": f"-> {eff.target}", "goto": f"goto {eff.target}", "return": "RETURN", "next": "",
                "verdict": "" if eff.detail else eff.target.upper()}[eff.kind]
        prob = ""
        if "--probability" in rule.words:
            prob = f" (probability {eff.p:.4g})"
        detail = " ".join(x for x in (f"{chain}", what + prob, eff.detail,
                                      f'"{rule.comment}"' if rule.comment else "") if x)
        verdict = {"jump": f"jump {eff.target}", "goto": f"goto {eff.target}", "return": "return",
                   "next": "continue", "verdict": eff.target}[eff.kind]
        return Hop("", "", "netfilter", detail, table, chain, index + 1, None, verdict)
