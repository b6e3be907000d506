"""The lab's LoadBalancer speaker, one per node (`podnet lab speaker`, a supervisor role run in the node's
namespace): MetalLB's layer 2 mode. The node elected for an address answers ARP for it on the underlay,
so clients there send its packets to that node, where the proxy's rules (KUBE-SERVICES / the nftables
service-ips map) DNAT them to an endpoint.

Why ARP from a speaker and not the address as a /32 on the node's interface: that is what MetalLB does,
and it keeps the address off the node. An address on an interface is a local address: the node would
accept any port on it (its own sshd, the proxy's health port), `addrtype LOCAL` rules would match it, and
a port the Service does not expose would be answered by the node's kernel instead of going nowhere, as
it does with MetalLB. Proxy ARP (a proxy neighbour entry) needs a route for the address through another
interface than the one the request came in on (arp_process's rt->dst.dev != dev), which an address inside
the underlay's own subnet does not have.

The election is MetalLB's, computed by every speaker on its own from the same objects, so no two agree
on different winners (layer2_controller.go ShouldAnnounce):
- nothing is announced for a Service without an endpoint that can serve (ready, or serving and not
  terminating), anywhere;
- the candidates are this lab's nodes, minus those labelled node.kubernetes.io/exclude-from-external-
  load-balancers or with a NetworkUnavailable=True condition; with externalTrafficPolicy Local only the
  candidates that have such an endpoint (a node without one would drop the traffic);
- the winner is the candidate whose sha256(node + "#" + address) sorts first.
On winning an address the speaker sends gratuitous ARP (a few times, as MetalLB does), so clients that
cached the previous winner's MAC move over at once.
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from podnet.lab.labels import LAB_LABEL
from podnet.store import Store, keys, open_store
from podnet.store.informer import Informer

log = logging.getLogger("podnet.lab.speaker")
EXCLUDE_LABEL = "node.kubernetes.io/exclude-from-external-load-balancers"
SERVICE_NAME_LABEL = "kubernetes.io/service-name"
GRATUITOUS_REPEAT = 3  # gratuitous ARPs sent on takeover, a second apart


def _can_serve(cond: Mapping[str, Any]) -> bool:
    """MetalLB's EndpointCanServe: ready (unset means ready), or serving and not terminating."""
    if cond.get("ready") is not False:
        return True
    return cond.get("serving") is True and cond.get("terminating") is not True


def serving_nodes(slices: Iterable[Mapping[str, Any]]) -> tuple[bool, set[str]]:
    """(any endpoint can serve, the nodes that have one)."""
    any_ep, nodes = False, set()
    for sl in slices:
        for ep in sl.get("endpoints") or []:
            if isinstance(ep, Mapping) and _can_serve(ep.get("conditions") or {}):
                any_ep = True
                if isinstance(ep.get("nodeName"), str):
                    nodes.add(ep["nodeName"])
    return any_ep, nodes


def eligible_nodes(nodes: Iterable[Mapping[str, Any]], lab: str) -> set[str]:
    """This lab's nodes that may announce (speakersForPool without memberlist: every node has a speaker)."""
    out = set()
    for n in nodes:
        meta = n.get("metadata") or {}
        labels = meta.get("labels") or {}
        if labels.get(LAB_LABEL) != lab or EXCLUDE_LABEL in labels:
            continue
        conds = (n.get("status") or {}).get("conditions") or []
        if any(isinstance(c, Mapping) and c.get("type") == "NetworkUnavailable" and c.get("status") == "True"
               for c in conds):
            continue
        if isinstance(meta.get("name"), str):
            out.add(meta["name"])
    return out


def winner(candidates: Iterable[str], ip: str) -> str | None:
    """MetalLB's election: the candidate whose sha256(node#ip) sorts first."""
    return min(candidates, key=lambda n: hashlib.sha256(f"{n}#{ip}".encode()).digest(), default=None)


def announcements(
    services: Iterable[Mapping[str, Any]],
    slices: Iterable[Mapping[str, Any]],
    nodes: Iterable[Mapping[str, Any]],
    lab: str,
    pool: Iterable[str],
) -> dict[str, tuple[str, str]]:
    """Every pool address of a LoadBalancer Service -> (the node that announces it, "ns/name")."""
    in_pool = set(pool)
    candidates = eligible_nodes(nodes, lab)
    by_service: dict[str, list[Mapping[str, Any]]] = {}
    for sl in slices:
        meta = sl.get("metadata") or {}
        name = (meta.get("labels") or {}).get(SERVICE_NAME_LABEL)
        if name:
            by_service.setdefault(f"{meta.get('namespace') or 'default'}/{name}", []).append(sl)
    out: dict[str, tuple[str, str]] = {}
    for svc in services:
        spec, meta = svc.get("spec") or {}, svc.get("metadata") or {}
        if spec.get("type") != "LoadBalancer":
            continue
        nsn = f"{meta.get('namespace') or 'default'}/{meta.get('name')}"
        ingress = ((svc.get("status") or {}).get("loadBalancer") or {}).get("ingress") or []
        ips = [i["ip"] for i in ingress if isinstance(i, Mapping) and i.get("ip") in in_pool]
        if not ips:
            continue
        any_ep, with_ep = serving_nodes(by_service.get(nsn, []))
        if not any_ep:
            continue
        nodes_for = candidates & with_ep if spec.get("externalTrafficPolicy") == "Local" else candidates
        # MetalLB elects by the first address of the Service, so all of its addresses move together.
        w = winner(nodes_for, ips[0])
        if w is not None:
            out.update({ip: (w, nsn) for ip in ips})
    return out


