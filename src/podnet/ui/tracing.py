"""A trace for the page: `podnet trace` in-process (the same calls as cli/trace.py), and what the form offers.

Blocking (it reads every node's kernel state, and --verify sends probes): the server runs it in a thread,
one at a time.
"""

from __future__ import annotations

from typing import Any

from podnet.ui.model import LabView

PROTOS = ("tcp", "udp", "icmp")


def run(lab: str, src: str, dst: str, proto: str = "tcp", sport: int | None = None,
        verify: bool = False) -> dict[str, Any]:
    """What `podnet trace --lab LAB --from SRC --to DST -o json [--verify]` prints, as a dict."""
    from podnet.trace import resolve, snapshot, walk

    cluster = snapshot.read_cluster(lab)
    source, pkt = resolve.flow(cluster, src, dst, proto, sport)
    result = walk.walk(cluster, source, pkt)
    doc = result.to_json()
    if verify:
        from podnet.trace import verify as verify_mod

        doc["verify"] = verify_mod.verify(cluster, source, pkt, result).to_json()
    return doc


def _pod_word(ref: str) -> str:
    ns, _, name = ref.partition("/")
    return name if ns == "default" else ref


def choices(view: LabView) -> dict[str, list[str]]:
    """Words `podnet trace` accepts, for the form's suggestions: sources (pods, nodes) and destinations
    (each Service port, each endpoint pod on its port, each NodePort on every node)."""
    sources = [_pod_word(p.ref) for n in view.nodes for p in n.pods if p.ip] + [n.name for n in view.nodes]
    dests: list[str] = []
    for s in view.services:
        svc = f"svc/{s.name}" if s.namespace == "default" else f"svc/{s.ref}"
        if s.cluster_ip and s.cluster_ip != "None":
            for p in s.ports:
                dests.append(svc if len(s.ports) == 1 else f"{svc}:{p.port}")
        for p in s.ports:
            for e in p.endpoints:
                if e.pod:
                    dests.append(f"{_pod_word(e.pod)}:{e.address.rpartition(':')[2]}")
            if p.node_port:
                dests += [f"{n.internal_ip}:{p.node_port}" for n in view.nodes if n.internal_ip]
    return {"from": list(dict.fromkeys(sources)), "to": list(dict.fromkeys(dests))}
