"""`podnet trace --verify`: send real probes for the flow and hold the prediction against the kernel's own trace.

For each node the prediction passes, a trace rule matching only this flow (as the packet enters that node)
is added inside the node's namespace: `meta nftrace set 1` in a table of our own (nftables mode), or a
`TRACE` rule in the raw table (iptables mode). `nft monitor trace` / `xtables-monitor --trace` run in each
of those namespaces (writing to files, started and drained with a canary ping) while probes leave the source
namespace and a receiver in each predicted destination namespace counts what arrives (one packet a probe).
Then, node by node, every base-chain segment the kernel ran (its rules, known by table, chain and content)
must be one the prediction has, and arrivals must be where and as many as the prediction says. The trace
rules are always removed: try/finally, SIGINT/SIGTERM turned into exceptions while they are in place and held
while they are taken out. A round whose kernel side is incomplete is reported as such (`Report.incomplete`)
and `predict_and_verify` runs a fresh one.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from podnet.net import exec as nexec
from podnet.net import netns
from podnet.trace.model import Packet, Result
from podnet.trace.snapshot import Cluster, NsState
from podnet.trace.walk import Source

# The canary: a ping to this loopback address, traced and dropped by our own rule at once (so it never
# reaches another chain). A monitor that printed it is subscribed: only then do the probes start.
CANARY_IP = "127.0.0.127"
CANARY_MATCH = f"ip daddr {CANARY_IP} icmp type echo-request"
HOOK_RANK = {"output": 0, "prerouting": 1, "input": 2, "forward": 3, "postrouting": 4}  # one segment per hook
TRACE_PREFIX = "pn-trace-"
Seg = tuple[int, int, str, tuple[tuple[str, str, str], ...]]  # (hook rank, prio, table, rules)

SNIFFER = r"""
import json, signal, socket, struct, sys, select
proto, want, limit = int(sys.argv[1]), set(sys.argv[2].split(",")), float(sys.argv[3])  # want: "ip:port" (icmp: "ip:0")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.ntohs(0x0800))
seen, syns = {}, set()
import time
end = time.monotonic() + limit
print("ready", flush=True)
while not stop and time.monotonic() < end:
    r, _, _ = select.select([s], [], [], 0.05)
    if not r:
        continue
    data, addr = s.recvfrom(65535)
    if addr[2] == socket.PACKET_OUTGOING or len(data) < 24:
        continue
    ihl = (data[0] & 15) * 4
    if data[9] != proto:
        continue
    key = socket.inet_ntoa(data[16:20]) + ":0"
    if proto in (6, 17):
        key = key[:-1] + str(struct.unpack("!H", data[ihl + 2:ihl + 4])[0])
        if proto == 6 and not (data[ihl + 13] & 2 and not data[ihl + 13] & 16):
            continue
    elif data[ihl] != 8:
        continue
    if proto == 6:  # a SYN the sender retransmitted (a loaded machine) is the same probe: source and sequence
        probe = (data[12:16], data[ihl:ihl + 2], data[ihl + 4:ihl + 8])
        if probe in syns:
            continue
        syns.add(probe)
    if key in want:
        seen[key] = seen.get(key, 0) + 1
print(json.dumps(seen), flush=True)
"""

PROBE = r"""
import socket, sys, time, subprocess
proto, dst, dport, sport, n = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
for i in range(n):
    if proto == "tcp":
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if sport:
            s.bind(("", sport))
        s.settimeout(0.3)
        try:
            s.connect((dst, dport))
        except OSError:
            pass
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
        s.close()
    elif proto == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if sport:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("", sport))
        try:
            s.sendto(b"podnet-trace-probe", (dst, dport))
        except OSError:  # the node's own rules dropped (EPERM) or rejected it: what the trace shows
            pass
        s.close()
    else:
        subprocess.run(["ping", "-c", "1", "-W", "0.3", dst], capture_output=True)
    time.sleep(0.02)
