"""`podnet trace --verify`: send real probes for the flow and hold the prediction against the kernel's own trace.

For each node the prediction passes, a trace rule matching only this flow (as the packet enters that node)
is added inside the node's namespace: `meta nftrace set 1` in a table of our own (nftables mode), or a
`TRACE` rule in the raw table (iptables mode). `nft monitor trace` / `xtables-monitor --trace` run in each
of those namespaces while probes leave the source namespace and a receiver in each predicted destination
namespace counts what arrives. Then, node by node, every packet's sequence of rules (table, chain, handle)
must be one the prediction has, and arrivals must be where the prediction says. The trace rules are always
removed: try/finally, plus SIGINT/SIGTERM turned into exceptions while they are in place.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from podnet.net import netns
from podnet.trace.model import Packet, Result
from podnet.trace.snapshot import Cluster, NsState
from podnet.trace.walk import Source

HOOK_RANK = {"output": 0, "prerouting": 1, "input": 2, "forward": 3, "postrouting": 4}  # one segment per hook
TRACE_PREFIX = "pn-trace-"
Seg = tuple[int, int, str, tuple[tuple[str, str, int], ...]]  # (hook rank, prio, table, rules)

SNIFFER = r"""
import json, signal, socket, struct, sys, select
proto, want, limit = int(sys.argv[1]), set(sys.argv[2].split(",")), float(sys.argv[3])  # want: "ip:port" (icmp: "ip:0")
stop = []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
s = socket.socket(socket.AF_PACKET, socket.SOCK_DGRAM, socket.ntohs(0x0800))
seen = {}
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

    def to_json(self) -> dict[str, object]:
        return {"agree": self.agree, "summary": self.summary, "disagreements": self.disagreements,
                "observed": self.observed, "arrivals": self.arrivals}


# ---- what the prediction says, in the kernel trace's terms -----------------------------------------------
def positions(doc: dict) -> dict[tuple[str, str, int], int]:
    """(table, chain, handle) -> 1-based position in its chain. Rules are compared by position: a proxy's
    resync between the snapshot and the probes gives the same rules new handles."""
    out: dict[tuple[str, str, int], int] = {}
    count: dict[tuple[str, str], int] = {}
    for item in doc.get("nftables", []):
        r = item.get("rule")
        if r:
            key = (f"{r['family']} {r['table']}", r["chain"])
            count[key] = count.get(key, 0) + 1
            out[(*key, int(r["handle"]))] = count[key]
    return out


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
    pos = {n: positions(st.nft) for n, st in cluster.nodes.items()}
    out: dict[str, set[Seg]] = {}
    for o in result.outcomes:
        visit: list[tuple[str, tuple[int, int, str], tuple[str, str, int]]] = []
        last_node = None
        for h in o.hops + [None]:  # type: ignore[list-item]
            if h is None or h.node != last_node:
                _flush(visit, out)
                visit = []
                last_node = h.node if h is not None else None
            if h is None or h.step != "netfilter" or h.table is None or h.node not in cluster.nodes or h.rule is None:
                continue
            table, rule = h.table, int(h.rule)
            if " " not in table:  # iptables hops carry their position already
                table = f"ip {table}"
            else:
                rule = pos[h.node].get((table, h.chain or "", rule), -rule)
            visit.append((h.node, (HOOK_RANK.get(h.hook or "", 9), h.prio or 0, table), (table, h.chain or "", rule)))
    return out


def _flush(visit: list[tuple[str, tuple[int, int, str], tuple[str, str, int]]], out: dict[str, set[Seg]]) -> None:
    segs: dict[tuple[int, int, str], list[tuple[str, str, int]]] = {}
    if not visit:
        return
    node = visit[0][0]
    for _, key, rule in visit:
        segs.setdefault(key, []).append(rule)
    for k, v in segs.items():
        out.setdefault(node, set()).add((k[0], k[1], k[2], tuple(v)))


