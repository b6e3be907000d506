"""Seeded random worlds for `podnet trace --verify`: Services, pods spread over nodes, and flows through them.

One *world* is what one seed gives for a lab of N nodes: pods (0-3 per selector group, on random nodes,
containerPorts named so a named targetPort resolves to a different number per pod), and Services with
random port counts and protocols, ClusterIP / NodePort / LoadBalancer, sessionAffinity ClientIP,
externalTrafficPolicy and internalTrafficPolicy Local, loadBalancerSourceRanges that admit or refuse the
flow's source, externalIPs, selectors that match no pod. A *scenario* is one flow over a world: a random
source (pod or node) and a random destination (ClusterIP port, a port the Service lacks, NodePort on a
random node, LoadBalancer/external IP, the Service a pod is itself an endpoint of, a pod, a node).

Everything here is a pure function of the seed and the node list, except `apply_world` / `wait_world` /
`run_flow`, which drive a live lab (the test slice in test_generated.py and benchmarks/trace.py share them).
"""

from __future__ import annotations

import json
import random
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import yaml

LB_BASE = 210  # 192.168.77.210+: LoadBalancer ingress and externalIPs (the scenario uses .200)


@dataclass
class GPort:
    name: str
    proto: str  # TCP | UDP
    port: int
    target: int | str  # number, or the name of a containerPort
    node_port: int = 0


@dataclass
class GService:
    name: str
    type: str  # ClusterIP | NodePort | LoadBalancer
    selector: dict[str, str]
    ports: list[GPort]
    affinity: bool = False
    etp_local: bool = False
    itp_local: bool = False
    lb_ip: str = ""
    external_ip: str = ""
    source_ranges: list[str] = field(default_factory=list)


@dataclass
class GPod:
    name: str
    node: str
    labels: dict[str, str]
    ports: dict[str, tuple[int, str]]  # containerPort name -> (number, protocol)