print(n, flush=True)
"""


@dataclass
class Report:
    agree: bool
    summary: str
    disagreements: list[str] = field(default_factory=list)
    observed: dict[str, list[list[str]]] = field(default_factory=dict)  # node -> packets -> rules
    arrivals: dict[str, int] = field(default_factory=dict)
    incomplete: list[str] = field(default_factory=list)  # why the kernel's side is missing (no evidence)
    attempts: int = 1

    def to_json(self) -> dict[str, object]:
        return {"agree": self.agree, "summary": self.summary, "disagreements": self.disagreements,
                "observed": self.observed, "arrivals": self.arrivals, "incomplete": self.incomplete,
                "attempts": self.attempts}


# ---- what the prediction says, in the kernel trace's terms -----------------------------------------------
Rule = tuple[str, str, str]  # (table, chain, the rule's content): how a rule is known on both sides


def _canon(v: object) -> object:
    """A rule's expressions without what changes while it runs (counters, quota use)."""
    if isinstance(v, dict):
        if "counter" in v:
            return "counter"
        return {k: _canon(x) for k, x in sorted(v.items()) if k not in ("packets", "bytes", "used")}
    if isinstance(v, list):
        return [_canon(x) for x in v]
    return v


def _ipt_text(line: str) -> str:
    """An iptables rule as iptables-save and xtables-monitor both print it ("-A CHAIN ..."), spaces folded."""
    return " ".join(line.split())


@dataclass
class RuleIndex:
    """Rules by what they are, not where: a proxy resync between the snapshot and the probes gives the same
    rules new handles, and a full sync may also write them in another order. So a rule is compared by its
    table, chain and content (nft: its expressions; iptables: its text); its position is for people."""

    by_handle: dict[tuple[str, str, int], str] = field(default_factory=dict)  # nft (table, chain, handle)
    by_pos: dict[tuple[str, str, int], str] = field(default_factory=dict)  # iptables (table, chain, position)
    label: dict[Rule, int] = field(default_factory=dict)  # 1-based position in its chain, to show

    @staticmethod
    def of(st: NsState, after: tuple[dict, str] | None = None) -> RuleIndex:
        """From a node's snapshot, and the ruleset read after the probes (nft JSON, iptables-save) if any.
        iptables-nft's tables are known by their iptables text in both modes: nft monitor names their rules
        by handle, and the handle's place in its chain (in the JSON read with that text) gives the line."""
        from podnet.trace.ipt import IptablesRules
        from podnet.trace.nft import XTABLES

        ix = RuleIndex()
        pairs = ([after] if after else []) + [(st.nft, st.iptables)]  # the later first: a resync's handles
        for k, (doc, ipt) in enumerate(pairs):
            lines = {(f"ip {t}", c, i + 1): _ipt_text(r.line) for t, chains in IptablesRules.parse(ipt).tables.items()
                     for c, rules in chains.items() for i, r in enumerate(rules)}
            count: dict[tuple[str, str], int] = {}
            for item in doc.get("nftables", []):
                r = item.get("rule")
                if not r:
                    continue
                tc = (f"{r['family']} {r['table']}", r["chain"])
                count[tc] = count.get(tc, 0) + 1
                content = json.dumps([_canon(r.get("expr", [])), r.get("comment", "")], sort_keys=True)
                if r["family"] == "ip" and r["table"] in XTABLES:
                    content = lines.get((*tc, count[tc]), content)
                ix.by_handle.setdefault((*tc, int(r["handle"])), content)
                ix.label.setdefault((*tc, content), count[tc])
            if k == len(pairs) - 1:  # the snapshot's: what the prediction's iptables positions refer to
                ix.by_pos = lines
                for (t, c, pos), text in lines.items():
                    ix.label.setdefault((t, c, text), pos)
        return ix

    def nft(self, table: str, chain: str, handle: int) -> Rule:
        return (table, chain, self.by_handle.get((table, chain, handle), f"handle {handle}"))

    def ipt(self, table: str, chain: str, pos: int) -> Rule:
        return (table, chain, self.by_pos.get((table, chain, pos), f"position {pos}"))

    def show(self, r: Rule) -> str:
        pos = self.label.get(r)
        return f"{r[0]} {r[1]} #{pos}" if pos else f"{r[0]} {r[1]} [{r[2][:80]}]"


def _bases(st: NsState) -> dict[tuple[str, str], tuple[str, int]]:
    out = {}
    for item in st.nft.get("nftables", []):
        c = item.get("chain")
        if c and c.get("hook"):
            out[(f"{c['family']} {c['table']}", c["name"])] = (c["hook"], int(c.get("prio", 0)))
    return out


