"""Cross-node cases on the host-gw and udp backends, in both proxy modes, with 3 nodes: the encapsulation hop
is predicted and the kernel agrees."""

from __future__ import annotations

import pytest

from .test_trace import delivered_to, run

pytestmark = pytest.mark.integration

CROSS = [
    ("clusterip other node", ("--from", "node2", "--to", "svc/web"), {"pod default/a1": 0.5, "pod default/b1": 0.5}),
    ("nodeport from other node", ("--from", "node2", "--to", "192.168.77.11:30111"),
     {"pod default/a1": 0.5, "pod default/b1": 0.5}),
    ("etp local with local endpoint", ("--from", "node1", "--to", "192.168.77.12:30112"), {"pod default/loc": 1.0}),
    ("pod to pod across nodes", ("--from", "client", "--to", "b1:80"), {"pod default/b1": 1.0}),
]


@pytest.mark.parametrize("name,args,where", CROSS, ids=[c[0] for c in CROSS])
def test_cross_node_agrees(backend_lab, name, args, where):
    doc = run(backend_lab, *args)
    assert {k: round(v, 6) for k, v in delivered_to(doc).items()} == where
    # node-to-node hops go over the underlay as they are; hops to the other node's pods use the backend
    overlay = [h["detail"] for o in doc["outcomes"] for h in o["hops"]
               if h["step"] == "encap" and not h["detail"].startswith("on the underlay")]
    want = {"host-gw": "host-gw next hop", "udp": "udp backend flannel0"}[backend_lab.backend]
    assert all(want in e for e in overlay), overlay
    if name in ("clusterip other node", "pod to pod across nodes"):
        assert overlay, doc["hops"]


def test_generated_scenarios_agree_on_3_nodes(backend_lab):
    """The generated scenarios' slice on a lab of another node count and the other backends."""
    import os

    from .generator import run_world

    n = int(os.environ.get("PODNET_TRACE_SCENARIOS_3", "5"))
    seed = {"host-gw": 1303, "udp": 1305}[backend_lab.backend] + (backend_lab.mode == "nftables")
    results = run_world(backend_lab.name, backend_lab.store, backend_lab.node_ips(), seed, n)
    bad = [(" ".join(r.flow.args), r.flow.what, r.disagreements) for r in results if not r.agree]
    # a str message: pytest prints it whole (a list's repr is cut at ~240 characters, the disagreement with it)
    assert len(results) == n and not bad, f"{len(results)} of {n} scenarios ran\n" + "\n".join(f"{a} ({w}): {'; '.join(d)}" for a, w, d in bad)
