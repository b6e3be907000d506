"""A packet's whole path across the lab, from the snapshot: pod routing, veth, bridge, each node's netfilter
hook by hook, the routing decision, the overlay's encapsulation, the next node, the destination.

Pure: `walk(cluster, source, packet)` reads only the `Cluster` snapshot (snapshot.py) and returns a `Result`
with every outcome and its probability. Netfilter base chains of a hook run in priority order across all
tables (iptables-nft's, read from iptables-save, and native nftables ones, read from the JSON ruleset).
A conntrack entry for the flow decides before the rules: nat chains are skipped and its binding is used.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass

from podnet.trace.chains import ChainWalker
from podnet.trace.ipt import IptablesRules, IptablesWalker, IptContext
from podnet.trace.model import Branch, Hop, Outcome, Packet, Result
from podnet.trace.nft import XTABLES, NftContext, NftRuleset, NftWalker
from podnet.trace.snapshot import Cluster, CtEntry, LeaseInfo, NsState, PodInfo

HOOKS_IN = ("prerouting",)
TCP_REOPEN = ("TIME_WAIT", "CLOSE")  # entries a new SYN replaces instead of following
MAX_NODES = 8  # a path visiting more nodes than this is a routing loop


@dataclass
class Source:
    kind: str  # pod | node
    name: str  # "ns/name" or node name


@dataclass
class _Node:
    """One node's rules, ready to walk."""

    st: NsState
    walkers: dict[str, ChainWalker]
    base: list[tuple[str, int, str, str, str, str]]  # (hook, prio, kind, table, chain, type)
    unknown: set[str]
    ties: set[str]


def _prepare(st: NsState) -> _Node:
    local = st.local_prefixes()
    rs = NftRuleset.parse(st.nft)
    ipt = IptablesRules.parse(st.iptables)
    nw = NftWalker(rs, NftContext(local))
    iw = IptablesWalker(ipt, IptContext(local, st.recent))
    base: list[tuple[str, int, str, str, str, str]] = []
    for bc in rs.base:
        if bc.family != "ip":
            continue
        if bc.table in XTABLES:
            base.append((bc.hook, bc.prio, "ipt", bc.table, bc.chain, bc.type))
        else:
            base.append((bc.hook, bc.prio, "nft", f"{bc.family} {bc.table}", bc.chain, bc.type))
    # Equal priorities run in the order the kernel registered them (newest first), which no dump shows:
    # iptables-nft's chains are taken first (what the lab's kernels do: flannel's come after the proxy's).
    base.sort(key=lambda x: (x[0], x[1], 0 if x[2] == "ipt" else 1))
    ties = set()
    for a, b in zip(base, base[1:], strict=False):
        if a[0] == b[0] and a[1] == b[1] and a[3] != b[3]:
            ties.add(f"{a[0]} priority {a[1]}: {a[3]} {a[4]} and {b[3]} {b[4]} (assumed in that order)")
    return _Node(st, {"nft": nw, "ipt": iw}, base, set(), ties)


# ---- routing ------------------------------------------------------------------------------------------
def _net(dst: str) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    return ipaddress.ip_network("0.0.0.0/0" if dst == "default" else dst, strict=False)


def route(st: NsState, dst: str, src: str = "", iif: str = "", mark: int = 0) -> dict | None:
    """The kernel's choice: policy rules in priority order, longest prefix in each table looked up."""
    addr = ipaddress.ip_address(dst)
    for rule in sorted(st.rules, key=lambda r: r.get("priority", 0)):
        if rule.get("src", "all") != "all":
            if not src or ipaddress.ip_address(src) not in _net(f"{rule['src']}/{rule.get('srclen', 32)}"):
                continue
        if rule.get("iif") and rule["iif"] != iif:
            continue
        if "fwmark" in rule:
            v, _, m = str(rule["fwmark"]).partition("/")
            if mark & int(m or "0xffffffff", 0) != int(v, 0):
                continue
        if rule.get("action", "") in ("unreachable", "prohibit", "blackhole"):
            return {"type": rule["action"], "dst": "rule"}
        table = str(rule.get("table", "main"))
        cands = [r for r in st.routes if str(r.get("table", "main")) == table and r.get("type") != "broadcast"
                 and addr in _net(r["dst"])]
        if cands:
            return max(cands, key=lambda r: (_net(r["dst"]).prefixlen, -int(r.get("metric", 0))))
    return None


