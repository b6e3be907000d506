"""The one layout the page and the snapshot draw: every object gets its shape, shapes stay inside their
containers and apart from each other, and a trace's hops land on the devices they happen at."""

from __future__ import annotations

import json
import string
import xml.etree.ElementTree as ET

from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.ui import layout, model, svg

from .ui_fixtures import endpoint, facts, node, pod, service, slice_, three_node_objects


def groups(shapes: list[dict], kind: str) -> dict[str, dict]:
    out: dict[str, dict] = {}
    for s in shapes:
        if s["t"] == "g":
            if s["kind"] == kind:
                assert s["id"] not in out, f"two {kind} shapes for {s['id']}"
                out[s["id"]] = s
            out.update(groups(s["items"], kind))
    return out


def box(g: dict) -> tuple[float, float, float, float]:
    r = next(i for i in g["items"] if i["t"] == "rect")
    return r["x"], r["y"], r["x"] + r["w"], r["y"] + r["h"]


def inside(inner: tuple, outer: tuple) -> bool:
    return outer[0] <= inner[0] and outer[1] <= inner[1] and inner[2] <= outer[2] and inner[3] <= outer[3]


def apart(a: tuple, b: tuple) -> bool:
    return a[2] <= b[0] or b[2] <= a[0] or a[3] <= b[1] or b[3] <= a[1]


def test_every_node_pod_and_service_has_its_shape() -> None:
    view = model.build(facts(), three_node_objects())
    sc = layout.scene(view)
    assert set(groups(sc["shapes"], "node")) == {"node1", "node2", "node3"}
    assert set(groups(sc["shapes"], "pod")) == {"default/web-a", "default/web-b", "default/web-c", "default/client",
                                                "default/waiting"}
    assert set(groups(sc["shapes"], "svc")) == {"default/web", "default/web-np", "default/outside"}
    # an arrow per endpoint that a pod holds: web and web-np have three each; outside's endpoint has no pod
    assert len(groups(sc["shapes"], "edge")) == 6
    json.dumps(sc)  # what the page receives


def test_devices_show_what_the_node_has() -> None:
    sc = layout.scene(model.build(facts(), three_node_objects()))
    dev = groups(sc["shapes"], "device")
    texts = {k: " ".join(i["s"] for i in g["items"] if i["t"] == "text") for k, g in dev.items()}
    assert texts["node1/bridge"].startswith("cni0 10.244.1.1/24")
    assert texts["node2/overlay"].startswith("flannel.1 10.244.2.0/32")
    assert texts["node3/eth0"] == "eth0 192.168.77.13"
    assert "prerouting" in texts["node1/kernel"] and "postrouting" in texts["node1/kernel"]


def test_the_layout_is_deterministic() -> None:
    a = layout.scene(model.build(facts(), three_node_objects()))
    b = layout.scene(model.build(facts(), three_node_objects()))
    assert a == b


# ---- property: any cluster's shapes are inside the canvas, pods in their node, boxes apart ---------------

NAMES = st.text(string.ascii_lowercase + string.digits + "-", min_size=1, max_size=40)


@st.composite
def clusters(draw: st.DrawFn) -> tuple[model.LabFacts, dict]:
    n_nodes = draw(st.integers(1, 9))
    f = facts(draw(st.sampled_from(["vxlan", "udp", "host-gw"])), n_nodes)
    nodes = [node(f"node{i}", f"192.168.77.{10 + i}") for i in range(1, n_nodes + 1)]
    pods, ips = [], []
    for i in range(draw(st.integers(0, 14))):
        where = draw(st.integers(0, n_nodes))  # 0: unscheduled
        ip = f"10.244.{where}.{i + 2}" if where else None
        pods.append(pod(f"{draw(NAMES)}-{i}", f"node{where}" if where else None, ip,
                        ready=draw(st.booleans()), terminating=draw(st.booleans())))
        if ip:
            ips.append((ip, f"node{where}"))
    services, slices = [], []
    for j in range(draw(st.integers(0, 7))):
        name = f"s{j}-{draw(NAMES)}"[:50].rstrip("-")
        services.append(service(name, f"10.96.1.{j + 1}", [{"port": 80 + j, "protocol": "TCP"}],
                                type_=draw(st.sampled_from(["ClusterIP", "NodePort"]))))
        chosen = draw(st.lists(st.sampled_from(ips), unique=True, max_size=6)) if ips else []
        slices.append(slice_(name, [endpoint(ip, n, ready=draw(st.booleans())) for ip, n in chosen],
                             [{"name": "", "port": 8080, "protocol": "TCP"}]))
    return f, {"Node": nodes, "Pod": pods, "Service": services, "EndpointSlice": slices}


