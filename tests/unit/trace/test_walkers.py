"""The pure parts of `podnet trace`: nft JSON and iptables-save walked with probabilities, conntrack and
kernel-trace parsing, policy routing. Inputs are the shapes the kernel tools print (see the lab tests for
the same code on live state)."""

from __future__ import annotations

import pytest

from podnet.trace.ipt import IptablesRules, IptablesWalker, IptContext
from podnet.trace.model import Hop, Packet
from podnet.trace.nft import NftContext, NftRuleset, NftWalker
from podnet.trace.snapshot import NsState, parse_conntrack
from podnet.trace.verify import RuleIndex, parse_monitor
from podnet.trace.walk import route


def keep(h: Hop) -> Hop:
    return h


def _rule(chain: str, handle: int, *expr: dict) -> dict:
    return {"rule": {"family": "ip", "table": "t", "chain": chain, "handle": handle, "expr": list(expr)}}


DADDR = {"payload": {"protocol": "ip", "field": "daddr"}}
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
KEY = {"concat": [DADDR, {"meta": {"key": "l4proto"}}, {"payload": {"protocol": "th", "field": "dport"}}]}


def ruleset(n_eps: int, affinity: list[str] | None = None) -> dict:
    eps = [[{"concat": ["10.96.0.10", "tcp", 80, i]}, {"concat": [f"10.244.{i}.2", 8080]}] for i in range(n_eps)]
    items = [
        {"table": {"family": "ip", "name": "t"}},
        {"chain": {"family": "ip", "table": "t", "name": "pre", "hook": "prerouting", "prio": -100, "type": "nat"}},
        {"map": {"family": "ip", "table": "t", "name": "vips", "elem": [
            [{"concat": ["10.96.0.10", "tcp", 80]}, {"goto": {"target": "svc"}}]]}},
        {"map": {"family": "ip", "table": "t", "name": "eps", "elem": eps}},
        {"set": {"family": "ip", "table": "t", "name": "aff", "elem": [{"elem": {"val": a, "timeout": 10800}}
                                                                        for a in affinity or []]}},
        _rule("pre", 1, {"vmap": {"key": KEY, "data": "@vips"}}),
        _rule("svc", 2, {"match": {"op": "==", "left": SADDR, "right": "@aff"}},
              {"dnat": {"family": "ip", "addr": "10.244.0.2", "port": 8080}}),
        _rule("svc", 3, {"match": {"op": "!=", "left": SADDR, "right": {"prefix": {"addr": "10.244.0.0", "len": 16}}}},
              {"mangle": {"key": {"meta": {"key": "mark"}},
                          "value": {"|": [{"meta": {"key": "mark"}}, 16384]}}}),
        _rule("svc", 4, {"dnat": {"family": "ip", "addr": {"map": {"key": {"concat": [
            *KEY["concat"], {"numgen": {"mode": "random", "mod": n_eps, "offset": 0}}]}, "data": "@eps"}}}}),
    ]
    return {"nftables": items}


def nft_walk(doc: dict, pkt: Packet):
    w = NftWalker(NftRuleset.parse(doc), NftContext(["127.0.0.0/8"]))
    return w.run("ip t", "pre", pkt, keep)


def test_numgen_branches_give_each_endpoint_its_share():
    out = nft_walk(ruleset(3), Packet("10.244.9.9", "10.96.0.10", "tcp", 1234, 80))
    assert sorted(b.pkt.endpoint for b in out) == ["10.244.0.2:8080", "10.244.1.2:8080", "10.244.2.2:8080"]
    assert all(b.p == pytest.approx(1 / 3) and b.verdict == "accept" and b.pkt.mark == 0 for b in out)
    assert [h.rule for h in out[0].hops] == [1, 4]


def test_masquerade_mark_for_sources_outside_the_pod_network():
    out = nft_walk(ruleset(2), Packet("192.168.77.12", "10.96.0.10", "tcp", 1234, 80))
    assert {b.pkt.mark for b in out} == {0x4000} and len(out) == 2


def test_affinity_set_entry_makes_the_choice_deterministic():
    out = nft_walk(ruleset(3, affinity=["10.244.9.9"]), Packet("10.244.9.9", "10.96.0.10", "tcp", 1234, 80))
    assert [(b.p, b.pkt.endpoint) for b in out] == [(1.0, "10.244.0.2:8080")]


