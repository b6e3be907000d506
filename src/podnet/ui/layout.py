"""A lab's view placed on a canvas: a list of shapes, and the path a trace takes across them.

Pure, and the only layout there is: the page (static/app.js) and the snapshot (svg.py) draw the shapes this
module returns, one for one. Shapes are small JSON objects:

    {"t": "g", "kind": "node" | "pod" | "svc" | "underlay" | "device" | "edge" | "trace" ...,
     "id": "node1" | "default/web-1" | ..., "title": "tooltip", "items": [<shape>, ...]}
    {"t": "rect", "x", "y", "w", "h", "cls"}        {"t": "text", "x", "y", "s", "cls", "anchor"?}
    {"t": "path", "d", "cls", "arrow"?: "c3"}       {"t": "circle", "x", "y", "r", "cls"}

Text is monospace (DejaVu Sans Mono, what Debian's Chromium and most SVG viewers have), so widths are
known here without a font: characters times the advance of the class's size.

Top to bottom: the Services (with kube-proxy's chains and shares), arrows from each endpoint to its pod,
the nodes (pods, cni0, netfilter and routing, the overlay device, eth0), and the underlay they share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from podnet.ui.model import LabView, NodeView, PodView, ServiceView

M = 20  # outer margin
PAD = 10
GAP = 40  # between node columns (trace paths and underlay lines run here)
LH = 16  # line height of label text
ADVANCE = {"title": 8.5, "label": 7.3, "small": 6.7}  # px per character at the CSS sizes (14/12/11 px)
NODES_PER_ROW = 4
NODE_MIN_W = 340
NODE_MAX_W = 460
POD_H = 36
DEV_H = 24
OVL_H = 38  # the overlay device's box: its name and address, then what the backend does
SVC_GAP = 48  # between Service boxes: their arrows run down here
SERVICES_MAX_W = 1400
PALETTE = 8  # CSS classes c0..c7 colour one Service's box and arrows

Shape = dict[str, Any]
Point = tuple[float, float]


def text_width(s: str, cls: str = "label") -> float:
    return len(s) * ADVANCE[cls]


def fit(s: str, width: float, cls: str = "label") -> str:
    """s cut to width (with an ellipsis); the full text stays in the shape's title."""
    n = int(width / ADVANCE[cls])
    return s if len(s) <= n else s[: max(n - 1, 1)] + "…"


def rect(x: float, y: float, w: float, h: float, cls: str) -> Shape:
    return {"t": "rect", "x": round(x, 1), "y": round(y, 1), "w": round(w, 1), "h": round(h, 1), "cls": cls}


def text(x: float, y: float, s: str, cls: str = "label", anchor: str = "start") -> Shape:
    out: Shape = {"t": "text", "x": round(x, 1), "y": round(y, 1), "s": s, "cls": cls}
    if anchor != "start":
        out["anchor"] = anchor
    return out


def path(d: str, cls: str, arrow: str | None = None) -> Shape:
    out: Shape = {"t": "path", "d": d, "cls": cls}
    if arrow:
        out["arrow"] = arrow
    return out


def group(kind: str, id_: str, items: list[Shape], title: str = "") -> Shape:
    return {"t": "g", "kind": kind, "id": id_, "title": title, "items": items}


@dataclass
class Box:
    x: float
    y: float
    w: float
    h: float

    @property
    def cx(self) -> float:
        return self.x + self.w / 2

    @property
    def cy(self) -> float:
        return self.y + self.h / 2


# ---------------------------------------------------------------------------------------------------------
# Services


def _share(p: float) -> str:
    pct = p * 100
    return f"{pct:.0f}%" if abs(pct - round(pct)) < 0.05 else f"{pct:.1f}%"