def predicted(cluster: Cluster, result: Result) -> dict[str, set[Seg]]:
    """node -> every base-chain traversal (segment) the prediction expects there, with its rules in order.

    Segments, not whole packets, are compared: the kernel's trace id changes along a packet's way in
    iptables-nft (xtables-monitor), and a node can be visited twice (NodePort hairpins to the sender)."""
    ix = {n: RuleIndex.of(st) for n, st in cluster.nodes.items()}
    out: dict[str, set[Seg]] = {}
    for o in result.outcomes:
        visit: list[tuple[str, tuple[int, int, str], Rule]] = []
        last_node = None
        for h in o.hops + [None]:
            if h is None or h.node != last_node:
                _flush(visit, out)
                visit = []
                last_node = h.node if h is not None else None
            if h is None or h.step != "netfilter" or h.table is None or h.node not in cluster.nodes or h.rule is None:
                continue
            table = h.table if " " in h.table else f"ip {h.table}"  # iptables hops carry their position
            rule = (ix[h.node].nft(table, h.chain or "", int(h.rule)) if " " in h.table
                    else ix[h.node].ipt(table, h.chain or "", int(h.rule)))
            visit.append((h.node, (HOOK_RANK.get(h.hook or "", 9), h.prio or 0, table), rule))
    return out


def _flush(visit: list[tuple[str, tuple[int, int, str], Rule]], out: dict[str, set[Seg]]) -> None:
    segs: dict[tuple[int, int, str], list[Rule]] = {}
    if not visit:
        return
    node = visit[0][0]
    for _, key, rule in visit:
        segs.setdefault(key, []).append(rule)
    for k, v in segs.items():
        out.setdefault(node, set()).add((k[0], k[1], k[2], tuple(v)))


# ---- what the kernel says ----------------------------------------------------------------------------
# nft prints "unknown rule handle N" for a rule its cache does not hold: its cache is the ruleset read when
# the monitor started, and a proxy sync since then gave the rules new handles. The kernel's event still names
# the rule by handle, and RuleIndex knows the handles of the ruleset read after the probes.
_NFT_RULE = re.compile(r"^trace id (\w+) (\w+) (\S+) (\S+) (?:rule .*# handle|unknown rule handle) (\d+)")
_NFT_PACKET = re.compile(r"^trace id (\w+) (\w+) (\S+) (\S+) packet:")
_XT_PACKET = re.compile(r"^PACKET: \d+ (\w+) ")
_XT_RULE = re.compile(r"^\s*TRACE: \d+ (\w+) (\w+):([^:]+):rule:(0x[0-9a-f]+):")
_XT_BASE = re.compile(r"^\s*TRACE: \d+ (\w+) (\w+):([^:]+):(?:rule|policy|return)")


def parse_monitor(text: str, st: NsState, mode: str, after: tuple[dict, str] | None = None
                  ) -> list[tuple[Seg, ...]]:
    """Packets seen by one node's monitor, each as its canonical list of base-chain segments; each rule is
    known by its content (RuleIndex: nft handles are looked up in the ruleset read after the probes, then in
    the snapshot's; xtables-monitor prints the iptables rule's text).

    Every line carries its packet's trace id, and lines of packets handled at the same time (on two CPUs)
    interleave: each line goes to the segment its own trace id has open. A packet starts where our trace
    rule marks it (again after a loop through lo); a segment starts at each base chain's packet line."""
    bases = _bases(st)
    ix = RuleIndex.of(st, after)
    packets: list[dict[tuple[int, int, str], list[Rule]]] = []
    open_: dict[str, tuple[int, tuple[int, int, str] | None]] = {}  # trace id -> (packet index, segment key)
    xt_pending: set[str] = set()  # trace ids whose PACKET line was seen: their next line names the base chain

    def start(tid: str, table: str, chain: str, new_packet: bool) -> None:
        hook, prio = bases.get((table, chain), ("", 0))
        key = None if new_packet else (HOOK_RANK.get(hook, 9), prio, table)
        if new_packet or tid not in open_:
            packets.append({})
            open_[tid] = (len(packets) - 1, key)
        else:
            open_[tid] = (open_[tid][0], key)

    def add(tid: str, rule: Rule) -> None:
        idx, key = open_.get(tid, (-1, None))
        if key is not None:
            packets[idx].setdefault(key, []).append(rule)

    for line in text.splitlines():
        if mode == "nft":
            m = _NFT_PACKET.match(line)
            if m:
                start(m.group(1), f"{m.group(2)} {m.group(3)}", m.group(4), m.group(3).startswith(TRACE_PREFIX))
                continue
            m = _NFT_RULE.match(line)
            if m and not m.group(3).startswith(TRACE_PREFIX):
                add(m.group(1), ix.nft(f"{m.group(2)} {m.group(3)}", m.group(4), int(m.group(5))))
            continue
        m = _XT_PACKET.match(line)
        if m:
            xt_pending.add(m.group(1))
            continue
        m = _XT_BASE.match(line)
        if m and m.group(1) in xt_pending:
            xt_pending.discard(m.group(1))
            table = f"ip {m.group(2)}"
            start(m.group(1), table, m.group(3), "pn-trace" in line or table == "ip raw")
        m = _XT_RULE.match(line)
        if m and "pn-trace" not in line:
            text = line.split(f" -t {m.group(2)} ", 1)[1] if f" -t {m.group(2)} -A " in line else ""
            add(m.group(1), (f"ip {m.group(2)}", m.group(3), _ipt_text(text) if text else f"handle {m.group(4)}"))
    return [tuple(sorted((k[0], k[1], k[2], tuple(v)) for k, v in p.items())) for p in packets if p]