@settings(max_examples=60, deadline=None)
@given(clusters())
def test_shapes_stay_in_place(cluster: tuple[model.LabFacts, dict]) -> None:
    f, objects = cluster
    view = model.build(f, objects)
    sc = layout.scene(view)
    canvas = (0, 0, sc["width"], sc["height"])
    nodes = {k: box(g) for k, g in groups(sc["shapes"], "node").items()}
    svcs = {k: box(g) for k, g in groups(sc["shapes"], "svc").items()}
    pods = {k: box(g) for k, g in groups(sc["shapes"], "pod").items()}
    assert set(nodes) == {n.name for n in view.nodes}
    assert set(pods) == {p.ref for p in view.pods()}
    assert set(svcs) == {s.ref for s in view.services}
    for b in [*nodes.values(), *svcs.values(), *pods.values()]:
        assert inside(b, canvas)
    for n in view.nodes:
        for p in n.pods:
            assert inside(pods[p.ref], nodes[n.name]), (p.ref, n.name)
    boxes = list(nodes.items()) + list(svcs.items())
    for i, (a, ba) in enumerate(boxes):
        for b, bb in boxes[i + 1:]:
            assert apart(ba, bb), (a, b)
    root = ET.fromstring(svg.render(sc).split("\n", 1)[1])
    ns = {"s": svg.SVG_NS}
    assert {g.get("data-id") for g in root.iterfind(".//s:g[@data-kind='pod']", ns)} == set(pods)


# ---- a trace on the picture -------------------------------------------------------------------------------


def hop(who: str, step: str, hook: str | None = None) -> dict:
    return {"node": who, "step": step, "hook": hook, "detail": "", "chain": None}


CROSS_NODE = [hop("default/client", "source"), hop("default/client", "route"), hop("node1", "veth"),
              hop("node1", "netfilter", "prerouting"), hop("node1", "netfilter", "prerouting"), hop("node1", "route"),
              hop("node1", "netfilter", "forward"), hop("node1", "netfilter", "postrouting"), hop("node1", "encap"),
              hop("node2", "netfilter", "prerouting"), hop("node2", "route"), hop("node2", "veth"),
              hop("default/web-b", "deliver")]


def test_a_cross_node_path_goes_through_the_devices_and_the_underlay() -> None:
    sc = layout.scene(model.build(facts(), three_node_objects()))
    pts = layout.trace_points(sc, CROSS_NODE)
    assert [p["at"] for p in pts] == [
        "pod:default/client", "node1:cni0", "node1:prerouting", "node1:route", "node1:forward", "node1:postrouting",
        "node1:overlay", "node1:eth0", "underlay:node1", "underlay:node2", "node2:eth0", "node2:prerouting",
        "node2:route", "node2:cni0", "pod:default/web-b"]
    # every hop is drawn exactly once, in order
    assert [i for p in pts for i in p["hops"]] == list(range(len(CROSS_NODE)))
    for p in pts:
        assert [p["x"], p["y"]] == sc["anchors"][p["at"]]


def test_the_overlay_numbers_hops_and_captions_the_outcome() -> None:
    sc = layout.scene(model.build(facts(), three_node_objects()))
    trace = {"flow": {"proto": "tcp", "src": "10.244.1.3", "dst": "10.96.0.10", "dport": 80},
             "outcomes": [{"verdict": "delivered", "probability": 0.5, "where": "pod default/web-b", "reason": "",
                           "endpoint": "10.244.2.2:80", "hops": CROSS_NODE}], "verify": {"agree": True}}
    ov = layout.trace_overlay(sc, trace)
    labels = [i["s"] for i in ov["items"] if i["t"] == "text"]
    assert labels[:3] == ["1-2", "3", "4-5"] and labels[-3] == "13"
    assert labels[-2] == "✓ trace tcp 10.244.1.3 -> 10.96.0.10:80: delivered"
    assert labels[-1] == "pod default/web-b (50% of new connections); the kernel agrees"
    assert ov["items"][0]["d"].count("L") == len(layout.trace_points(sc, CROSS_NODE)) - 1
    ET.fromstring(svg.render(sc, ov).split("\n", 1)[1])


def test_a_drop_ends_where_the_packet_was() -> None:
    sc = layout.scene(model.build(facts(), three_node_objects()))
    hops = [hop("node1", "source"), hop("node1", "netfilter", "output"), hop("node1", "drop")]
    pts = layout.trace_points(sc, hops)
    assert [p["at"] for p in pts] == ["node1:host", "node1:output"] and pts[-1]["hops"] == [1, 2]
    ov = layout.trace_overlay(sc, {"flow": {}, "outcomes": [{"verdict": "rejected", "probability": 1, "where": "",
                                                              "reason": "no endpoints", "hops": hops}]})
    assert "trace-bad" in ov["items"][0]["cls"]
    assert layout.trace_overlay(sc, {"outcomes": []})["items"] == []
