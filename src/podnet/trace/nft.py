"""`nft -j list ruleset`, read as rules a packet can be walked through.

Values are evaluated as lists of alternatives with probabilities, so `numgen random mod N` (kube-proxy's and
podnet's endpoint choice) branches into N ways of 1/N each, and a map lookup on it gives each endpoint's share.
Sets and maps are read with their live elements (affinity sets included, with what is in them now). An
expression this reader does not know makes its rule not match and is reported, never guessed.
"""

from __future__ import annotations

import ipaddress
import itertools
from dataclasses import dataclass, field

from podnet.trace.chains import ChainWalker, Effect
from podnet.trace.model import Hop, Packet

XTABLES = {"filter", "nat", "mangle", "raw", "security"}  # tables iptables-nft owns: read from iptables-save
VERDICTS = ("accept", "drop", "reject", "return", "continue", "jump", "goto", "queue")


@dataclass
class NftSet:
    name: str
    elems: list[object]
    is_map: bool


@dataclass
class BaseChain:
    family: str
    table: str
    chain: str
    hook: str
    prio: int
    type: str
    policy: str


@dataclass
class NftRuleset:
    chains: dict[tuple[str, str], list[dict]] = field(default_factory=dict)  # ("ip podnet", chain) -> rules
    sets: dict[tuple[str, str], NftSet] = field(default_factory=dict)
    base: list[BaseChain] = field(default_factory=list)
    comments: dict[tuple[str, str], str] = field(default_factory=dict)

    @staticmethod
    def parse(doc: dict, *, skip_xtables: bool = True) -> NftRuleset:
        out = NftRuleset()
        for item in doc.get("nftables", []):
            kind, body = next(iter(item.items()))
            if not isinstance(body, dict) or "table" not in body:
                continue
            tkey = f"{body['family']} {body['table']}"
            # every base chain is listed (xtables ones too, for their hook priorities)
            if kind == "chain" and body.get("hook"):
                out.base.append(BaseChain(body["family"], body["table"], body["name"], body["hook"],
                                          int(body.get("prio", 0)), body.get("type", "filter"),
                                          body.get("policy", "accept")))
            if skip_xtables and body["family"] == "ip" and body["table"] in XTABLES:
                continue
            if kind == "chain":
                out.chains.setdefault((tkey, body["name"]), [])
                if body.get("comment"):
                    out.comments[(tkey, body["name"])] = body["comment"]
            elif kind == "rule":
                out.chains.setdefault((tkey, body["chain"]), []).append(body)
            elif kind in ("set", "map"):
                out.sets[(tkey, body["name"])] = NftSet(body["name"], list(body.get("elem", [])), kind == "map")
        return out


def _norm(v: object) -> object:
    if isinstance(v, dict) and "elem" in v:
        return _norm(v["elem"]["val"])
    if isinstance(v, dict) and "concat" in v:
        return tuple(_norm(x) for x in v["concat"])
    if isinstance(v, list):
        return tuple(_norm(x) for x in v)
    if isinstance(v, str) and v.isdigit():
        return int(v)
    return v


def _eq(a: object, b: object) -> bool:
    """Does packet value a equal / fall into element b (prefix, range, set of alternatives)?"""
    if isinstance(b, dict):
        if "prefix" in b:
            try:
                net = ipaddress.ip_network(f"{b['prefix']['addr']}/{b['prefix']['len']}", strict=False)
                return ipaddress.ip_address(str(a)) in net
            except ValueError:
                return False
        if "range" in b:
            lo, hi = b["range"]
            return _in_range(a, lo, hi)
        if "set" in b:
            return any(_eq(a, x) for x in (b["set"] if isinstance(b["set"], list) else [b["set"]]))
        if "elem" in b:
            return _eq(a, b["elem"]["val"])
        if "concat" in b:
            return isinstance(a, tuple) and len(a) == len(b["concat"]) and all(
                _eq(x, y) for x, y in zip(a, b["concat"], strict=True))
    if isinstance(a, tuple) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_eq(x, y) for x, y in zip(a, b, strict=True))
    return _norm(a) == _norm(b)


def _key(v: object) -> object:
    v = _norm(v)
    if isinstance(v, str):
        try:
            return int(ipaddress.ip_address(v))
        except ValueError:
            return v
    return v


def _in_range(a: object, lo: object, hi: object) -> bool:
    """lo <= a <= hi, for bounds nft writes (ports, marks: numbers; addresses: compared as numbers).

    Values of different kinds (an address against a port range) or that have no order are not in the range."""
    k, klo, khi = _key(a), _key(lo), _key(hi)
    if isinstance(k, (int, float)) and isinstance(klo, (int, float)) and isinstance(khi, (int, float)):
        return klo <= k <= khi
    if isinstance(k, str) and isinstance(klo, str) and isinstance(khi, str):
        return klo <= k <= khi
    if isinstance(k, tuple) and isinstance(klo, tuple) and isinstance(khi, tuple):
        try:
            return bool(klo <= k <= khi)
        except TypeError:  # elements of different kinds
            return False
    return False