# ---- what the kernel says ----------------------------------------------------------------------------
_NFT_RULE = re.compile(r"^trace id (\w+) (\w+) (\S+) (\S+) rule .*# handle (\d+)")
_NFT_PACKET = re.compile(r"^trace id (\w+) (\w+) (\S+) (\S+) packet:")
_XT_PACKET = re.compile(r"^PACKET: ")
_XT_RULE = re.compile(r"^\s*TRACE: \d+ \w+ (\w+):([^:]+):rule:(0x[0-9a-f]+):")
_XT_BASE = re.compile(r"^\s*TRACE: \d+ \w+ (\w+):([^:]+):(?:rule|policy|return)")


def parse_monitor(text: str, st: NsState, mode: str, after: dict | None = None) -> list[tuple[Seg, ...]]:
    """Packets seen by one node's monitor, each as its canonical list of base-chain segments; rule handles
    become positions (from the ruleset read after the probes, else the snapshot's)."""
    bases = _bases(st)
    pos = positions(st.nft) | positions(after or {})

    def at(table: str, chain: str, handle: int) -> int:
        return pos.get((table, chain, handle), -handle)

    packets: list[dict[tuple[int, int, str], list[tuple[str, str, int]]]] = []
    cur_key: tuple[int, int, str] | None = None
    pending_xt_packet = False
    for line in text.splitlines():
        if mode == "nft":
            m = _NFT_PACKET.match(line)
            if m:
                table, chain = f"{m.group(2)} {m.group(3)}", m.group(4)
                hook, prio = bases.get((table, chain), ("", 0))
                if m.group(3).startswith(TRACE_PREFIX):
                    packets.append({})
                    cur_key = None
                    continue
                cur_key = (HOOK_RANK.get(hook, 9), prio, table)
                if not packets:
                    packets.append({})
                continue
            m = _NFT_RULE.match(line)
            if m and cur_key is not None and not m.group(3).startswith(TRACE_PREFIX):
                table = f"{m.group(2)} {m.group(3)}"
                packets[-1].setdefault(cur_key, []).append((table, m.group(4), at(table, m.group(4), int(m.group(5)))))
        else:
            if _XT_PACKET.match(line):
                pending_xt_packet = True
                continue
            m = _XT_BASE.match(line)
            if m and pending_xt_packet:
                pending_xt_packet = False
                table, chain = f"ip {m.group(1)}", m.group(2)
                if "pn-trace" in line or table == "ip raw":
                    packets.append({})
                    cur_key = None
                    continue
                hook, prio = bases.get((table, chain), ("", 0))
                cur_key = (HOOK_RANK.get(hook, 9), prio, table)
                packets.append({})  # xtables-monitor's lines of several packets interleave: one segment each
            m = _XT_RULE.match(line)
            if m and cur_key is not None and "pn-trace" not in line:
                table = f"ip {m.group(1)}"
                packets[-1].setdefault(cur_key, []).append((table, m.group(2), at(table, m.group(2), int(m.group(3), 16))))
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
            self.nft_tables.append(ns)
            netns.run(ns, ["nft", "-f", "-"], input=f"table ip {self.table} {{\n{rules}}}\n{body}\n")
            return
        had_raw = "table ip raw" in netns.run(ns, ["nft", "list", "tables"], check=False).stdout
        if not had_raw:
            self.created_raw.append(ns)
        for e in entries:
            for chain in ("PREROUTING", "OUTPUT"):
                spec = [chain, *_match_words(e)[1], "-m", "comment", "--comment", self.table, "-j", "TRACE"]
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


