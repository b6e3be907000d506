"""Read the kernel state a trace needs, from each namespace on the path, and the lab's objects from its store.

One `NsState` per namespace: nft ruleset (JSON), iptables-save (the tables iptables-nft owns), policy rules,
routes of every table, addresses, links with their details (vxlan, tun, bridge ports), neighbours, FDB,
conntrack, xt_recent lists and the sysctls that decide forwarding. Commands run through net/netns.py
(`netns.run`, built on `exec_argv`). Everything after this module is pure.
"""

from __future__ import annotations

import json
import re
import subprocess
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from podnet.net import netns

_KV = re.compile(r"(\w+)=(\S+)")


@dataclass
class CtEntry:
    proto: str
    state: str
    orig: dict[str, str]
    reply: dict[str, str]
    flags: list[str]
    line: str

    @property
    def unreplied(self) -> bool:
        return "[UNREPLIED]" in self.flags


def parse_conntrack(text: str) -> list[CtEntry]:
    """`conntrack -L` text: proto, timeout, [state], original tuple, reply tuple, flags."""
    out = []
    for line in text.splitlines():
        words = line.split()
        if len(words) < 4 or words[0] not in ("tcp", "udp", "icmp", "sctp"):
            continue
        kv = [(m.group(1), m.group(2)) for m in _KV.finditer(line)]
        orig: dict[str, str] = {}
        reply: dict[str, str] = {}
        cur = orig
        for k, v in kv:
            if k == "src" and "src" in orig:
                cur = reply
            if k in cur and cur is reply:
                continue
            cur[k] = v
        state = words[3] if not words[3].startswith("src=") else ""
        out.append(CtEntry(words[0], state, orig, reply, re.findall(r"\[\w+\]", line), line.strip()))
    return out


@dataclass
class NsState:
    name: str  # node name or pod "ns/name"
    netns: str
    nft: dict = field(default_factory=dict)
    iptables: str = ""
    rules: list[dict] = field(default_factory=list)
    routes: list[dict] = field(default_factory=list)
    addrs: list[dict] = field(default_factory=list)
    links: list[dict] = field(default_factory=list)
    neigh: list[dict] = field(default_factory=list)
    fdb: list[dict] = field(default_factory=list)
    conntrack: list[CtEntry] = field(default_factory=list)
    recent: dict[str, set[str]] = field(default_factory=dict)
    sysctl: dict[str, str] = field(default_factory=dict)

    def local_prefixes(self) -> list[str]:
        out = []
        for r in self.routes:
            if r.get("type") == "local" and r.get("table") == "local":
                dst = r["dst"]
                out.append(dst if "/" in dst else f"{dst}/32")
        return out

    def link(self, name: str) -> dict:
        return next((x for x in self.links if x.get("ifname") == name), {})

    def ipv4(self, dev: str) -> str:
        for a in self.addrs:
            if a.get("ifname") == dev:
                for i in a.get("addr_info", []):
                    if i.get("family") == "inet":
                        return str(i["local"])
        return ""

    def has_addr(self, ip: str) -> bool:
        return any(i.get("local") == ip for a in self.addrs for i in a.get("addr_info", []))