# ---- the trace rules ---------------------------------------------------------------------------------
def _match_words(e: tuple[str, str, str, str, int, int]) -> tuple[str, list[str]]:
    _, src, dst, proto, dport, sport = e
    nft = f"ip saddr {src} ip daddr {dst} "
    ipt = ["-s", src, "-d", dst]
    if proto == "tcp":
        nft += f"tcp dport {dport} " + (f"tcp sport {sport} " if sport else "") + "tcp flags & (syn|ack) == syn"
        ipt += ["-p", "tcp", "--dport", str(dport), *(["--sport", str(sport)] if sport else []), "--syn"]
    elif proto == "udp":
        nft += f"udp dport {dport}" + (f" udp sport {sport}" if sport else "")
        ipt += ["-p", "udp", "--dport", str(dport), *(["--sport", str(sport)] if sport else [])]
    else:
        nft += "icmp type echo-request"
        ipt += ["-p", "icmp", "--icmp-type", "echo-request"]
    return nft, ipt


class TraceRules:
    """Trace rules in lab node namespaces, with everything needed to take them out again."""

    def __init__(self, mode: str, token: str) -> None:
        self.mode = mode
        self.table = f"{TRACE_PREFIX}{token}"
        self.added: list[tuple[str, list[str]]] = []  # (netns, iptables argv after -t raw -A/-D CHAIN)
        self.nft_tables: list[str] = []  # netns holding our nft table
        self.created_raw: list[str] = []

    def add(self, ns: str, entries: list[tuple[str, str, str, str, int, int]]) -> None:
        if not ns.startswith("pn-") or not netns.exists(ns):  # lab node namespaces only, never the root one
            raise ValueError(f"refusing to add trace rules outside a lab namespace: {ns!r}")
        if self.mode == "nft":
            rules = "\n".join(f"  chain {c} {{ type filter hook {h} priority -350; }}\n" for c, h in
                              (("pre", "prerouting"), ("out", "output")))
            body = "\n".join(f"add rule ip {self.table} {c} {_match_words(e)[0]} meta nftrace set 1"
                             for e in entries for c in ("pre", "out"))
            body += f"\nadd rule ip {self.table} out {CANARY_MATCH} meta nftrace set 1 drop"
            self.nft_tables.append(ns)
            nexec.nft_apply(f"table ip {self.table} {{\n{rules}}}\n{body}\n", netns=ns)
            return
        had_raw = "table ip raw" in netns.run(ns, ["nft", "list", "tables"], check=False).stdout
        if not had_raw:
            self.created_raw.append(ns)
        specs = [[chain, *_match_words(e)[1], "-m", "comment", "--comment", self.table, "-j", "TRACE"]
                 for e in entries for chain in ("PREROUTING", "OUTPUT")]
        canary = ["OUTPUT", "-d", CANARY_IP, "-p", "icmp", "-m", "comment", "--comment", self.table]
        for spec in [*specs, [*canary, "-j", "TRACE"], [*canary, "-j", "DROP"]]:
            self.added.append((ns, spec))
            netns.run(ns, ["iptables", "-w", "-t", "raw", "-A", *spec])

    def remove(self) -> list[str]:
        errors = []
        for ns in self.nft_tables:
            r = netns.run(ns, ["nft", "delete", "table", "ip", self.table], check=False)
            if r.returncode != 0 and "No such file" not in r.stderr:
                errors.append(f"{ns}: {r.stderr.strip()}")
        for ns, spec in reversed(self.added):
            netns.run(ns, ["iptables", "-w", "-t", "raw", "-D", *spec], check=False)
        for ns in self.created_raw:
            left = netns.run(ns, ["iptables-save", "-t", "raw"], check=False).stdout
            if not any(line.startswith("-A ") for line in left.splitlines()):
                netns.run(ns, ["nft", "delete", "table", "ip", "raw"], check=False)
        self.nft_tables, self.added, self.created_raw = [], [], []
        return errors