class Speaker:
    """Keeps the ARP responder's set of addresses equal to those this node wins."""

    def __init__(self, store: Store, lab: str, node: str, pool: list[str], iface: str) -> None:
        self.store = store
        self.lab, self.node, self.pool, self.iface = lab, node, pool, iface
        self.changed = threading.Event()
        self.services = self._informer("Service")
        self.slices = self._informer("EndpointSlice")
        self.nodes = self._informer("Node")
        self._lock = threading.Lock()
        self.mine: dict[str, str] = {}  # address -> "ns/name", what this node announces now
        self.responder: Any = None

    def _informer(self, kind: str) -> Informer[Any]:
        return Informer(self.store, keys.kind_prefix(kind), decode=json.loads,
                        on_change=lambda *_: self.changed.set(), name=f"speaker {kind}")

    def announced(self) -> set[str]:
        with self._lock:
            return set(self.mine)

    def reconcile(self) -> None:
        wins = announcements(self.services.snapshot().values(), self.slices.snapshot().values(),
                             self.nodes.snapshot().values(), self.lab, self.pool)
        mine = {ip: nsn for ip, (node, nsn) in wins.items() if node == self.node}
        with self._lock:
            new = sorted(set(mine) - set(self.mine))
            gone = sorted(set(self.mine) - set(mine))
            self.mine = mine
        for ip in gone:
            log.info("no longer announcing %s", ip)
        for ip in new:
            log.info("announcing %s (%s) from %s on %s", ip, mine[ip], self.node, self.iface)
        for nsn in sorted({mine[ip] for ip in new}):
            self._event(nsn)
        if new and self.responder is not None:
            threading.Thread(target=self._gratuitous, args=(new,), daemon=True).start()

    def _event(self, nsn: str) -> None:
        """MetalLB's nodeAssigned event, so `kubectl describe service` says which node answers."""
        from podnet.api.service import Service
        from podnet.controllers.events import record

        ns, _, name = nsn.partition("/")
        svc = self.services.get(keys.resource("Service", ns, name)) or {}
        obj = Service.model_validate({"metadata": {"name": name, "namespace": ns,
                                                   "uid": (svc.get("metadata") or {}).get("uid")}})
        record(self.store, obj, "nodeAssigned", f'announcing from node "{self.node}" with protocol "layer2"',
               component="metallb-speaker", host=self.node)

    def _gratuitous(self, ips: list[str]) -> None:
        for i in range(GRATUITOUS_REPEAT):
            for ip in ips:
                if ip in self.announced():
                    self.responder.gratuitous(ip)
            if i + 1 < GRATUITOUS_REPEAT:
                time.sleep(1.0)

    def run(self, stop: threading.Event) -> None:
        from podnet.net.arp import Responder

        self.responder = Responder(self.iface, self.announced).start()
        for inf in (self.services, self.slices, self.nodes):
            inf.start()
        try:
            for inf in (self.services, self.slices, self.nodes):
                while not inf.wait_synced(1.0):
                    if stop.is_set():
                        return
            self.changed.set()
            while not stop.is_set():
                if self.changed.wait(1.0):
                    self.changed.clear()
                    stop.wait(0.01)  # debounce a burst
                    self.reconcile()
        finally:
            for inf in (self.services, self.slices, self.nodes):
                inf.stop()
            self.responder.close()


def main(name: str, node: str, store_url: str) -> int:
    """`podnet lab speaker --name X --node N`, inside node N's namespace: until SIGTERM."""
    import signal

    from podnet.lab.state import LabState

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    st = LabState.load(name)
    spec_node = next((n for n in st.spec.node_specs if n.name == node), None) if st is not None else None
    if st is None or spec_node is None:
        log.error("lab %s has no node %s", name, node)
        return 1
    pool = st.spec.lb_addresses()
    if not pool:
        log.info("lab %s has no LoadBalancer pool: nothing to announce", name)
    else:
        net = ipaddress.ip_network(st.spec.load_balancer_pool)
        log.info("speaker for %s on %s: pool %s", node, spec_node.iface, net)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    store = open_store(store_url)
    try:
        Speaker(store, name, node, pool, spec_node.iface).run(stop)
    finally:
        store.close()
    return 0