def _route_text(r: dict) -> str:
    parts = [r.get("type", "unicast") if r.get("type") not in (None, "unicast") else "", r["dst"]]
    if r.get("gateway"):
        parts.append(f"via {r['gateway']}")
    if r.get("dev"):
        parts.append(f"dev {r['dev']}")
    if r.get("table") and r["table"] != "main":
        parts.append(f"table {r['table']}")
    if "onlink" in r.get("flags", []):
        parts.append("onlink")
    return " ".join(p for p in parts if p)


# ---- the walk -----------------------------------------------------------------------------------------
class Walk:
    def __init__(self, cluster: Cluster) -> None:
        self.c = cluster
        self.nodes = {n: _prepare(st) for n, st in cluster.nodes.items()}
        self.outcomes: list[Outcome] = []
        self.conntrack: dict[str, object] | None = None
        self.warnings: list[str] = []
        self.entries: set[tuple[str, str, str, str, int, int]] = set()
        self.svc_keys = _service_keys(cluster.services)
        self.flow: Packet | None = None

    def enter(self, node: str, pkt: Packet) -> None:
        f = self.flow
        sport = pkt.sport if f is not None and pkt.src == f.src and pkt.sport == f.sport else 0
        self.entries.add((node, pkt.src, pkt.dst, pkt.proto, pkt.dport, sport))

    def hop(self, node: str, step: str, detail: str, **kw: object) -> Hop:
        ns = self.c.nodes[node].netns if node in self.c.nodes else self.c.pod_states.get(node, None)
        nsname = ns if isinstance(ns, str) else (ns.netns if ns else "")
        return Hop(node, nsname, step, detail, **kw)  # type: ignore[arg-type]

    def end(self, br: Branch, verdict: str, where: str, reason: str = "") -> None:
        self.outcomes.append(Outcome(verdict, br.p, br.pkt.endpoint, where, reason or br.reason, br.hops))

    # -- hooks --
    def hook(self, node: str, hook: str, br: Branch) -> list[Branch]:
        """Every base chain of `hook`, in priority order; survivors (accepted/fell through) come back."""
        n = self.nodes[node]
        live = [br]
        for h, prio, kind, table, chain, ctype in n.base:
            if h != hook:
                continue
            nxt: list[Branch] = []
            for b in live:
                if ctype == "nat" and b.pkt.nat_done:
                    nxt.append(b)
                    continue
                w = n.walkers[kind]
                tname = table if kind == "nft" else table

                def tag(hp: Hop, node: str = node, hook: str = hook, prio: int = prio) -> Hop:
                    detail = hp.detail
                    for key, name in self.svc_keys.items():
                        if f"[{key}]" in detail:
                            detail += f" = Service port {name}"
                            break
                    return Hop(node, self.c.nodes[node].netns, hp.step, f"[{hook} {prio}] {detail}",
                               hp.table, hp.chain, hp.rule, hook, hp.verdict, prio)

                for sub in w.run(tname, chain, b.pkt, tag):
                    sub = Branch(b.p * sub.p, sub.pkt, b.hops + sub.hops, sub.verdict, sub.reason)
                    if sub.verdict in ("drop", "reject"):
                        last = sub.hops[-1] if sub.hops else None
                        why = _why(last, sub.verdict)
                        self.end(sub, "rejected" if sub.verdict == "reject" else "dropped",
                                 f"{node} {hook} {table} {chain}", why)
                    else:
                        sub.verdict = None
                        nxt.append(sub)
            live = nxt
            for w in n.walkers.values():
                n.unknown |= getattr(w, "unknown", set())
        return live

    # -- conntrack --
    def ct_lookup(self, node: str, br: Branch) -> Branch:
        p = br.pkt
        if p.nat_done:
            return br
        for e in self.c.nodes[node].conntrack:
            o = e.orig
            if e.proto != p.proto or o.get("src") != p.src or o.get("dst") != p.dst:
                continue
            if p.proto != "icmp" and (o.get("dport") != str(p.dport) or (p.sport and o.get("sport") != str(p.sport))):
                continue
            if p.proto != "icmp" and not p.sport:
                continue
            if p.proto == "tcp" and e.state in TCP_REOPEN:
                # A SYN on a closed connection's tuple: the kernel drops the old entry and starts a new one,
                # so the rules decide again (nf_conntrack_proto_tcp: "Attempt to reopen a closed/aborted
                # connection").
                continue
            return self._use_ct(node, br, e)
        return br

    def _use_ct(self, node: str, br: Branch, e: CtEntry) -> Branch:
        p = br.pkt
        new_dst, new_dport = e.reply.get("src", p.dst), int(e.reply.get("sport", p.dport) or 0)
        dnat = new_dst != p.dst or new_dport != p.dport
        live_eps = {pod.ip for pod in self.c.pods}
        stale = dnat and new_dst not in live_eps and self.c.node_by_ip(new_dst) is None
        state = "new" if e.unreplied else "established"
        detail = (f"conntrack entry decides, not the rules: {e.line}" + (
            f"; STALE: it DNATs to {new_dst}:{new_dport}, which is no endpoint or pod any more" if stale else ""))
        self.conntrack = {"decides": True, "node": node, "entry": e.line, "stale": stale,
                          "endpoint": f"{new_dst}:{new_dport}" if dnat else ""}
        snat = ""
        if p.proto != "icmp" and (e.reply.get("dst", p.src) != p.src or e.reply.get("dport") != str(p.sport)):
            snat = f"{e.reply.get('dst', p.src)}:{e.reply.get('dport', p.sport)}"
        pkt = p.with_(dst=new_dst, dport=new_dport, ct=state, nat_done=True, ct_dnat=dnat, ct_snat=snat,
                      endpoint=f"{new_dst}:{new_dport}" if dnat else p.endpoint)
        return Branch(br.p, pkt, br.hops + [self.hop(node, "conntrack", detail, verdict="stale" if stale else "hit")])

    # -- a node receiving a packet --
    def node_in(self, node: str, br: Branch, iif: str, visits: int) -> None:
        if visits > MAX_NODES:
            self.end(br, "dropped", node, "routing loop: the path visits more than 8 nodes")
            return
        st = self.c.nodes[node]
        self.enter(node, br.pkt)
        br = Branch(br.p, br.pkt.with_(iif=iif, oif=""), br.hops, None, br.reason)
        rpf = max(int(st.sysctl.get("net/ipv4/conf/all/rp_filter") or 0),
                  int(st.sysctl.get(f"net/ipv4/conf/{iif}/rp_filter") or 0))
        if rpf:
            back = route(st, br.pkt.src)
            ok = back is not None and (rpf == 2 or back.get("dev") == iif or back.get("type") == "local")
            if not ok:
                hop = self.hop(node, "drop", f"reverse-path filter (rp_filter={rpf}): {br.pkt.src} is not routed "
                                             f"back via {iif}")
                self.end(Branch(br.p, br.pkt, br.hops + [hop]), "dropped", f"{node} rp_filter", "reverse-path filter")
                return
        br = self.ct_lookup(node, br)
        for b in self.hook(node, "prerouting", br):
            self.after_prerouting(node, b, visits)

    def after_prerouting(self, node: str, br: Branch, visits: int) -> None:
        st = self.c.nodes[node]
        r = route(st, br.pkt.dst, br.pkt.src, br.pkt.iif, br.pkt.mark)
        if r is None:
            self.end(Branch(br.p, br.pkt, br.hops + [self.hop(node, "route", f"no route to {br.pkt.dst}")]),
                     "dropped", node, "no route")
            return
        hop = self.hop(node, "route", f"{br.pkt.dst}: {_route_text(r)}")
        br = Branch(br.p, br.pkt, br.hops + [hop])
        if r.get("type") == "local":
            for b in self.hook(node, "input", br):
                self.end(Branch(b.p, b.pkt, b.hops + [self.hop(node, "deliver", f"to a socket of {node} "
                                                                               f"({b.pkt.dst}:{b.pkt.dport})")]),
                         "delivered", f"node {node}")
            return
        if r.get("type") in ("blackhole", "unreachable", "prohibit"):
            self.end(br, "dropped" if r["type"] == "blackhole" else "rejected", node, f"route type {r['type']}")
            return
        if st.sysctl.get("net/ipv4/ip_forward") == "0":
            self.end(br, "dropped", node, "ip_forward is off")
            return
        br = Branch(br.p, br.pkt.with_(oif=r.get("dev", "")), br.hops)
        for b in self.hook(node, "forward", br):
            self.postrouting(node, b, r, visits)

    def local_out(self, node: str, br: Branch, visits: int) -> None:
        st = self.c.nodes[node]
        self.enter(node, br.pkt)
        r = route(st, br.pkt.dst)
        br = self.ct_lookup(node, br)
        pkt = br.pkt.with_(oif=(r or {}).get("dev", ""), iif="", src=br.pkt.src or (r or {}).get("prefsrc", ""))
        br = Branch(br.p, pkt, br.hops)
        for b in self.hook(node, "output", br):
            r2 = route(st, b.pkt.dst, b.pkt.src, "", b.pkt.mark)
            if r2 is None:
                self.end(b, "dropped", node, f"no route to {b.pkt.dst}")
                continue
            b = Branch(b.p, b.pkt, b.hops + [self.hop(node, "route", f"{b.pkt.dst}: {_route_text(r2)}")])
            if r2.get("type") == "local":
                self.loopback(node, b)
                continue
            self.postrouting(node, b, r2, visits)

    def loopback(self, node: str, br: Branch) -> None:
        """A node's packet to one of its own addresses: POSTROUTING, out of lo and back in through PREROUTING,
        then INPUT. Its conntrack entry took both NAT bindings at OUTPUT and POSTROUTING, so the nat chains
        of PREROUTING and INPUT do not run again (the filter chains do; the mark stays on the skb)."""
        for b in self.hook(node, "postrouting", Branch(br.p, br.pkt.with_(oif="lo"), br.hops)):
            hop = self.hop(node, "route", f"{b.pkt.dst}: out of lo and back in (PREROUTING, then INPUT)")
            pkt = b.pkt.with_(iif="lo", oif="", nat_done=True, masquerade=False)
            for b2 in self.hook(node, "prerouting", Branch(b.p, pkt, b.hops + [hop])):
                for b3 in self.hook(node, "input", b2):
                    final = self.hop(node, "deliver", f"to a socket of {node} ({b3.pkt.dst}:{b3.pkt.dport})")
                    self.end(Branch(b3.p, b3.pkt, b3.hops + [final]), "delivered", f"node {node}")

    def postrouting(self, node: str, br: Branch, r: dict, visits: int) -> None:
        st = self.c.nodes[node]
        br = Branch(br.p, br.pkt.with_(oif=r.get("dev", "")), br.hops)
        for b in self.hook(node, "postrouting", br):
            pkt = b.pkt
            if pkt.masquerade:
                src = r.get("prefsrc") or st.ipv4(r.get("dev", ""))
                # a random source port is any port from here on (the next node's lookups cannot use it)
                sport = 0 if pkt.masq_random else pkt.sport
                hop = self.hop(node, "netfilter", f"masquerade: source {pkt.src}:{pkt.sport or '*'} -> {src}:"
                                                  f"{sport or '*'} (address of {r.get('dev')})", hook="postrouting")
                b = Branch(b.p, pkt.with_(src=src, sport=sport, masquerade=False, masq_random=False), b.hops + [hop])
            elif pkt.ct_snat:
                ip, _, port = pkt.ct_snat.rpartition(":")
                hop = self.hop(node, "conntrack", f"the entry's source NAT: {pkt.src}:{pkt.sport} -> {ip}:{port}",
                               hook="postrouting")
                b = Branch(b.p, pkt.with_(src=ip, sport=int(port), ct_snat=""), b.hops + [hop])
            self.egress(node, b, r, visits)

    # -- leaving a node --
    def egress(self, node: str, br: Branch, r: dict, visits: int) -> None:
        st = self.c.nodes[node]
        dev = r.get("dev", "")
        kind = (st.link(dev).get("linkinfo") or {}).get("info_kind", "")
        pkt = br.pkt
        if kind == "bridge":
            pod = self.c.pod_by_ip(pkt.dst)
            if pod is None or pod.node != node:
                self.end(Branch(br.p, pkt, br.hops + [self.hop(node, "bridge", f"{dev}: no pod has {pkt.dst} here")]),
                         "dropped", f"{node} {dev}", f"no pod with address {pkt.dst} on {node}")
                return
            self.deliver(pod, br, f"bridge {dev} -> veth -> pod {pod.ref} eth0", node)
            return
        if kind == "vxlan":
            info = st.link(dev)["linkinfo"]["info_data"]
            gw = r.get("gateway", pkt.dst)
            mac = next((n.get("lladdr") for n in st.neigh if n.get("dst") == gw and n.get("dev", dev) == dev), None)
            outer = next((f.get("dst") for f in st.fdb if f.get("mac") == mac and f.get("ifname", dev) == dev
                          and f.get("dst")), None) if mac else None
            if not mac or not outer:
                self.end(Branch(br.p, pkt, br.hops + [self.hop(node, "encap", f"{dev}: no neighbour/FDB entry for {gw}")]),
                         "dropped", f"{node} {dev}", "vxlan: missing neighbour or FDB entry")
                return
            lease = self.lease_for(pkt.dst)
            detail = (f"vxlan {dev} VNI {info.get('id')}: inner {pkt.src} -> {pkt.dst}; neighbour {gw} is {mac}, "
                      f"FDB {mac} -> {outer}; outer UDP {info.get('local') or st.ipv4('eth0')} -> {outer}:"
                      f"{info.get('port', 8472)}" + (f" (lease {lease.subnet} of {lease.public_ip}, VtepMAC "
                                                     f"{lease.data.get('VtepMAC', '?')})" if lease else ""))
            self.cross(node, br, outer, detail, dev, visits)
            return
        if kind == "tun":
            lease = self.lease_for(pkt.dst)
            if lease is None:
                self.end(br, "dropped", f"{node} {dev}", f"udp backend: no lease covers {pkt.dst}")
                return
            detail = (f"udp backend {dev} (tun): lease {lease.subnet} of {lease.public_ip}; outer UDP "
                      f"{st.ipv4('eth0')} -> {lease.public_ip}:{self.c.udp_port}")
            self.cross(node, br, lease.public_ip, detail, dev, visits)
            return
        nh = r.get("gateway") or pkt.dst
        target = self.c.node_by_ip(nh)
        if target is not None:
            how = "host-gw next hop" if r.get("gateway") else "on the underlay"
            lease = self.lease_for(pkt.dst) if r.get("gateway") else None
            self.cross(node, br, nh, f"{how}: {pkt.src} -> {pkt.dst} via {nh} dev {dev} ({target})"
                       + (f" (lease {lease.subnet} of {lease.public_ip})" if lease else ""), "eth0", visits)
            return
        self.end(Branch(br.p, pkt, br.hops + [self.hop(node, "route", f"leaves the lab via {nh} dev {dev}")]),
                 "dropped", f"{node} {dev}", f"{pkt.dst} is outside the lab (next hop {nh})")

    def lease_for(self, ip: str) -> LeaseInfo | None:
        return next((le for le in self.c.leases if ipaddress.ip_address(ip) in ipaddress.ip_network(le.subnet)), None)

    def cross(self, node: str, br: Branch, outer: str, detail: str, dev: str, visits: int) -> None:
        target = self.c.node_by_ip(outer)
        br = Branch(br.p, br.pkt, br.hops + [self.hop(node, "encap", detail)])
        if target is None or target not in self.c.nodes:
            self.end(br, "dropped", f"{node} {dev}", f"{outer} is no node of the lab")
            return
        iif = dev if dev in ("flannel.1", "flannel0") or dev.startswith("flannel") else "eth0"
        tst = self.c.nodes[target]
        if not tst.link(iif):
            iif = "eth0"
        self.node_in(target, Branch(br.p, br.pkt.at_next_node(), br.hops), iif, visits + 1)

    def deliver(self, pod: PodInfo, br: Branch, detail: str, node: str) -> None:
        pst = self.c.pod_states.get(pod.ref)
        hop = self.hop(node, "veth", detail)
        if pst is not None and not pst.has_addr(br.pkt.dst):
            self.end(Branch(br.p, br.pkt, br.hops + [hop]), "dropped", f"pod {pod.ref}",
                     f"{pod.ref} has no address {br.pkt.dst}")
            return
        final = Hop(pod.ref, pod.netns, "deliver", f"pod {pod.ref} receives {br.pkt.src}:{br.pkt.sport or '*'} -> "
                                                     f"{br.pkt.dst}:{br.pkt.dport}")
        self.end(Branch(br.p, br.pkt, br.hops + [hop, final]), "delivered", f"pod {pod.ref}")

    # -- from a pod --
    def pod_out(self, ref: str, pkt: Packet) -> None:
        pod = next(p for p in self.c.pods if p.ref == ref)
        pst = self.c.pod_states[ref]
        r = route(pst, pkt.dst)
        br = Branch(1.0, pkt, [Hop(ref, pod.netns, "source", f"pod {ref} ({pod.ip}) on {pod.node} sends "
                                                            f"{pkt.proto} {pkt.src}:{pkt.sport or '*'} -> "
                                                            f"{pkt.dst}:{pkt.dport}")])
        if r is None:
            self.end(br, "dropped", f"pod {ref}", f"no route to {pkt.dst} in the pod")
            return
        br.hops.append(Hop(ref, pod.netns, "route", f"{pkt.dst}: {_route_text(r)}"))
        if r.get("type") == "local":
            self.end(br, "delivered", f"pod {ref}")
            return
        node = pod.node
        st = self.c.nodes[node]
        bridge = next((x for x in st.links if (x.get("linkinfo") or {}).get("info_kind") == "bridge"), {})
        bname = bridge.get("ifname", "cni0")
        same = self.c.pod_by_ip(pkt.dst)
        if not r.get("gateway") and same is not None and same.node == node:
            hop = self.hop(node, "bridge", f"veth -> bridge {bname} forwards at layer 2 to {same.ref}")
            br = Branch(br.p, br.pkt, br.hops + [hop])
            if st.sysctl.get("net/bridge/bridge-nf-call-iptables") == "1":
                br = Branch(br.p, br.pkt.with_(iif=bname, oif=bname), br.hops)
                self.enter(node, br.pkt)
                br = self.ct_lookup(node, br)
                for b in self.hook(node, "prerouting", br):
                    for b2 in self.hook(node, "forward", b):
                        for b3 in self.hook(node, "postrouting", b2):
                            self.deliver(same, b3, f"bridge {bname} -> veth -> pod {same.ref} eth0", node)
                return
            self.deliver(same, br, f"bridge {bname} -> veth -> pod {same.ref} eth0", node)
            return
        hop = self.hop(node, "veth", f"pod eth0 -> veth -> bridge {bname} on {node}: routed by {node} "
                                     f"(next hop {r.get('gateway', pkt.dst)})")
        self.node_in(node, Branch(br.p, br.pkt, br.hops + [hop]), bname, 0)