def leftover_rules(ns: str) -> list[str]:
    """Trace rules of ours still in a namespace (tests and `lab` checks use this)."""
    out = [line for line in netns.run(ns, ["nft", "list", "tables"], check=False).stdout.splitlines()
           if TRACE_PREFIX in line]
    out += [line for line in netns.run(ns, ["iptables-save", "-t", "raw"], check=False).stdout.splitlines()
            if TRACE_PREFIX in line]
    return out


@contextmanager
def _signals_raise() -> Iterator[None]:
    """SIGTERM/SIGINT become exceptions while trace rules are in place, so finally blocks run."""
    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@contextmanager
def _signals_held() -> Iterator[list[int]]:
    """While the trace rules are taken out, SIGTERM/SIGINT wait: a second Ctrl-C must not cut the cleanup
    short. The signals that came are raised once it is done (unless an exception is on its way already)."""
    came: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: came.append(signum)) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield came
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _canaries(text: str) -> int:
    """How many canary packets a monitor's output shows (one packet line each, in either monitor)."""
    return sum(1 for line in text.splitlines() if CANARY_IP in line and ("packet:" in line or
                                                                         line.startswith("PACKET:")))


def _wait_canary(monitors: dict[str, tuple[str, subprocess.Popen[str], str]], what: str, timeout: float = 15.0
                 ) -> list[str]:
    """Ping the canary in each node (node -> (netns, monitor, output file)) until its monitor prints one
    more than it had. Before the probes this says the monitor is subscribed; after them it says the
    monitor has written out every event queued before it (netlink keeps their order), so stopping it
    loses nothing. Returns a problem per monitor that never showed it."""
    def seen(path: str) -> int:
        with open(path, errors="replace") as f:
            return _canaries(f.read())

    base = {node: seen(path) for node, (_, _, path) in monitors.items()}
    waiting = dict(monitors)
    deadline = time.monotonic() + timeout
    while waiting and time.monotonic() < deadline:
        for node, (ns, p, path) in list(waiting.items()):
            if p.poll() is not None or seen(path) > base[node]:
                del waiting[node]
                continue
            subprocess.run(netns.exec_argv(ns, ["ping", "-c", "1", "-W", "0.05", CANARY_IP]), capture_output=True)
        if waiting:
            time.sleep(0.05)
    return [f"{node}: the kernel trace monitor showed no canary {what} within {timeout:.0f} s" for node in waiting]


def _marked(text: str, table: str) -> int:
    """Packets our trace rule marked (the canary aside): nft's packet line of our table, or the iptables
    TRACE line of our raw rule."""
    return sum(1 for line in text.splitlines() if table in line and CANARY_IP not in line and (
        f"ip {table} " in line and " packet:" in line or "TRACE:" in line and "raw:" in line))


def _wait_marked(monitor: tuple[str, subprocess.Popen[str], str], table: str, n: int, timeout: float = 15.0
                 ) -> list[str]:
    """Until the first node's monitor shows every probe: each enters there and is marked on the way in.
    A loaded machine may hand packets to ksoftirqd, so a probe's events can come after the sender is done
    (and after an end canary, which is traced in the pinging process itself)."""
    _, p, path = monitor
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and p.poll() is None:
        with open(path, errors="replace") as f:
            if _marked(f.read(), table) >= n:
                return []
        time.sleep(0.05)
    return [f"the first node's kernel trace showed fewer than the {n} probe(s) sent within {timeout:.0f} s"]