def service_lines(s: ServiceView) -> list[tuple[str, str, int | None]]:
    """(text, css class, endpoint index within the service or None) of one Service's box."""
    lines: list[tuple[str, str, int | None]] = []
    addr = "ClusterIP " + (s.cluster_ip or "-")
    if s.external_ips:
        addr += "  external " + ",".join(s.external_ips)
    if s.load_balancer_ips:
        addr += "  LB " + ",".join(s.load_balancer_ips)
    lines.append((addr, "label", None))
    i = 0
    for p in s.ports:
        head = f"{p.port}/{p.protocol}" + (f" ({p.name})" if p.name else "")
        if p.node_port:
            head += f"  NodePort {p.node_port}"
        lines.append((head + "  " + (p.chain or "no endpoints: REJECT"), "chain", None))
        for e in p.endpoints:
            state = "" if e.ready else ("  terminating" if e.terminating else "  not ready")
            sep = e.chain or "(no chain)"
            lines.append((f"  {sep} -> {e.address}  {_share(e.share)}{state}", "ep" if e.share else "ep-off", i))
            i += 1
    return lines


def _service_box(s: ServiceView) -> tuple[float, float]:
    lines = service_lines(s)
    title = f"{s.ref}  {s.type}"
    w = max([text_width(title, "title")] + [text_width(t) for t, _, _ in lines]) + 2 * PAD
    h = PAD + 20 + len(lines) * LH + PAD - 4
    return w, h


def _draw_service(s: ServiceView, box: Box, colour: str) -> tuple[Shape, dict[int, Point]]:
    """The Service's group and the point of each endpoint's row (where its arrow starts)."""
    items = [rect(box.x, box.y, box.w, box.h, f"svc-box {colour}"),
             text(box.x + PAD, box.y + PAD + 12, f"{s.ref}  {s.type}", "title")]
    rows: dict[int, Point] = {}
    y = box.y + PAD + 20
    for line, cls, ep in service_lines(s):
        y += LH
        items.append(text(box.x + PAD, y - 4, line, cls))
        if ep is not None:
            rows[ep] = (box.x + box.w, y - 8)
    return group("svc", s.ref, items, title=f"Service {s.ref} ({s.type}) {s.cluster_ip}"), rows


# ---------------------------------------------------------------------------------------------------------
# Nodes


def node_width(n: NodeView) -> float:
    lines = [f"{n.name}  {n.netns}", f"pod subnet {n.subnet}", _bridge_label(n), _overlay_label(n), _kernel_label(),
             f"eth0 {n.internal_ip}"]
    w = max(text_width(s) for s in lines) + 2 * PAD + 16
    w = max(w, text_width(n.overlay.detail, "small") + 2 * PAD + 16)
    w = max([w] + [text_width(p.name) + 28 + 24 + 30 for p in n.pods])
    return min(max(w, NODE_MIN_W), NODE_MAX_W)


def _bridge_label(n: NodeView) -> str:
    return f"{n.bridge} {n.bridge_address or '-'}  bridge"


def _overlay_label(n: NodeView) -> str:
    o = n.overlay
    if o.kind == "host-gw":
        return "host-gw: no overlay device"
    return f"{o.device} {o.address or '-'}"


def _kernel_label() -> str:
    return "  ".join(word for word, _ in KERNEL_STAGES)


# The kernel box, left to right in the order a forwarded packet meets them: netfilter's hooks (where
# kube-proxy's and flannel's rules are) around the routing decision. A trace's hops land on their hook.
KERNEL_STAGES = (("prerouting", 0.13), ("routing", 0.37), ("fwd/in/out", 0.62), ("postrouting", 0.87))
HOOK_AT = {"prerouting": 0.13, "route": 0.37, "forward": 0.62, "input": 0.62, "output": 0.62, "postrouting": 0.87}


def _pod_status(p: PodView) -> str:
    state = "terminating" if p.terminating else ("ready" if p.ready else p.phase.lower())
    return f"{p.ip or 'no IP'}  {state}"


def _pod_cls(p: PodView) -> str:
    return "pod-box " + ("pod-term" if p.terminating else ("pod-ready" if p.ready else "pod-wait"))


def _stack_height() -> float:
    """cni0, netfilter and routing, the overlay device (two lines), eth0."""
    return 4 * (DEV_H + 8) + (OVL_H - DEV_H)


def node_height(n: NodeView) -> float:
    return 48 + max(len(n.pods), 1) * (POD_H + 8) + 16 + _stack_height() + PAD