def test_other_ports_do_not_match():
    out = nft_walk(ruleset(3), Packet("10.244.9.9", "10.96.0.10", "tcp", 1234, 443))
    assert [(b.verdict, b.pkt.endpoint, b.hops) for b in out] == [(None, "", [])]


IPT = """*nat
:PREROUTING ACCEPT [0:0]
:KUBE-SVC-X - [0:0]
:KUBE-SEP-A - [0:0]
:KUBE-SEP-B - [0:0]
:KUBE-SEP-C - [0:0]
-A PREROUTING -d 10.96.0.10/32 -p tcp -m tcp --dport 80 -j KUBE-SVC-X
-A KUBE-SVC-X -m statistic --mode random --probability 0.33333333349 -j KUBE-SEP-A
-A KUBE-SVC-X -m statistic --mode random --probability 0.50000000000 -j KUBE-SEP-B
-A KUBE-SVC-X -j KUBE-SEP-C
-A KUBE-SEP-A -p tcp -m recent --set --name KUBE-SEP-A --mask 255.255.255.255 --rsource -j DNAT --to-destination 10.244.0.2:80
-A KUBE-SEP-B -p tcp -j DNAT --to-destination 10.244.1.2:80
-A KUBE-SEP-C -p tcp -j DNAT --to-destination 10.244.2.2:80
COMMIT
"""


def test_iptables_statistic_chain_gives_equal_thirds():
    w = IptablesWalker(IptablesRules.parse(IPT), IptContext([]))
    out = w.run("nat", "PREROUTING", Packet("10.244.9.9", "10.96.0.10", "tcp", 1, 80), keep)
    shares = {b.pkt.endpoint: b.p for b in out if b.pkt.endpoint}
    assert shares == pytest.approx({"10.244.0.2:80": 1 / 3, "10.244.1.2:80": 1 / 3, "10.244.2.2:80": 1 / 3},
                                   abs=1e-9)
    assert sum(b.p for b in out) == pytest.approx(1.0)


def test_unknown_match_is_reported_not_guessed():
    text = IPT.replace("-A KUBE-SVC-X -j KUBE-SEP-C", "-A KUBE-SVC-X -m bpf --bytecode x -j KUBE-SEP-C")
    w = IptablesWalker(IptablesRules.parse(text), IptContext([]))
    w.run("nat", "PREROUTING", Packet("10.244.9.9", "10.96.0.10", "tcp", 1, 80), keep)
    assert any("bpf" in u for u in w.unknown)


def test_conntrack_text_with_nat_and_unreplied():
    (e,) = parse_conntrack("udp      17 119 src=10.244.1.3 dst=10.96.0.10 sport=5353 dport=53 [UNREPLIED] "
                           "src=10.244.250.9 dst=10.244.1.3 sport=53 dport=5353 mark=0 use=1\n"
                           "conntrack v1.4.7 (conntrack-tools): 1 flow entries have been shown.\n")
    assert e.unreplied and e.orig["dst"] == "10.96.0.10" and e.reply["src"] == "10.244.250.9"
    (t,) = parse_conntrack("tcp      6 117 TIME_WAIT src=1.1.1.1 dst=2.2.2.2 sport=1 dport=80 src=3.3.3.3 "
                           "dst=1.1.1.1 sport=80 dport=1 [ASSURED] mark=0 use=1")
    assert t.state == "TIME_WAIT" and t.reply["src"] == "3.3.3.3" and not t.unreplied


def test_policy_routing_and_longest_prefix():
    st = NsState("n", "ns", rules=[{"priority": 0, "src": "all", "table": "local"},
                                   {"priority": 100, "src": "10.1.0.0", "srclen": 16, "table": "7"},
                                   {"priority": 32766, "src": "all", "table": "main"}],
                 routes=[{"dst": "default", "gateway": "192.168.0.1", "dev": "eth0"},
                         {"dst": "10.244.1.0/24", "gateway": "10.244.1.0", "dev": "flannel.1", "flags": ["onlink"]},
                         {"dst": "default", "dev": "tun9", "table": "7"},
                         {"type": "local", "dst": "192.168.0.5", "dev": "eth0", "table": "local"}])
    assert route(st, "10.244.1.7")["dev"] == "flannel.1"
    assert route(st, "8.8.8.8")["dev"] == "eth0"
    assert route(st, "8.8.8.8", src="10.1.2.3")["dev"] == "tun9"
    assert route(st, "192.168.0.5")["type"] == "local"