def _wait_quiet(monitors: dict[str, tuple[str, subprocess.Popen[str], str]], quiet: float = 0.3,
                timeout: float = 15.0) -> list[str]:
    """Until no monitor has written anything for `quiet` seconds: the probes' later hops (other nodes, via
    the wire and softirq) are written out too."""
    def sizes() -> list[int]:
        return [os.path.getsize(path) for _, _, path in monitors.values()]

    deadline = time.monotonic() + timeout
    last, since = sizes(), time.monotonic()
    while time.monotonic() < deadline:
        time.sleep(0.05)
        now = sizes()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return []
    return [f"the kernel trace did not settle within {timeout:.0f} s"]


def _monitor_problems(node: str, p: subprocess.Popen[str], text: str, err: str, stopped_by_us: bool) -> list[str]:
    """A monitor that lost events or died gives an incomplete trace: that is said, never compared as is."""
    out = []
    if "lost some netlink events" in text + err or "No buffer space" in err:
        out.append(f"{node}: the kernel trace lost events (monitor too slow): {err.strip()[-200:] or 'ENOBUFS'}")
    elif not stopped_by_us:
        out.append(f"{node}: the kernel trace monitor exited early ({p.returncode}): {err.strip()[-200:]}")
    return out


def _source_ns(cluster: Cluster, source: Source) -> str:
    if source.kind == "node":
        return cluster.nodes[source.name].netns
    return next(p.netns for p in cluster.pods if p.ref == source.name)