def _service_keys(services: list[dict]) -> dict[str, str]:
    """The map keys podnet's and kube-proxy's nftables rules use, back to the Service port they came from."""
    out = {}
    for s in services:
        spec = s.get("spec") or {}
        name = f"{s['metadata'].get('namespace') or 'default'}/{s['metadata']['name']}"
        ips = [spec.get("clusterIP"), *(spec.get("externalIPs") or []),
               *(i.get("ip") for i in ((s.get("status") or {}).get("loadBalancer") or {}).get("ingress") or [])]
        for p in spec.get("ports") or []:
            proto = str(p.get("protocol") or "TCP").lower()
            pname = f"{name}:{p.get('name') or p['port']}"
            for ip in ips:
                if ip and ip != "None":
                    out[f"{ip} . {proto} . {p['port']}"] = pname
            if p.get("nodePort"):
                out[f"{proto} . {p['nodePort']}"] = f"{pname} (nodePort {p['nodePort']})"
    return out


def _why(last: Hop | None, verdict: str) -> str:
    text = (last.detail if last else "").lower()
    chain = (last.chain or "").lower() if last else ""
    if verdict == "drop" and "no-endpoint" in text:
        return "externalTrafficPolicy Local: no endpoint on this node"
    if "no endpoints" in text or "no-endpoint" in text or "reject-chain" in text or "kube-svc" not in text and (
            "has no endpoints" in text):
        return "the Service has no endpoints"
    if "firewall" in chain or "firewall" in text or "source ranges" in text:
        return "source address not in loadBalancerSourceRanges"
    if "external-local" in text or "nodeport-local" in text or "no local endpoints" in text or "kube-ext" in chain:
        return "externalTrafficPolicy Local: no endpoint on this node"
    if "cluster-ips-check" in chain or "invalid ports" in text:
        return "ClusterIP on a port the Service does not have"
    return f"{verdict} by {last.table} {last.chain} rule {last.rule}" if last else verdict