def _run(ns: str, argv: list[str]) -> str:
    try:
        r = netns.run(ns, argv, check=False, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return r.stdout if r.returncode == 0 else ""


def _parse_list(text: str) -> list:
    try:
        v = json.loads(text) if text.strip() else []
    except ValueError:
        return []
    return v if isinstance(v, list) else [v]


def read_ns(name: str, ns: str, *, full: bool = True) -> NsState:
    """Everything a walk reads in one namespace (pods: routes and addresses are enough, full=False)."""
    st = NsState(name, ns)
    cmds = {"routes": ["ip", "-j", "route", "show", "table", "all"], "rules": ["ip", "-j", "rule", "show"],
            "addrs": ["ip", "-j", "addr", "show"]}
    if full:
        cmds |= {"links": ["ip", "-j", "-d", "link", "show"], "neigh": ["ip", "-j", "neigh", "show"],
                 "fdb": ["bridge", "-j", "fdb", "show"], "nft": ["nft", "-j", "list", "ruleset"],
                 "iptables": ["iptables-save"], "conntrack": ["conntrack", "-L"],
                 "recent": ["sh", "-c", "cd /proc/net/xt_recent 2>/dev/null && grep -H . * 2>/dev/null"]}
    with ThreadPoolExecutor(len(cmds)) as pool:
        outs = dict(zip(cmds, pool.map(lambda argv: _run(ns, argv), cmds.values()), strict=True))
    for k in ("routes", "rules", "addrs", "links", "neigh", "fdb"):
        if k in outs:
            setattr(st, k, _parse_list(outs[k]))
    if not full:
        return st
    text = outs["nft"]
    try:
        st.nft = json.loads(text) if text.strip() else {}
    except ValueError:
        st.nft = {}
    st.iptables = outs["iptables"]
    st.conntrack = parse_conntrack(outs["conntrack"])
    lists = outs["recent"]
    for line in lists.splitlines():
        lname, _, rest = line.partition(":")
        m = re.search(r"src=(\S+)", rest)
        if m:
            st.recent.setdefault(lname, set()).add(m.group(1))
    keys = ["net/ipv4/ip_forward", "net/ipv4/conf/all/rp_filter", "net/bridge/bridge-nf-call-iptables"]
    keys += [f"net/ipv4/conf/{x['ifname']}/rp_filter" for x in st.links if x.get("ifname")]
    out = _run(ns, ["sh", "-c", "for k in \"$@\"; do printf '%s=' $k; cat /proc/sys/$k 2>/dev/null || echo; done",
                    "sh", *keys])
    for line in out.splitlines():
        k, _, v = line.partition("=")
        st.sysctl[k] = v.strip()
    return st


@dataclass
class PodInfo:
    namespace: str
    name: str
    node: str
    ip: str
    netns: str

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"


@dataclass
class LeaseInfo:
    subnet: str
    public_ip: str
    backend: str
    data: dict


@dataclass
class Cluster:
    """Everything a walk may look at: per-node kernel state, pods, services, leases."""

    lab: str
    proxy_mode: str
    backend: str
    nodes: dict[str, NsState]  # node name -> state
    node_ips: dict[str, str]  # node name -> underlay (InternalIP)
    pods: list[PodInfo]
    pod_states: dict[str, NsState]  # "ns/name" -> routes + addresses
    leases: list[LeaseInfo]
    services: list[dict]
    udp_port: int = 8285

    def pod_by_ip(self, ip: str) -> PodInfo | None:
        return next((p for p in self.pods if p.ip == ip), None)

    def node_by_ip(self, ip: str) -> str | None:
        return next((n for n, a in self.node_ips.items() if a == ip), None)


def read_store(store_url: str) -> tuple[list[dict], list[dict], list[LeaseInfo], dict]:
    """(pods, services, leases, net-conf) of the lab's store."""
    from podnet.overlay.lease import decode_lease_kv
    from podnet.store import keys, open_store

    store = open_store(store_url)
    try:
        pods = [json.loads(kv.value) for kv in store.list(keys.kind_prefix("Pod")).items]
        svcs = [json.loads(kv.value) for kv in store.list(keys.kind_prefix("Service")).items]
        leases = []
        for kv in store.list(keys.SUBNETS_PREFIX).items:
            try:
                le = decode_lease_kv(kv.key, kv.value)
            except ValueError:
                continue
            data = le.backend_data if isinstance(le.backend_data, dict) else {}
            leases.append(LeaseInfo(str(le.subnet), str(le.public_ip), le.backend_type or "", data))
        conf = store.get(keys.NETWORK_CONFIG)
        netconf = json.loads(conf.value) if conf else {}
    finally:
        store.close()
    return pods, svcs, leases, netconf


def read_cluster(lab: str, *, nodes: list[str] | None = None) -> Cluster:
    """Live state of a lab: every node (or those named) and every running pod's routes."""
    from podnet.lab.state import LabState

    st = LabState.load(lab)
    if st is None:
        from podnet.trace.errors import TraceError

        raise TraceError(f"--lab: {lab!r}: no such lab is up (podnet lab up --name {lab})")
    pods_raw, svcs, leases, netconf = read_store(st.store_url)
    pods = []
    for p in pods_raw:
        ip = (p.get("status") or {}).get("podIP")
        node = (p.get("spec") or {}).get("nodeName")
        if not ip or not node:
            continue
        ns = p["metadata"].get("namespace") or "default"
        pods.append(PodInfo(ns, p["metadata"]["name"], node, ip, st.spec.pod_netns(ns, p["metadata"]["name"])))
    want = set(nodes) if nodes else {n.name for n in st.spec.node_specs}
    with ThreadPoolExecutor(8) as pool:
        node_f = {n.name: pool.submit(read_ns, n.name, n.netns) for n in st.spec.node_specs if n.name in want}
        pod_f = {p.ref: pool.submit(read_ns, p.ref, p.netns, full=False) for p in pods if netns.exists(p.netns)}
        states = {k: f.result() for k, f in node_f.items()}
        pod_states = {k: f.result() for k, f in pod_f.items()}
    port = int(((netconf.get("Backend") or {}).get("Port")) or 0)
    backend = st.spec.backend
    return Cluster(lab, st.spec.proxy_mode, backend, states, {n.name: n.underlay_ip for n in st.spec.node_specs},
                   pods, pod_states, leases, svcs, udp_port=port or 8285)