def verify(cluster: Cluster, source: Source, pkt: Packet, result: Result, *, probes: int = 0,
           hold: float = 0.0) -> Report:
    """Probe the flow for real and compare. `hold` keeps the trace rules in place that long (tests use it)."""
    mode = "nft" if cluster.proxy_mode == "nftables" else "ipt"
    hold = hold or float(os.environ.get("PODNET_TRACE_HOLD", "0") or 0)  # tests interrupt a verify in flight
    n = probes or (1 if pkt.sport else max(4, min(24, int(4 / max(min(o.probability for o in result.outcomes),
                                                                      1e-3)))))
    by_node: dict[str, list[tuple[str, str, str, str, int, int]]] = {}
    for e in result.entries:
        by_node.setdefault(e[0], []).append(e)
    expect = predicted(cluster, result)
    # receivers: every pod (or node) an outcome delivers to
    receivers: dict[str, tuple[str, set[str]]] = {}
    for o in result.outcomes:
        if o.verdict != "delivered":
            continue
        ns = ""
        if o.where.startswith("pod "):
            ns = next((p.netns for p in cluster.pods if p.ref == o.where[4:]), "")
        elif o.where.startswith("node "):
            ns = cluster.nodes[o.where[5:]].netns
        if ns:  # what arrives there: the endpoint DNAT chose (its port may differ per pod: named targetPort)
            want = o.endpoint or f"{pkt.dst}:{pkt.dport}"
            receivers.setdefault(o.where, (ns, set()))[1].add(want if pkt.proto != "icmp" else
                                                               f"{want.rsplit(':', 1)[0]}:0")
    rules = TraceRules(mode, secrets.token_hex(3))
    procs: list[tuple[str, str, subprocess.Popen[str]]] = []
    files: dict[str, tuple[str, str]] = {}  # monitor node -> (stdout file, stderr file)
    monitors: dict[str, str] = {}
    arrivals: dict[str, int] = {}
    rulesets_after: dict[str, tuple[dict, str]] = {}  # node -> (nft JSON, iptables-save) after the probes
    problems: list[str] = []
    proto_num = {"tcp": 6, "udp": 17, "icmp": 1}[pkt.proto]
    tmp = tempfile.TemporaryDirectory(prefix="pn-trace-")
    with _signals_raise():  # from here on a signal is an exception, so the finally below runs
        try:
            for node, entries in by_node.items():
                rules.add(cluster.nodes[node].netns, entries)
            waiting = {}
            for node in by_node:
                argv = (["nft", "-a", "monitor", "trace"] if mode == "nft" else ["xtables-monitor", "--trace"])
                # Output goes to files, not pipes: a monitor blocked on a full pipe stops reading netlink and
                # the kernel drops its trace events (seen at ~60 KiB of trace: 24 probes through 7 endpoints).
                out_path, err_path = os.path.join(tmp.name, f"{node}.out"), os.path.join(tmp.name, f"{node}.err")
                files[node] = (out_path, err_path)
                with open(out_path, "w") as fo, open(err_path, "w") as fe:
                    p = subprocess.Popen(netns.exec_argv(cluster.nodes[node].netns, argv), stdout=fo, stderr=fe,
                                         text=True)
                procs.append(("monitor", node, p))
                waiting[node] = (cluster.nodes[node].netns, p, out_path)
            for where, (ns, dsts) in receivers.items():
                p = subprocess.Popen(netns.exec_argv(ns, [sys.executable, "-c", SNIFFER, str(proto_num),
                                                          ",".join(sorted(dsts)), "30"]),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                assert p.stdout is not None
                p.stdout.readline()  # "ready"
                procs.append(("receiver", where, p))
            problems += _wait_canary(waiting, "before the probes")
            sent = subprocess.run(netns.exec_argv(_source_ns(cluster, source),
                                                  [sys.executable, "-c", PROBE, pkt.proto, pkt.dst, str(pkt.dport),
                                                   str(pkt.sport), str(n)]), capture_output=True, text=True,
                                  timeout=60)
            if sent.returncode != 0 or sent.stdout.strip() != str(n):
                problems.append(f"the probes failed (exit {sent.returncode}): "
                                f"{(sent.stderr.strip().splitlines() or ['no output'])[-1]}")
            time.sleep(hold)
            first = source.name if source.kind == "node" else next(p.node for p in cluster.pods
                                                                   if p.ref == source.name)
            if first in waiting and sent.returncode == 0:
                problems += _wait_marked(waiting[first], rules.table, n)
            problems += _wait_canary(waiting, "after the probes")
            problems += _wait_quiet(waiting)
        finally:
            with _signals_held() as came:
                try:
                    running = {id(p) for _, _, p in procs if p.poll() is None}
                    for _, _, p in procs:
                        if p.poll() is None:
                            p.terminate()
                    for kind, who, p in procs:
                        try:
                            out, _ = p.communicate(timeout=5)
                        except subprocess.TimeoutExpired:
                            p.kill()
                            out, _ = p.communicate()
                        if kind == "monitor":
                            with open(files[who][0], errors="replace") as fo, open(files[who][1], errors="replace") as fe:
                                monitors[who], err = fo.read(), fe.read()
                            problems += _monitor_problems(who, p, monitors[who], err, id(p) in running)
                        else:
                            try:
                                arrivals[who] = sum(json.loads((out or "").strip().splitlines()[-1]).values())
                            except (ValueError, IndexError):
                                arrivals[who] = 0
                finally:
                    tmp.cleanup()
                    errors = rules.remove()
            if came and sys.exc_info()[0] is None:
                raise KeyboardInterrupt(f"signal {came[0]}")
    for node in monitors:
        ns = cluster.nodes[node].netns
        text = netns.run(ns, ["nft", "-j", "list", "ruleset"], check=False).stdout
        ipt = netns.run(ns, ["iptables-save"], check=False).stdout
        try:
            rulesets_after[node] = (json.loads(text), ipt)
        except ValueError:
            pass
    if _touches_affinity(cluster, result):
        # The probes themselves record the client in session-affinity lists: later probes take the sticky
        # branch. Both the state before and the state after are predictions the kernel may follow. Only the
        # affinity state is taken from after: the probes' own conntrack entries are no state to predict from.
        from podnet.trace import snapshot, walk

        later = snapshot.read_cluster(cluster.lab, nodes=list(cluster.nodes))
        for node, st in later.nodes.items():
            st.conntrack = cluster.nodes[node].conntrack if node in cluster.nodes else []
        after = walk.walk(later, source, pkt)
        for node, segs in predicted(later, after).items():  # handles as they are now
            expect.setdefault(node, set()).update(segs)
        delivered = {o.where for o in result.outcomes if o.verdict == "delivered"}
        result = Result(result.flow, result.outcomes + [o for o in after.outcomes if o.where not in delivered],
                        result.conntrack, result.warnings, result.entries)
    rep = compare(cluster, result, expect, monitors, arrivals, mode, n, problems + errors, rulesets_after)
    rep.incomplete = problems
    return rep


def predict_and_verify(predict: Callable[[], tuple[Cluster, Source, Packet, Result]], attempts: int = 3
                       ) -> tuple[Result, Report]:
    """Predict, then --verify. When the kernel's side of a round is incomplete (a monitor lost events, or
    died because a proxy resync replaced a rule it was looking up, or the probes could not be sent), that
    round proves nothing either way: predict again from fresh state and probe again. A round whose trace
    is complete is final, whatever it says."""
    for attempt in range(1, attempts + 1):
        cluster, source, pkt, result = predict()
        rep = verify(cluster, source, pkt, result)
        rep.attempts = attempt
        if not rep.incomplete:
            break
    return result, rep


def _touches_affinity(cluster: Cluster, result: Result) -> bool:
    """Does a predicted path pass a chain that reads or writes a session-affinity list?"""
    for o in result.outcomes:
        for h in o.hops:
            if h.step != "netfilter" or not h.chain or h.node not in cluster.nodes:
                continue
            st = cluster.nodes[h.node]
            if " " in (h.table or ""):  # nftables: the chain's rules use an affinity-* set
                fam, _, tname = (h.table or "").partition(" ")
                if any('"@affinity-' in json.dumps(it["rule"]) for it in st.nft.get("nftables", [])
                       if "rule" in it and it["rule"].get("chain") == h.chain and it["rule"].get("table") == tname
                       and it["rule"].get("family") == fam):
                    return True
            elif any(line.startswith(f"-A {h.chain} ") and ("--rcheck" in line or "--set" in line)
                     for line in st.iptables.splitlines()):
                return True
    return False


def compare(cluster: Cluster, result: Result, expect: dict[str, set[Seg]], monitors: dict[str, str],
            arrivals: dict[str, int], mode: str, n: int, errors: list[str] | None = None,
            after: dict[str, tuple[dict, str]] | None = None) -> Report:
    dis = list(errors or [])
    observed: dict[str, list[list[str]]] = {}
    total_packets = 0

    for node, text in monitors.items():
        ix = RuleIndex.of(cluster.nodes[node], (after or {}).get(node))

        def show(seg: Seg, ix: RuleIndex = ix) -> str:
            return ", ".join(ix.show(r) for r in seg[3])

        pkts = parse_monitor(text, cluster.nodes[node], mode, (after or {}).get(node))
        observed[node] = [[ix.show(r) for s in p for r in s[3]] for p in pkts]
        total_packets += len(pkts)
        bad: set[Seg] = set()
        for p in pkts:
            bad |= {s for s in p if s not in expect.get(node, set())}
        for seg in sorted(bad):
            same_place = [e for e in expect.get(node, set()) if e[:3] == seg[:3]]
            want = " | ".join(sorted(show(e) for e in same_place)) or "no rule there"
            dis.append(f"{node} {seg[2]} (priority {seg[1]}): the kernel ran [{show(seg)}], predicted [{want}]")
        nodes_all = all(any(h.node == node for h in o.hops) for o in result.outcomes)
        if nodes_all and expect.get(node) and not pkts:
            dis.append(f"{node}: predicted on every path, but the kernel traced no packet there")
    delivered = {o.where: o.probability for o in result.outcomes if o.verdict == "delivered"}
    for where, count in arrivals.items():
        if count and where not in delivered:
            dis.append(f"{where}: received {count} probe(s), predicted not to")
    # Each probe is one packet (one SYN, one datagram, one echo request), so arrivals are counted exactly.
    p_del = sum(delivered.values())
    got_any = sum(arrivals.values())
    if p_del >= 1 - 1e-9 and got_any != n:
        dis.append(f"predicted every probe delivered, but {got_any} of {n} arrived")
    if got_any > n:
        dis.append(f"{got_any} probes arrived, only {n} were sent")
    if p_del == 0 and got_any:
        dis.append(f"predicted {result.verdict}, but {got_any} probe(s) arrived")
    for where, prob in delivered.items():
        if prob >= 1 - 1e-9 and arrivals.get(where, 0) != n:
            dis.append(f"{where}: predicted to receive every probe, got {arrivals.get(where, 0)} of {n}")
    summary = (f"{n} probe(s), {total_packets} traced packet(s) on {len(monitors)} node(s), "
               f"arrivals {dict(sorted(arrivals.items())) or 'none'}")
    return Report(not dis, summary, dis, observed, arrivals)