@dataclass
class NodeAnchors:
    host: Point
    cni0: Point
    hooks: dict[str, Point]  # netfilter hook (and "route") -> where its hops are drawn
    overlay: Point
    eth0: Point
    eth0_bottom: Point


def _draw_pod(p: PodView, box: Box) -> Shape:
    inner = box.w - 2 * 8
    return group("pod", p.ref, [
        rect(box.x, box.y, box.w, box.h, _pod_cls(p)),
        {"t": "circle", "x": round(box.x + 10, 1), "y": round(box.y + 11, 1), "r": 4,
         "cls": "dot " + ("dot-ready" if p.ready and not p.terminating else "dot-wait")},
        text(box.x + 20, box.y + 15, fit(p.name if p.namespace == "default" else p.ref, inner - 14), "label"),
        text(box.x + 20, box.y + 30, fit(_pod_status(p), inner - 14, "small"), "small"),
    ], title=f"pod {p.ref} {p.ip} on {p.node or '(no node)'}")


def _draw_node(n: NodeView, box: Box, pod_boxes: dict[str, Box]) -> tuple[Shape, NodeAnchors]:
    x, y, w = box.x, box.y, box.w
    items: list[Shape] = [rect(x, y, w, box.h, "node-box"),
                          text(x + PAD, y + 20, n.name, "title"),
                          text(x + w - PAD, y + 20, fit(n.netns, w / 2, "small"), "small", anchor="end"),
                          text(x + PAD, y + 38, f"pod subnet {n.subnet or '(no lease yet)'}", "label")]
    px, pw = x + 28, w - 28 - 24
    py = y + 48
    bus_x = x + 16
    stubs = []
    for p in n.pods:
        b = Box(px, py, pw, POD_H)
        pod_boxes[p.ref] = b
        items.append(_draw_pod(p, b))
        stubs.append(b.cy)
        py += POD_H + 8
    if not n.pods:
        items.append(text(px, py + 20, "no pods", "small"))
    # the device stack sits at the bottom, so the devices of a row of nodes line up
    dy = box.y + box.h - PAD - _stack_height() + 8
    dx, dw = x + PAD, w - 2 * PAD

    def device(kind: str, label: str, cls: str, yy: float, detail: str = "") -> Box:
        b = Box(dx, yy, dw, OVL_H if detail else DEV_H)
        shapes = [rect(b.x, b.y, b.w, b.h, f"dev {cls}"), text(b.x + 8, b.y + 16, fit(label, dw - 16), "label")]
        if detail:
            shapes.append(text(b.x + 8, b.y + 31, fit(detail, dw - 16, "small"), "small"))
        items.append(group("device", f"{n.name}/{kind}", shapes, title=f"{label} {detail}".strip()))
        return b

    cni = device("bridge", _bridge_label(n), "dev-bridge", dy)
    kern = Box(dx, dy + (DEV_H + 8), dw, DEV_H)
    items.append(group("device", f"{n.name}/kernel", [rect(kern.x, kern.y, kern.w, kern.h, "dev dev-kernel")] + [
        text(kern.x + kern.w * at, kern.y + 16, word, "small", anchor="middle") for word, at in KERNEL_STAGES],
        title="netfilter hooks (kube-proxy's and flannel's rules) around the routing decision"))
    ovl = device("overlay", _overlay_label(n), f"dev-{n.overlay.kind}", dy + 2 * (DEV_H + 8), n.overlay.detail)
    eth = device("eth0", f"eth0 {n.internal_ip}", "dev-eth", dy + 2 * (DEV_H + 8) + OVL_H + 8)
    if stubs:  # the pods' veths: one bus down to the bridge
        items.insert(1, path(f"M{bus_x:.1f},{stubs[0]:.1f} V{cni.y:.1f}", "veth"))
        for sy in stubs:
            items.insert(1, path(f"M{bus_x:.1f},{sy:.1f} H{px:.1f}", "veth"))
    for upper, lower in ((cni, kern), (kern, ovl), (ovl, eth)):
        items.insert(1, path(f"M{upper.cx:.1f},{upper.y + upper.h:.1f} V{lower.y:.1f}", "link"))
    anchors = NodeAnchors(
        host=(x + w / 2, y + 28), cni0=(cni.x + cni.w * 0.3, cni.cy),
        hooks={k: (kern.x + kern.w * at, kern.y + kern.h) for k, at in HOOK_AT.items()},
        overlay=(ovl.x + ovl.w * 0.5, ovl.cy), eth0=(eth.cx, eth.cy), eth0_bottom=(eth.cx, eth.y + eth.h))
    title = f"node {n.name} {n.internal_ip} subnet {n.subnet} ({n.overlay.kind})"
    return group("node", n.name, items, title=title), anchors


