"""Follow a packet through rendered iptables rules, the way kube-proxy's unit tests do (tracePacket).

Only what matters for service routing is modelled: -s/-d (with !), addrtype LOCAL, -p, --dport,
jumps, statistic (a probabilistic jump keeps looking for further endpoints, so every reachable
endpoint is collected), DNAT and KUBE-MARK-MASQ. Rules that test history (recent --rcheck, mark,
ctstate) never match, as upstream. nat runs first (PREROUTING -> KUBE-SERVICES), then the filter
chains kube-proxy fills, against the DNATed destination.
"""

from __future__ import annotations

import ipaddress
import shlex
from dataclasses import dataclass

LOCAL_ALWAYS = {"127.0.0.1", "::1"}


@dataclass
class Rule:
    raw: str
    src: tuple[bool, str] | None = None
    dst: tuple[bool, str] | None = None
    src_type: tuple[bool, str] | None = None
    dst_type: tuple[bool, str] | None = None
    proto: str | None = None
    dport: str | None = None
    jump: str | None = None
    dnat: str | None = None
    probabilistic: bool = False
    history: bool = False


def parse_rule(line: str) -> tuple[str, Rule]:
    words = shlex.split(line)
    chain = words[1]
    r = Rule(raw=line)
    i, neg = 2, False
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w == "!":
            neg = True
            i += 1
            continue
        if w == "-s":
            r.src = (neg, nxt)
        elif w == "-d":
            r.dst = (neg, nxt)
        elif w == "--src-type":
            r.src_type = (neg, nxt)
        elif w == "--dst-type":
            r.dst_type = (neg, nxt)
        elif w == "-p":
            r.proto = nxt
        elif w == "--dport":
            r.dport = nxt
        elif w == "-j":
            r.jump = nxt
        elif w == "--to-destination":
            r.dnat = nxt
        elif w == "--probability":
            r.probabilistic = True
        elif w in ("--rcheck", "--ctstate") or (w == "--mark" and words[i - 2] == "mark"):
            r.history = True
        neg = False
        i += 1
    return chain, r


def parse_tables(text: str) -> dict[str, dict[str, list[Rule]]]:
    tables: dict[str, dict[str, list[Rule]]] = {}
    cur: dict[str, list[Rule]] = {}
    for line in text.split("\n"):
        if line.startswith("*"):
            cur = tables.setdefault(line[1:], {})
        elif line.startswith(":"):
            cur[line[1:].split()[0]] = []
        elif line.startswith("-A "):
            chain, rule = parse_rule(line)
            cur.setdefault(chain, []).append(rule)
    return tables


def _addr_match(spec: tuple[bool, str], ip: str) -> bool:
    neg, value = spec
    addr = ipaddress.ip_address(ip)
    if "/" in value:
        net = ipaddress.ip_network(value, strict=False)
        hit = addr.version == net.version and addr in net
    else:
        hit = addr == ipaddress.ip_address(value)
    return hit != neg


class Tracer:
    def __init__(self, text: str, node_ips: list[str]) -> None:
        self.tables = parse_tables(text)
        self.local = LOCAL_ALWAYS | set(node_ips)

    def _matches(self, r: Rule, src: str, proto: str, dst: str, dport: str) -> bool:
        if r.src and not _addr_match(r.src, src):
            return False
        if r.src_type and ((src in self.local) == r.src_type[0]):
            return False
        if r.proto and r.proto != proto:
            return False
        if r.dst and not _addr_match(r.dst, dst):
            return False
        if r.dst_type and ((dst in self.local) == r.dst_type[0]):
            return False
        if r.dport and r.dport != dport:
            return False
        return not r.history

    def _run(self, table: str, chain: str, pkt: tuple[str, str, str, str], st: dict) -> bool:
        for r in self.tables.get(table, {}).get(chain, []):
            if r.jump is None or not self._matches(r, *pkt):
                continue
            st["matches"].append(r.raw)
            if r.jump == "KUBE-MARK-MASQ":
                st["masq"] = True
                continue
            if r.jump in ("ACCEPT", "REJECT", "DROP"):
                st["outputs"].append(r.jump)
                return True
            if r.jump == "DNAT":
                st["outputs"].append(r.dnat)
                return True
            if self._run(table, r.jump, pkt, st) and not r.probabilistic:
                return True
        return False

    def trace(self, src: str, dst: str, dport: int, proto: str = "tcp") -> tuple[str, bool, list[str]]:
        """(comma-separated outputs, masqueraded?, matched rules) for one packet."""
        st: dict = {"matches": [], "outputs": [], "masq": False}
        self._run("nat", "KUBE-SERVICES", (src, proto, dst, str(dport)), st)
        if st["outputs"]:
            first = st["outputs"][0]
            dst = first.rsplit(":", 1)[0].strip("[]")
        for chain in ("KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-PROXY-FIREWALL"):
            self._run("filter", chain, (src, proto, dst, str(dport)), st)
        return ", ".join(st["outputs"]), st["masq"], st["matches"]