def _nft_rule(chain: str, handle: int, target: str, counter: int = 0) -> dict:
    return {"rule": {"family": "ip", "table": "podnet", "chain": chain, "handle": handle,
                     "expr": [{"counter": {"packets": counter, "bytes": 60 * counter}}, {"jump": {"target": target}}]}}


def test_kernel_trace_segments_from_nft_monitor():
    before = {"nftables": [
        {"chain": {"family": "ip", "table": "podnet", "name": "nat-prerouting", "hook": "prerouting", "prio": -100}},
        {"chain": {"family": "ip", "table": "pn-trace-ab", "name": "pre", "hook": "prerouting", "prio": -350}},
        _nft_rule("nat-prerouting", 10, "services"),
        _nft_rule("services", 9, "a"), _nft_rule("services", 11, "b")]}
    # a resync between the snapshot and the probes: new handles, another order, counters moved on
    after = {"nftables": [_nft_rule("nat-prerouting", 20, "services", 5),
                          _nft_rule("services", 21, "b", 3), _nft_rule("services", 22, "a", 2)]}
    st = NsState("n", "ns", nft=before)
    text = "\n".join([
        'trace id 1 ip pn-trace-ab pre packet: iif "cni0" ip saddr 10.244.1.3',
        "trace id 1 ip pn-trace-ab pre rule ip saddr 10.244.1.3 meta nftrace set 1 # handle 2 (verdict continue)",
        'trace id 1 ip podnet nat-prerouting packet: iif "cni0"',
        "trace id 1 ip podnet nat-prerouting rule jump services # handle 20 (verdict jump services)",
        "trace id 1 ip podnet services rule jump b # handle 21 (verdict jump b)",
    ])
    (pkt,) = parse_monitor(text, st, "nft", (after, ""))
    ix = RuleIndex.of(st)
    # the kernel's rules are the snapshot's rules 10 and 11, known by what they are, not by handle or place
    assert pkt == ((1, -100, "ip podnet", (ix.nft("ip podnet", "nat-prerouting", 10),
                                           ix.nft("ip podnet", "services", 11))),)
    assert [ix.show(r) for r in pkt[0][3]] == ["ip podnet nat-prerouting #1", "ip podnet services #2"]


def test_rules_nft_monitor_could_not_name_are_known_by_handle():
    """A proxy sync after the monitor read its cache: nft prints "unknown rule handle N" for every rule of
    the table. The event still carries the handle, and the ruleset read after the probes holds it."""
    before = {"nftables": [
        {"chain": {"family": "ip", "table": "podnet", "name": "nat-output", "hook": "output", "prio": -100}},
        _nft_rule("nat-output", 10, "services"), _nft_rule("services", 11, "a")]}
    after = {"nftables": [_nft_rule("nat-output", 453, "services"), _nft_rule("services", 460, "a")]}
    st = NsState("n", "ns", nft=before)
    text = "\n".join([
        'trace id 7 ip pn-trace-ab out packet: oif "lo" ip saddr 192.168.77.11',
        "trace id 7 ip pn-trace-ab out rule ip saddr 192.168.77.11 meta nftrace set 1 # handle 4 (verdict continue)",
        'trace id 7 ip podnet nat-output packet: oif "lo" ip saddr 192.168.77.11',
        "trace id 7 ip podnet nat-output unknown rule handle 453 (verdict jump services)",
        "trace id 7 ip podnet services unknown rule handle 460 (verdict goto a)",
    ])
    (pkt,) = parse_monitor(text, st, "nft", (after, ""))
    ix = RuleIndex.of(st)
    assert pkt == ((0, -100, "ip podnet", (ix.nft("ip podnet", "nat-output", 10), ix.nft("ip podnet", "services", 11))),)