# ---------------------------------------------------------------------------------------------------------
# The scene


def scene(view: LabView) -> dict[str, Any]:
    """Every shape of the picture, the canvas size, and the anchors a trace path is drawn between."""
    shapes: list[Shape] = []
    anchors: dict[str, Point] = {}
    node_ws = [node_width(n) for n in view.nodes]
    col_w = max(node_ws, default=NODE_MIN_W)
    per_row = max(1, min(NODES_PER_ROW, len(view.nodes)))
    nodes_w = per_row * col_w + (per_row - 1) * GAP
    svc_sizes = [_service_box(s) for s in view.services]
    # the Services may widen a narrow lab's canvas to sit side by side (up to SERVICES_MAX_W)
    services_w = sum(w for w, _ in svc_sizes) + SVC_GAP * max(len(svc_sizes) - 1, 0)
    width = max(nodes_w, min(services_w, SERVICES_MAX_W), max((w for w, _ in svc_sizes), default=0), 640) + 2 * M

    proxy = view.proxy_mode if view.proxy_mode == "iptables" else f"{view.proxy_mode} (chains named as in iptables mode)"
    header = (f"lab {view.name}  ·  {len(view.nodes)} nodes  ·  overlay {view.backend}  ·  proxy {proxy}"
              f"  ·  pod network {view.pod_network}")
    width = max(width, text_width(header, "title") + 2 * M)
    shapes.append(text(M, M + 14, header, "title"))
    y: float = M + 34

    # Services, in rows as wide as the canvas
    svc_rows: list[tuple[ServiceView, Box, str]] = []
    x: float = M
    row_h = 0.0
    for i, (s, (w, h)) in enumerate(zip(view.services, svc_sizes, strict=True)):
        if x > M and x + w > width - M:
            x, y = M, y + row_h + 30
            row_h = 0.0
        svc_rows.append((s, Box(x, y, w, h), f"c{i % PALETTE}"))
        x += w + SVC_GAP
        row_h = max(row_h, h)
    if not view.services:
        shapes.append(text(M, y + 14, "no Services", "small"))
        row_h = 20
    y += row_h + 70  # room for the arrows to turn down into the nodes

    # Nodes, in rows of NODES_PER_ROW columns
    pod_boxes: dict[str, Box] = {}
    node_anchor: dict[str, NodeAnchors] = {}
    node_cols: dict[str, Box] = {}
    rows = [view.nodes[i:i + per_row] for i in range(0, len(view.nodes), per_row)]
    for r, row in enumerate(rows):
        h = max(node_height(n) for n in row)
        for c, n in enumerate(row):
            b = Box(M + c * (col_w + GAP), y, col_w, h)
            g, a = _draw_node(n, b, pod_boxes)
            shapes.append(g)
            node_anchor[n.name] = a
            node_cols[n.name] = b
        y += h + (GAP if r < len(rows) - 1 else 30)
    if not view.nodes:
        shapes.append(text(M, y + 14, "no nodes", "small"))
        y += 40

    # The underlay every node's eth0 hangs on
    ul = Box(M, y, width - 2 * M, 34)
    ul_items: list[Shape] = [rect(ul.x, ul.y, ul.w, ul.h, "underlay-box"),
                             text(ul.x + PAD, ul.y + 22, f"underlay {view.underlay_cidr}  ·  bridge "
                                  f"{view.underlay_bridge} in {view.underlay_netns}  ·  gateway "
                                  f"{view.underlay_gateway} (the lab's API server)", "label")]
    for n in view.nodes:
        a = node_anchor[n.name]
        b = node_cols[n.name]
        bx, by = a.eth0_bottom
        if b.y + b.h + 30 >= y - 1:  # the last row: straight down
            d = f"M{bx:.1f},{by:.1f} V{ul.y:.1f}"
            ux = bx
        else:  # an earlier row: down the gap to the right of the column
            ux = b.x + b.w + GAP / 2
            d = f"M{bx:.1f},{by:.1f} V{by + 12:.1f} H{ux:.1f} V{ul.y:.1f}"
        ul_items.append(path(d, "wire"))
        anchors[f"underlay:{n.name}"] = (ux, ul.y + 7)  # above the underlay's label
    shapes.append(group("underlay", view.underlay_netns, ul_items, title=f"underlay {view.underlay_cidr}"))
    y += ul.h + 20

    if view.unscheduled:
        shapes.append(text(M, y + 14, "pods without a node", "title"))
        y += 24
        x = M
        for p in view.unscheduled:
            w = min(max(text_width(p.ref), text_width(_pod_status(p), "small")) + 40, 360)
            if x > M and x + w > width - M:
                x, y = M, y + POD_H + 8
            b = Box(x, y, w, POD_H)
            pod_boxes[p.ref] = b
            shapes.append(_draw_pod(p, b))
            x += w + 12
        y += POD_H + 20

    # Arrows: each endpoint row of a Service to the pod that holds the address
    edges: list[Shape] = []
    for s, box, colour in svc_rows:
        g, rows_at = _draw_service(s, box, colour)
        shapes.append(g)
        i = 0
        for port in s.ports:
            for e in port.endpoints:
                target = pod_boxes.get(e.pod) if e.pod else None
                if target is not None:
                    sx, sy = rows_at[i]
                    ex, ey = target.x + target.w, target.cy
                    lane = sx + 8 + 6 * (i % 5)  # down the gap beside the box, one lane per endpoint
                    bottom = box.y + box.h + 14
                    d = (f"M{sx:.1f},{sy:.1f} H{lane - 6:.1f} Q{lane:.1f},{sy:.1f} {lane:.1f},{sy + 6:.1f} "
                         f"V{bottom:.1f} C{lane:.1f},{bottom + 50:.1f} {ex + 60:.1f},{ey - 40:.1f} "
                         f"{ex + 2:.1f},{ey:.1f}")
                    cls = f"edge {colour}" + ("" if e.share else " edge-off")
                    edges.append(group("edge", f"{s.ref}->{e.address}", [path(d, cls, arrow=colour)],
                                       title=f"{s.ref} -> {e.address} ({e.pod}) {_share(e.share)}"))
                i += 1
    shapes.extend(edges)  # drawn last: arrows over the boxes they cross

    for ref, b in pod_boxes.items():
        anchors[f"pod:{ref}"] = (b.x + 6, b.cy)
    for name, a in node_anchor.items():
        for k in ("host", "cni0", "overlay", "eth0"):
            anchors[f"{name}:{k}"] = getattr(a, k)
        for hook, pt in a.hooks.items():
            anchors[f"{name}:{hook}"] = pt
    anchors["caption"] = (M, y + 4)
    pod_nodes = {p.ref: p.node for p in view.pods()}
    y += 2 * LH + 8  # the caption a trace overlay writes its outcome on
    return {"width": round(width, 1), "height": round(y + M, 1), "palette": PALETTE, "shapes": shapes,
            "anchors": {k: [round(v[0], 1), round(v[1], 1)] for k, v in anchors.items()}, "pod_nodes": pod_nodes}