def _has_socket(pid: int) -> bool:
    try:
        return any(os.readlink(f"/proc/{pid}/fd/{fd}").startswith("socket:") for fd in os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return False


def _wait_subscribed(monitors: list[subprocess.Popen[str]], timeout: float = 5.0) -> None:
    """Until every monitor (nft / xtables-monitor, exec'd by `ip netns exec` in the same pid) holds its
    netlink socket, then a moment for the group subscription that follows it: probes sent earlier go unseen."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not all(_has_socket(p.pid) or p.poll() is not None for p in monitors):
        time.sleep(0.02)
    time.sleep(0.2)


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
    monitors: dict[str, str] = {}
    arrivals: dict[str, int] = {}
    rulesets_after: dict[str, dict] = {}
    probe_errors: list[str] = []
    proto_num = {"tcp": 6, "udp": 17, "icmp": 1}[pkt.proto]
    try:
        with _signals_raise():
            for node, entries in by_node.items():
                rules.add(cluster.nodes[node].netns, entries)
            for node in by_node:
                argv = (["nft", "-a", "monitor", "trace"] if mode == "nft" else ["xtables-monitor", "--trace"])
                p = subprocess.Popen(netns.exec_argv(cluster.nodes[node].netns, argv), stdout=subprocess.PIPE,
                                     stderr=subprocess.DEVNULL, text=True)
                procs.append(("monitor", node, p))
            for where, (ns, dsts) in receivers.items():
                p = subprocess.Popen(netns.exec_argv(ns, [sys.executable, "-c", SNIFFER, str(proto_num),
                                                          ",".join(sorted(dsts)), "30"]),
                                     stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
                assert p.stdout is not None
                p.stdout.readline()  # "ready"
                procs.append(("receiver", where, p))
            _wait_subscribed([p for kind, _, p in procs if kind == "monitor"])
            sent = subprocess.run(netns.exec_argv(_source_ns(cluster, source),
                                                  [sys.executable, "-c", PROBE, pkt.proto, pkt.dst, str(pkt.dport),
                                                   str(pkt.sport), str(n)]), capture_output=True, text=True,
                                  timeout=60)
            if sent.returncode != 0 or sent.stdout.strip() != str(n):
                probe_errors.append(f"the probes failed (exit {sent.returncode}): "
                                    f"{(sent.stderr.strip().splitlines() or ['no output'])[-1]}")
            time.sleep(0.3 + hold)
    finally:
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
                monitors[who] = out or ""
            else:
                try:
                    arrivals[who] = sum(json.loads((out or "").strip().splitlines()[-1]).values())
                except (ValueError, IndexError):
                    arrivals[who] = 0
        errors = rules.remove() + probe_errors
    for node in monitors:
        text = netns.run(cluster.nodes[node].netns, ["nft", "-j", "list", "ruleset"], check=False).stdout
        try:
            rulesets_after[node] = json.loads(text)
        except ValueError:
            pass
    if any("--rcheck" in st.iptables or '"affinity-' in json.dumps(st.nft) for st in cluster.nodes.values()):
        # The probes themselves record the client in session-affinity lists: later probes take the sticky
        # branch. Both the state before and the state after are predictions the kernel may follow.
        from podnet.trace import snapshot, walk

        after = walk.walk(snapshot.read_cluster(cluster.lab, nodes=list(cluster.nodes)), source, pkt)
        for node, segs in predicted(cluster, after).items():
            expect.setdefault(node, set()).update(segs)
        delivered = {o.where for o in result.outcomes if o.verdict == "delivered"}
        result = Result(result.flow, result.outcomes + [o for o in after.outcomes if o.where not in delivered],
                        result.conntrack, result.warnings, result.entries)
    return compare(cluster, result, expect, monitors, arrivals, mode, n, errors, rulesets_after)


def compare(cluster: Cluster, result: Result, expect: dict[str, set[Seg]], monitors: dict[str, str],
            arrivals: dict[str, int], mode: str, n: int, errors: list[str] | None = None,
            after: dict[str, dict] | None = None) -> Report:
    dis = list(errors or [])
    observed: dict[str, list[list[str]]] = {}
    total_packets = 0

    def show(seg: Seg) -> str:
        return ", ".join(f"{t} {c} #{h}" for t, c, h in seg[3])

    for node, text in monitors.items():
        pkts = parse_monitor(text, cluster.nodes[node], mode, (after or {}).get(node))
        observed[node] = [[f"{t} {c} {h}" for s in p for t, c, h in s[3]] for p in pkts]
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
    for where, p in delivered.items():
        if p >= 1 - 1e-9 and arrivals.get(where, 0) != n:
            dis.append(f"{where}: predicted to receive every probe, got {arrivals.get(where, 0)} of {n}")
    summary = (f"{n} probe(s), {total_packets} traced packet(s) on {len(monitors)} node(s), "
               f"arrivals {dict(sorted(arrivals.items())) or 'none'}")
    return Report(not dis, summary, dis, observed, arrivals)