@dataclass
class World:
    seed: int
    namespace: str
    nodes: list[str]
    node_ips: dict[str, str]
    pods: list[GPod]
    services: list[GService]

    def endpoints(self, svc: GService, port: GPort) -> list[tuple[str, int]]:
        """(pod, port) of every endpoint, as the EndpointSlice controller resolves them."""
        out = []
        for p in self.pods:
            if not svc.selector or any(p.labels.get(k) != v for k, v in svc.selector.items()):
                continue
            if isinstance(port.target, int):
                out.append((p.name, port.target))
            elif port.target in p.ports and p.ports[port.target][1] == port.proto:  # name and protocol
                out.append((p.name, p.ports[port.target][0]))
        return out

    def docs(self) -> list[dict]:
        out: list[dict] = [{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": self.namespace}}]
        for p in self.pods:
            cports = [{"name": n, "containerPort": v, "protocol": proto} for n, (v, proto) in sorted(p.ports.items())]
            out.append({"apiVersion": "v1", "kind": "Pod",
                        "metadata": {"name": p.name, "namespace": self.namespace, "labels": p.labels},
                        "spec": {"nodeName": p.node, "containers": [{"name": "web", "ports": cports}]}})
        for s in self.services:
            spec: dict = {"type": s.type, "selector": s.selector, "ports": []}
            for gp in s.ports:
                d: dict = {"name": gp.name, "protocol": gp.proto, "port": gp.port, "targetPort": gp.target}
                if gp.node_port:
                    d["nodePort"] = gp.node_port
                spec["ports"].append(d)
            if s.affinity:
                spec["sessionAffinity"] = "ClientIP"
            if s.etp_local:
                spec["externalTrafficPolicy"] = "Local"
            if s.itp_local:
                spec["internalTrafficPolicy"] = "Local"
            if s.external_ip:
                spec["externalIPs"] = [s.external_ip]
            if s.source_ranges:
                spec["loadBalancerSourceRanges"] = s.source_ranges
            doc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": s.name, "namespace": self.namespace},
                   "spec": spec}
            if s.lb_ip:
                doc["status"] = {"loadBalancer": {"ingress": [{"ip": s.lb_ip}]}}
            out.append(doc)
        return out

    def yaml(self) -> str:
        return yaml.safe_dump_all(self.docs(), sort_keys=False)


def make_world(seed: int, node_ips: dict[str, str], *, index: int = 0) -> World:
    """A random world for a lab whose nodes have these underlay addresses. `index` keeps the NodePorts and
    LoadBalancer addresses of worlds applied to the same lab one after the other apart."""
    rng = random.Random(seed)
    nodes = sorted(node_ips)
    ns = f"g{seed}"
    groups = [f"g{i}" for i in range(rng.randint(2, 4))]
    names = {"http": "TCP", "alt": "TCP", "dns": "UDP"}  # containerPort names and their protocols
    pods = []
    for i in range(rng.randint(3, 7)):
        grp = rng.choice(groups[:-1])  # the last group never gets a pod: selecting it gives no endpoints
        # distinct numbers per pod (the pod program listens on each), the same name a different number per pod
        numbers = rng.sample([8080, 8081, 8082, 9000 + i, 9100 + i], 3)
        ports = {n: (numbers[k], proto) for k, (n, proto) in enumerate(names.items()) if rng.random() < 0.7}
        ports = ports or {"http": (numbers[0], "TCP")}
        labels = {"grp": grp} | ({"tier": "front"} if rng.random() < 0.4 else {})
        pods.append(GPod(f"p{i}", rng.choice(nodes), labels, ports))
    services = []
    node_port = 30200 + 40 * (index % 60)
    lb = LB_BASE + 10 * (index % 4)
    used_ports: set[tuple[str, int]] = set()
    for i in range(rng.randint(4, 7)):
        kind = rng.choices(["ClusterIP", "NodePort", "LoadBalancer"], [5, 3, 2])[0]
        sel = rng.choice([{"grp": g} for g in groups] + [{"tier": "front"}])
        gports: list[GPort] = []
        for j in range(rng.choices([1, 2, 3], [6, 3, 1])[0]):
            proto = rng.choices(["TCP", "UDP"], [4, 1])[0]
            port = rng.choice([80, 443, 53, 8080, rng.randint(1000, 9999)])
            if (proto, port) in {(g.proto, g.port) for g in gports}:
                continue
            target: int | str = rng.choice([port, rng.choice(list(names)), 8080])
            gp = GPort(f"p{j}-{proto.lower()}", proto, port, target)
            if kind != "ClusterIP":
                gp.node_port = node_port
                node_port += 1
            gports.append(gp)
            used_ports.add((proto, port))
        s = GService(f"s{i}", kind, sel, gports, affinity=rng.random() < 0.25)
        if kind != "ClusterIP":
            s.etp_local = rng.random() < 0.4
        s.itp_local = rng.random() < 0.1
        if kind == "LoadBalancer":
            s.lb_ip = f"192.168.77.{lb}"
            lb += 1
            if rng.random() < 0.6:
                s.source_ranges = rng.choice([
                    ["192.168.77.0/24"],  # the nodes, not the pods
                    [f"{node_ips[rng.choice(nodes)]}/32"],  # one node
                    ["10.244.0.0/16"],  # the pods, not the nodes
                    ["203.0.113.0/24"],  # nobody in the lab
                ])
        elif kind == "ClusterIP" and rng.random() < 0.15:
            s.external_ip = f"192.168.77.{lb}"
            lb += 1
        services.append(s)
    return World(seed, ns, nodes, dict(node_ips), pods, services)


@dataclass
class Flow:
    args: tuple[str, ...]  # podnet trace arguments (without --lab)
    what: str  # the kind of scenario, for the report

    @property
    def opts(self) -> dict[str, str]:
        return dict(zip(self.args[::2], self.args[1::2], strict=True))


def make_flows(w: World, seed: int, n: int) -> list[Flow]:
    """n seeded random flows over world w: sources and destinations of every kind."""
    rng = random.Random(seed * 7919 + 1)
    ns = w.namespace
    out: list[Flow] = []

    def pick_source() -> tuple[str, str]:
        if rng.random() < 0.6 and w.pods:
            p = rng.choice(w.pods)
            return f"{ns}/{p.name}", f"pod on {p.node}"
        node = rng.choice(w.nodes)
        return node, "node"

    def svc_port() -> tuple[GService, GPort] | None:
        s = rng.choice(w.services)
        return (s, rng.choice(s.ports)) if s.ports else None

    def clusterip(src: str, sw: str) -> Flow | None:
        sp = svc_port()
        if sp is None:
            return None
        s, gp = sp
        tag = _tags(w, s, gp)
        return _flow(src, f"svc/{ns}/{s.name}:{gp.port}", gp.proto, f"ClusterIP {tag} from {sw}", rng)

    def wrong_port(src: str, sw: str) -> Flow | None:
        s = rng.choice(w.services)
        taken = {gp.port for gp in s.ports}
        port = next(p for p in (7, 9, 4242, 65000) if p not in taken)
        proto = rng.choice(["TCP", "UDP"])
        return _flow(src, f"svc/{ns}/{s.name}:{port}", proto, f"ClusterIP on a port it lacks from {sw}", rng)

    def nodeport(src: str, sw: str) -> Flow | None:
        cands = [(s, gp) for s in w.services for gp in s.ports if gp.node_port]
        if not cands:
            return None
        s, gp = rng.choice(cands)
        node = rng.choice(w.nodes)
        return _flow(src, f"{w.node_ips[node]}:{gp.node_port}", gp.proto,
                     f"NodePort {_tags(w, s, gp)} at {node} from {sw}", rng)

    def external(src: str, sw: str) -> Flow | None:
        cands = [(s, gp) for s in w.services for gp in s.ports if s.lb_ip or s.external_ip]
        if not cands:
            return None
        s, gp = rng.choice(cands)
        ip = s.lb_ip or s.external_ip
        kind = "LoadBalancer IP" if s.lb_ip else "externalIP"
        return _flow(src, f"{ip}:{gp.port}", gp.proto, f"{kind} {_tags(w, s, gp)} from {sw}", rng)

    def hairpin(src: str, sw: str) -> Flow | None:
        cands = [(s, gp, pod) for s in w.services for gp in s.ports for pod, _ in w.endpoints(s, gp)]
        if not cands:
            return None
        s, gp, pod = rng.choice(cands)
        return _flow(f"{ns}/{pod}", f"svc/{ns}/{s.name}:{gp.port}", gp.proto,
                     f"hairpin: endpoint {pod} to its own Service {_tags(w, s, gp)}", rng)

    def pod_direct(src: str, sw: str) -> Flow | None:
        dst = rng.choice(w.pods)
        if src == f"{ns}/{dst.name}":
            return None
        if rng.random() < 0.2:
            return Flow(("--from", src, "--to", f"{ns}/{dst.name}", "--proto", "icmp"),
                        f"ping pod on {dst.node} from {sw}")
        port, proto = rng.choice(list(dst.ports.values()))
        return _flow(src, f"{ns}/{dst.name}:{port}", proto,
                     f"pod on {dst.node} from {sw}", rng)

    def node_direct(src: str, sw: str) -> Flow | None:
        node = rng.choice(w.nodes)
        if src == node:
            return None
        if rng.random() < 0.5:
            return Flow(("--from", src, "--to", w.node_ips[node], "--proto", "icmp"), f"ping node from {sw}")
        return _flow(src, f"{w.node_ips[node]}:{rng.choice([22, 10250])}", "TCP", f"node port from {sw}", rng)

    kinds: list[tuple[Callable[[str, str], Flow | None], int]] = [
        (clusterip, 30), (nodeport, 20), (external, 12), (hairpin, 10), (pod_direct, 14), (wrong_port, 6),
        (node_direct, 4)]
    while len(out) < n:
        src, sw = pick_source()
        make = rng.choices([k for k, _ in kinds], [wt for _, wt in kinds])[0]
        f = make(src, sw)
        if f is not None:
            out.append(f)
    return out


def _tags(w: World, s: GService, gp: GPort) -> str:
    eps = w.endpoints(s, gp)
    tags = [s.type, gp.proto, f"{len(eps)} ep on {len({p.node for p in w.pods if p.name in {e[0] for e in eps}})} "
                              f"node(s)"]
    tags += [t for t, on in (("affinity", s.affinity), ("eTP=Local", s.etp_local), ("iTP=Local", s.itp_local),
                             ("sourceRanges", bool(s.source_ranges))) if on]
    return f"({', '.join(tags)})"


def _flow(src: str, dst: str, proto: str, what: str, rng: random.Random) -> Flow:
    args: tuple[str, ...] = ("--from", src, "--to", dst, "--proto", proto.lower())
    if rng.random() < 0.3:
        args += ("--sport", str(rng.randint(20000, 60000)))
    return Flow(args, what)


# ---- driving a live lab --------------------------------------------------------------------------------
def podnet(store: str, *args: str, input: str | None = None) -> str:
    import sys

    exe = str(Path(sys.executable).with_name("podnet"))
    r = subprocess.run([exe, "--store", store, *args], capture_output=True, text=True, input=input, timeout=120)
    if r.returncode != 0:
        raise AssertionError(f"podnet {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
    return r.stdout


def apply_world(lab: str, store: str, w: World) -> None:
    podnet(store, "apply", "-f", "-", input=w.yaml())
    wait_world(lab, store, w)


def delete_world(store: str, w: World) -> None:
    podnet(store, "delete", "--ignore-not-found", "-f", "-", input=w.yaml())


def wait_world(lab: str, store: str, w: World, timeout: float = 120) -> None:
    """Until every pod of the world is Ready and every node's rules hold each ClusterIP port's endpoints
    (counted by the world's own model, read back through the product's walk)."""
    from podnet.trace import resolve, snapshot, walk

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        pods = json.loads(podnet(store, "get", "pods", "-n", w.namespace, "-o", "json"))["items"]
        ready = [p for p in pods if any(c.get("type") == "Ready" and c.get("status") == "True"
                                        for c in (p.get("status") or {}).get("conditions") or [])]
        if len(ready) < len(w.pods):
            last = f"{len(ready)}/{len(w.pods)} pods ready"
            time.sleep(0.3)
            continue
        c = snapshot.read_cluster(lab)
        missing = []
        for s in w.services:
            for gp in s.ports:
                if s.itp_local:
                    continue
                want = len(w.endpoints(s, gp))
                ip, port = resolve.destination(c, f"svc/{w.namespace}/{s.name}:{gp.port}", gp.proto.lower())
                for node in w.nodes:
                    r = walk.walk(c, walk.Source("node", node), resolve.Packet("", ip, gp.proto.lower(), 0, port))
                    got = len({o.endpoint for o in r.outcomes if o.verdict == "delivered"})
                    if got != want or not want and r.verdict != "rejected":
                        missing.append(f"{node} {s.name}:{gp.port} {got}/{want}")
        if not missing:
            return
        last = ", ".join(missing[:5])
        time.sleep(0.3)
    raise AssertionError(f"lab {lab}: world {w.namespace} not ready within {timeout} s: {last}")


@dataclass
class FlowResult:
    flow: Flow
    agree: bool
    verdict: str
    disagreements: list[str]
    predict_s: float  # reading the state and walking it (what `podnet trace` without --verify costs)
    verify_s: float  # the --verify on top of it (probes, kernel trace, comparison)
    attempts: int = 1  # rounds --verify needed (more than one: the kernel trace of a round was incomplete)


def run_flow(lab: str, f: Flow) -> FlowResult:
    """One scenario in this process, as `podnet trace --verify` runs it: predict from live state, then
    verify against the kernel (predicting again only if a round's kernel trace was incomplete)."""
    from podnet.trace import resolve, snapshot, verify, walk

    o = f.opts
    predict_times: list[float] = []

    def predict():  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        c = snapshot.read_cluster(lab)
        src, pkt = resolve.flow(c, o["--from"], o["--to"], o["--proto"],
                                int(o["--sport"]) if "--sport" in o else None)
        r = walk.walk(c, src, pkt)
        predict_times.append(time.perf_counter() - t0)
        return c, src, pkt, r

    t0 = time.perf_counter()
    r, rep = verify.predict_and_verify(predict)
    total = time.perf_counter() - t0
    return FlowResult(f, rep.agree, r.verdict, rep.disagreements, predict_times[0],
                      (total - sum(predict_times)) / rep.attempts, rep.attempts)


def run_world(lab: str, store: str, node_ips: dict[str, str], seed: int, flows: int, *, index: int = 0
              ) -> list[FlowResult]:
    """Apply one seeded world, run its flows, delete it again: the results of every scenario."""
    w = make_world(seed, node_ips, index=index)
    apply_world(lab, store, w)
    try:
        return [run_flow(lab, f) for f in make_flows(w, seed, flows)]
    finally:
        delete_world(store, w)