def test_interleaved_xtables_monitor_lines_go_to_their_own_packet():
    """Two packets handled at once (two CPUs): their lines interleave, each line names its trace id."""
    st = NsState("n", "ns", nft={"nftables": [
        {"chain": {"family": "ip", "table": "nat", "name": "OUTPUT", "hook": "output", "prio": -100}},
        {"chain": {"family": "ip", "table": "raw", "name": "OUTPUT", "hook": "output", "prio": -300}},
        {"rule": {"family": "ip", "table": "nat", "chain": "OUTPUT", "handle": 22, "expr": []}},
        {"rule": {"family": "ip", "table": "nat", "chain": "KUBE-SERVICES", "handle": 40, "expr": []}},
        {"rule": {"family": "ip", "table": "nat", "chain": "KUBE-SERVICES", "handle": 41, "expr": []}}]})

    def pkt(tid: str) -> list[str]:
        return [f"PACKET: 2 {tid} OUT=lo SRC=192.168.77.13 DST=192.168.77.13 SPORT=1 DPORT=30762 ",
                f" TRACE: 2 {tid} raw:OUTPUT:rule:0x4:CONTINUE  -4 -t raw -A OUTPUT --comment pn-trace-1 -j TRACE",
                f" TRACE: 2 {tid} raw:OUTPUT:policy:ACCEPT ",
                f"PACKET: 2 {tid} OUT=lo SRC=192.168.77.13 DST=192.168.77.13 SPORT=1 DPORT=30762 ",
                f" TRACE: 2 {tid} nat:OUTPUT:rule:0x16:JUMP:KUBE-SERVICES  -4 -t nat -A OUTPUT -j KUBE-SERVICES",
                f" TRACE: 2 {tid} nat:KUBE-SERVICES:rule:0x29:JUMP:KUBE-NODEPORTS  -4 -t nat -A KUBE-SERVICES"]

    a, b = pkt("e89d53c0"), pkt("ac9c8b11")
    text = "\n".join(a[:5] + b + a[5:])  # b's lines arrive between a's jump to KUBE-SERVICES and its next rule
    whole = (((0, -100, "ip nat", (("ip nat", "OUTPUT", "-A OUTPUT -j KUBE-SERVICES"),
                                   ("ip nat", "KUBE-SERVICES", "-A KUBE-SERVICES"))),),)
    assert parse_monitor(text, st, "ipt") == list(whole * 2)


def _one_node_walk(conntrack_text: str):
    from podnet.trace.snapshot import Cluster
    from podnet.trace.walk import Walk

    st = NsState("node1", "pn-x.node1", conntrack=parse_conntrack(conntrack_text))
    return Walk(Cluster("x", "nftables", "vxlan", {"node1": st}, {"node1": "192.168.77.11"}, [], {}, [], []))


def test_a_syn_on_a_closed_entry_is_decided_by_the_rules_again():
    from podnet.trace.model import Branch

    entry = ("tcp      6 9 {} src=10.244.1.3 dst=10.96.0.10 sport=40000 dport=80 src=10.244.2.7 dst=10.244.1.3 "
             "sport=8080 dport=40000 [ASSURED] mark=0 use=1")
    pkt = Packet("10.244.1.3", "10.96.0.10", "tcp", 40000, 80)
    for state, decides in (("CLOSE", False), ("TIME_WAIT", False), ("ESTABLISHED", True), ("SYN_SENT", True)):
        w = _one_node_walk(entry.format(state))
        out = w.ct_lookup("node1", Branch(1.0, pkt))
        assert (out.pkt.dst == "10.244.2.7" and out.pkt.nat_done) == decides, state
        assert (w.conntrack is not None) == decides, state


def test_conntrack_state_does_not_cross_to_the_next_node():
    p = Packet("10.244.1.3", "10.244.2.7", "udp", 5353, 53, ct="established", nat_done=True, ct_dnat=True,
               masquerade=True, ct_snat="10.244.1.0:5353", mark=0x4000, endpoint="10.244.2.7:53")
    q = p.at_next_node()
    assert (q.ct, q.nat_done, q.ct_dnat, q.masquerade, q.ct_snat, q.mark) == ("new", False, False, False, "", 0)
    assert (q.src, q.dst, q.sport, q.dport, q.endpoint) == (p.src, p.dst, p.sport, p.dport, p.endpoint)


def test_an_entrys_source_nat_is_applied_on_the_way_out():
    from podnet.trace.model import Branch

    w = _one_node_walk("udp      17 29 src=192.168.77.12 dst=10.244.2.7 sport=20926 dport=8080 [UNREPLIED] "
                       "src=10.244.2.7 dst=192.168.77.12 sport=8080 dport=15955 mark=0 use=1")
    out = w.ct_lookup("node1", Branch(1.0, Packet("192.168.77.12", "10.244.2.7", "udp", 20926, 8080)))
    assert out.pkt.ct_snat == "192.168.77.12:15955" and out.pkt.ct == "new" and not out.pkt.ct_dnat