def _int(v: object) -> int:
    """An evaluated value used as a number (a mark, a port, a bitwise operand), as int() reads it.

    Anything else raises TypeError, which makes the rule unknown (eval_rule reports it)."""
    if isinstance(v, (int, float, str)):
        return int(v)
    raise TypeError(f"not a number: {v!r}")


@dataclass
class NftContext:
    local: list[str]  # local addresses/prefixes (fib ... type local)


class NftWalker(ChainWalker):
    def __init__(self, rs: NftRuleset, ctx: NftContext) -> None:
        self.rs = rs
        self.ctx = ctx
        self.unknown: set[str] = set()

    def rules(self, table: str, chain: str) -> list[object]:
        return list(self.rs.chains.get((table, chain), []))

    # -- values ---------------------------------------------------------------------------------------
    def value(self, table: str, e: object, pkt: Packet) -> list[tuple[float, object]]:
        if not isinstance(e, dict):
            return [(1.0, _norm(e))]
        if "payload" in e:
            f = e["payload"].get("field")
            v = {"saddr": pkt.src, "daddr": pkt.dst, "sport": pkt.sport, "dport": pkt.dport,
                 "protocol": pkt.proto}.get(f)
            if v is None:
                raise KeyError(f"payload {e['payload']}")
            proto = e["payload"].get("protocol")
            if proto in ("tcp", "udp", "sctp") and proto != pkt.proto:
                return []
            return [(1.0, v)]
        if "meta" in e:
            k = e["meta"]["key"]
            v = {"l4proto": pkt.proto, "protocol": "ip", "mark": pkt.mark, "iifname": pkt.iif,
                 "oifname": pkt.oif, "nfproto": "ipv4"}.get(k)
            if v is None:
                raise KeyError(f"meta {k}")
            return [(1.0, v)]
        if "ct" in e:
            k = e["ct"]["key"]
            if k == "state":
                return [(1.0, pkt.ct)]
            if k == "status":
                return [(1.0, "dnat" if pkt.ct_dnat else "")]
            raise KeyError(f"ct {k}")
        if "numgen" in e:
            n = int(e["numgen"]["mod"])
            off = int(e["numgen"].get("offset", 0))
            return [(1.0 / n, i + off) for i in range(n)]
        if "concat" in e:
            parts = [self.value(table, x, pkt) for x in e["concat"]]
            out: list[tuple[float, object]] = []
            for combo in itertools.product(*parts):
                p = 1.0
                for q, _ in combo:
                    p *= q
                out.append((p, tuple(v for _, v in combo)))
            return out
        for op in ("&", "|", "^"):
            if op in e:
                a, b = e[op]
                out = []
                for p, va in self.value(table, a, pkt):
                    for q, vb in self.value(table, b, pkt):
                        x, y = _int(va), _int(vb)
                        out.append((p * q, x & y if op == "&" else x | y if op == "|" else x ^ y))
                return out
        if "fib" in e:
            flags = e["fib"].get("flags", [])
            ip = pkt.src if "saddr" in flags else pkt.dst
            return [(1.0, "local" if any(_eq(ip, {"prefix": {"addr": p.split("/")[0], "len": int(p.split("/")[1])}})
                                         if "/" in p else ip == p for p in self.ctx.local) else "unicast")]
        if "map" in e:
            out = []
            for p, k in self.value(table, e["map"]["key"], pkt):
                hit = self._lookup(table, e["map"]["data"], k)
                if hit is not None:
                    out.append((p, _norm(hit)))
            return out
        if "prefix" in e or "range" in e or "set" in e:
            return [(1.0, e)]
        raise KeyError(f"expression {sorted(e)}")

    def _elements(self, table: str, ref: object) -> list[object]:
        if isinstance(ref, str) and ref.startswith("@"):
            s = self.rs.sets.get((table, ref[1:]))
            if s is None:
                raise KeyError(f"set {ref}")
            return s.elems
        if isinstance(ref, dict) and "set" in ref:
            return ref["set"] if isinstance(ref["set"], list) else [ref["set"]]
        return [ref]

    def _lookup(self, table: str, ref: object, key: object) -> object | None:
        for el in self._elements(table, ref):
            if isinstance(el, list) and len(el) == 2:
                if _eq(key, el[0]):
                    return el[1]
        return None

    def _in(self, table: str, v: object, right: object) -> bool:
        if isinstance(right, str) and right.startswith("@") or isinstance(right, dict) and "set" in right:
            return any(_eq(v, el) for el in self._elements(table, right))
        if isinstance(right, list):
            return any(_eq(v, x) for x in right)
        return _eq(v, right)

    # -- rules ----------------------------------------------------------------------------------------
    def eval_rule(self, table: str, rule: object, pkt: Packet) -> list[Effect]:
        assert isinstance(rule, dict)
        try:
            return self._exprs(table, rule["expr"], 0, 1.0, pkt, [])
        except (KeyError, TypeError, ValueError) as err:
            self.unknown.add(f"{table} {rule['chain']} handle {rule.get('handle')}: {err}")
            return [Effect(1.0, "nomatch", pkt)]

    def _exprs(self, table: str, ex: list, i: int, p: float, pkt: Packet, notes: list[str]) -> list[Effect]:
        def done(kind: str, target: str = "", q: float = 1.0, new: Packet | None = None) -> list[Effect]:
            return [Effect(p * q, kind, new or pkt, target, "; ".join(notes))]

        while i < len(ex):
            e = ex[i]
            k = next(iter(e)) if isinstance(e, dict) else e
            if k == "match":
                m = e["match"]
                op = m.get("op", "==")
                shares: list[float] = []  # of the ways the left side evaluates, those that match
                for q, v in self.value(table, m["left"], pkt):
                    matched = self._in(table, v, m["right"])
                    if op == "!=":
                        matched = not matched
                    if matched:
                        shares.append(q)
                total = sum(shares)
                if total == 0:
                    return [Effect(p, "nomatch", pkt)]
                rest = self._exprs(table, ex, i + 1, p * total, pkt, notes)
                if total < 1.0 - 1e-12:
                    rest = rest + [Effect(p * (1 - total), "nomatch", pkt)]
                return rest
            if k in ("counter", "log", "limit", "notrack", "quota"):
                i += 1
                continue
            if k == "mangle":
                key = e["mangle"]["key"]
                if "meta" in key and key["meta"]["key"] == "nftrace":
                    i += 1
                    continue
                if "meta" in key and key["meta"]["key"] == "mark":
                    outs: list[Effect] = []
                    for q, v in self.value(table, e["mangle"]["value"], pkt):
                        outs += self._exprs(table, ex, i + 1, p * q, pkt.with_(mark=_int(v)),
                                            notes + [f"mark {pkt.mark:#x} -> {_int(v):#x}"])
                    return outs
                raise KeyError(f"mangle {key}")
            if k == "set":  # add/update an element (affinity); the packet goes on
                st = e["set"]
                pkt = pkt.with_(sets_updated=(*pkt.sets_updated, st["set"]))
                notes = notes + [f"{st['op']} {st['set']}"]
                i += 1
                continue
            if k == "vmap":
                outs = []
                for q, key in self.value(table, e["vmap"]["key"], pkt):
                    hit = self._lookup(table, e["vmap"]["data"], key)
                    if hit is None:
                        outs.append(Effect(p * q, "nomatch", pkt))
                    else:
                        shown = " . ".join(map(str, key)) if isinstance(key, tuple) else str(key)
                        outs += self._verdict(hit, p * q, pkt, notes + [f"{e['vmap']['data']} [{shown}]"])
                return outs
            if k == "dnat":
                d = e["dnat"]
                outs = []
                for q, v in self.value(table, d["addr"], pkt):
                    if isinstance(v, tuple):
                        ip, port = str(v[0]), _int(v[1])
                    else:
                        ip = str(v)
                        port = _int(self.value(table, d["port"], pkt)[0][1]) if "port" in d else pkt.dport
                    new = pkt.with_(dst=ip, dport=port, endpoint=f"{ip}:{port}", ct_dnat=True)
                    outs.append(Effect(p * q, "verdict", new, "accept", "; ".join(notes + [f"dnat to {ip}:{port}"])))
                return outs
            if k == "snat":
                v = self.value(table, e["snat"]["addr"], pkt)[0][1]
                return done("verdict", "accept", new=pkt.with_(src=str(v)))
            if k == "masquerade":
                flags = (e["masquerade"] or {}).get("flags", []) if isinstance(e, dict) else []
                rnd = bool({"random", "fully-random"} & set([flags] if isinstance(flags, str) else flags))
                notes = notes + ["masquerade" + (" (random source port)" if rnd else "")]
                return done("verdict", "accept", new=pkt.with_(masquerade=True, masq_random=rnd))
            if k == "reject":
                return done("verdict", "reject")
            if k in VERDICTS:
                return self._verdict(e, p, pkt, notes)
            raise KeyError(f"statement {k}")
        return done("next")

    def _verdict(self, v: object, p: float, pkt: Packet, notes: list[str]) -> list[Effect]:
        if isinstance(v, str):
            v = {v: None}
        assert isinstance(v, dict)
        k = next(iter(v))
        detail = "; ".join(notes)
        if k in ("jump", "goto"):
            return [Effect(p, k, pkt, v[k]["target"], detail)]
        if k == "return":
            return [Effect(p, "return", pkt, "", detail)]
        if k == "continue":
            return [Effect(p, "next", pkt, "", detail)]
        return [Effect(p, "verdict", pkt, k, detail)]

    def hop_for(self, table: str, chain: str, index: int, rule: object, eff: Effect) -> Hop:
        assert isinstance(rule, dict)
        what = {"jump": f"jump {eff.target}", "goto": f"goto {eff.target}", "return": "return", "next": "continue",
                "verdict": eff.target}[eff.kind]
        detail = f"{chain}: {what}" + (f" ({eff.detail})" if eff.detail else "")
        if rule.get("comment"):
            detail += f' "{rule["comment"]}"'
        if eff.p < 1.0 - 1e-9:
            detail += f" [probability {eff.p:.4g}]"
        return Hop("", "", "netfilter", detail, table, chain, rule.get("handle"), None, what)