# ---------------------------------------------------------------------------------------------------------
# A trace across the scene

STEP_ANCHOR = {"route": "route", "veth": "cni0", "bridge": "cni0", "encap": "overlay", "source": "host",
               "deliver": "host", "drop": None}


def _hop_anchor(h: dict[str, Any]) -> str | None:
    """Where on a node a hop is drawn: netfilter hops at their hook, others at their device."""
    step = str(h.get("step") or "")
    if step in ("netfilter", "conntrack"):
        hook = str(h.get("hook") or "prerouting")
        return hook if hook in HOOK_AT else "prerouting"
    return STEP_ANCHOR.get(step, "host")


def trace_points(sc: dict[str, Any], hops: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The hops as points on the scene, consecutive hops at the same place merged: [{x, y, hops: [i, ...]}].

    A pod's hops sit on the pod; a node's on the device the step happens at (netfilter, routing, cni0, the
    overlay device). Between hops on two different nodes the packet leaves by eth0, crosses the underlay and
    enters the other node's eth0, so those four points come between (every backend's packets do).
    """
    anchors = {k: tuple(v) for k, v in sc["anchors"].items()}
    pod_nodes: dict[str, str] = sc.get("pod_nodes", {})
    out: list[dict[str, Any]] = []
    last_node = ""

    def add(key: str, i: int | None) -> None:
        pt = anchors.get(key)
        if pt is None:
            return
        if out and (out[-1]["x"], out[-1]["y"]) == pt:
            if i is not None:
                out[-1]["hops"].append(i)
            return
        out.append({"x": pt[0], "y": pt[1], "hops": [] if i is None else [i], "at": key})

    for i, h in enumerate(hops):
        who = str(h.get("node") or "")
        is_pod = "/" in who
        node = pod_nodes.get(who, "") if is_pod else who
        if last_node and node and node != last_node:
            for key in (f"{last_node}:eth0", f"underlay:{last_node}", f"underlay:{node}", f"{node}:eth0"):
                add(key, None)
        if is_pod:
            add(f"pod:{who}", i)
        else:
            kind = _hop_anchor(h)
            if kind is None:  # a drop happens where the packet is
                if out:
                    out[-1]["hops"].append(i)
                else:
                    add(f"{who}:prerouting", i)
            else:
                add(f"{who}:{kind}", i)
        if node:
            last_node = node
    return out


def trace_overlay(sc: dict[str, Any], trace: dict[str, Any], outcome: int = 0) -> dict[str, Any]:
    """The shapes of one outcome's path (numbered where hops happen) over the scene."""
    outcomes = trace.get("outcomes") or []
    if not outcomes:
        return group("trace", "trace", [])
    o = outcomes[min(max(outcome, 0), len(outcomes) - 1)]
    pts = trace_points(sc, o.get("hops") or [])
    if not pts:
        return group("trace", "trace", [])
    cls = {"delivered": "trace-ok", "rejected": "trace-bad", "dropped": "trace-bad"}.get(o.get("verdict"), "trace-ok")
    d = "M" + " L".join(f"{p['x']:.1f},{p['y']:.1f}" for p in pts)
    items: list[Shape] = [path(d, f"trace-path {cls}")]
    for p in pts:
        if not p["hops"]:
            continue
        n = p["hops"][0] + 1
        label = str(n) if len(p["hops"]) == 1 else f"{n}-{p['hops'][-1] + 1}"
        items.append({"t": "circle", "x": p["x"], "y": p["y"], "r": max(8.0, 3 + 2.8 * len(label)),
                      "cls": f"trace-dot {cls}"})
        items.append(text(p["x"], p["y"] + 3.5, label, "trace-num", anchor="middle"))
    end = pts[-1]
    items.append({"t": "circle", "x": end["x"], "y": end["y"], "r": 14, "cls": f"trace-ring {cls}"})
    flow = trace.get("flow") or {}
    mark = "✓" if o.get("verdict") == "delivered" else "✗"
    first = (f"{mark} trace {flow.get('proto', '')} {flow.get('src', '')} -> {flow.get('dst', '')}:"
             f"{flow.get('dport', '')}: {o.get('verdict')}")
    second = f"{o.get('where', '')} ({float(o.get('probability') or 0) * 100:.0f}% of new connections)".strip()
    if o.get("reason"):
        second += f": {o['reason']}"
    if isinstance(trace.get("verify"), dict):
        second += "; the kernel " + ("agrees" if trace["verify"].get("agree") else "disagrees")
    cx, cy = sc["anchors"].get("caption", [M, sc.get("height", 0) - M])
    items.append(text(cx, cy + 12, first, f"trace-end {cls}"))
    items.append(text(cx + 16, cy + 12 + LH + 2, second, f"trace-end {cls}"))
    return group("trace", "trace", items, title=f"{o.get('verdict')} {o.get('where', '')}")