def walk(cluster: Cluster, source: Source, pkt: Packet) -> Result:
    if source.kind == "node" and not pkt.src:
        st = cluster.nodes[source.name]
        r = route(st, pkt.dst) or {}
        pkt = pkt.with_(src=r.get("prefsrc") or st.ipv4(r.get("dev", "")) or cluster.node_ips[source.name])
    w = Walk(cluster)
    w.flow = pkt
    if source.kind == "pod":
        w.pod_out(source.name, pkt)
    else:
        br = Branch(1.0, pkt, [Hop(source.name, cluster.nodes[source.name].netns, "source",
                                   f"node {source.name} sends {pkt.proto} {pkt.src}:{pkt.sport or '*'} -> "
                                   f"{pkt.dst}:{pkt.dport}")])
        w.local_out(source.name, br, 0)
    merged: dict[tuple, Outcome] = {}
    for o in w.outcomes:
        key = (o.verdict, o.endpoint, o.where, o.reason)
        if key in merged:
            merged[key].probability += o.probability
        else:
            merged[key] = Outcome(o.verdict, o.probability, o.endpoint, o.where, o.reason, o.hops)
    outs = sorted(merged.values(), key=lambda o: -o.probability)
    for n in w.nodes.values():
        for u in sorted(n.unknown):
            w.warnings.append(f"{n.st.name}: not modelled, treated as no match: {u}")
    return Result(pkt, outs, w.conntrack, w.warnings, sorted(w.entries))
