"""The lab page's cost per change, in one run.

Every burst of changes rebuilds the whole picture: model (objects joined with the lab's facts, chains named),
layout, and the JSON pushed to each page. That is measured here for small to large clusters, with the SVG
snapshot beside it, against a baseline of the same run: the proxy's own desired-state build from the same
Services and EndpointSlices (what every node's proxy does on a full sync), so the ratio says how much the
page costs next to work the cluster does anyway.

Run: `.venv/bin/python benchmarks/ui.py [--repeat 5]`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "unit" / "ui"))
from ui_fixtures import endpoint, facts, node, pod, service, slice_  # noqa: E402

from podnet.api.decode import decode_endpoint_slice as parse_endpoint_slice  # noqa: E402
from podnet.proxy.tracker import build_desired_state, parse_service  # noqa: E402
from podnet.ui import layout, model, svg  # noqa: E402

SIZES = ((3, 10, 3), (20, 200, 50), (50, 1000, 200))  # nodes, pods, Services


def cluster(n_nodes: int, n_pods: int, n_svcs: int) -> tuple[model.LabFacts, dict[str, list[dict]]]:
    nodes = [node(f"node{i}", f"192.168.77.{10 + i}") for i in range(1, n_nodes + 1)]
    pods = []
    for i in range(n_pods):
        n = i % n_nodes + 1
        pods.append(pod(f"app{i % n_svcs}-{i:05d}", f"node{n}", f"10.244.{n}.{i // n_nodes + 2}",
                        labels={"app": f"app{i % n_svcs}"}))
    services, slices = [], []
    for j in range(n_svcs):
        services.append(service(f"app{j}", f"10.96.{j // 250}.{j % 250 + 1}", [{"port": 80, "protocol": "TCP"}],
                                selector={"app": f"app{j}"}))
        eps = [endpoint(p["status"]["podIP"], p["spec"]["nodeName"]) for p in pods
               if p["metadata"]["labels"]["app"] == f"app{j}"]
        slices.append(slice_(f"app{j}", eps, [{"name": "", "port": 8080, "protocol": "TCP"}]))
    return facts(nodes=n_nodes), {"Node": nodes, "Pod": pods, "Service": services, "EndpointSlice": slices}


def baseline(objects: dict[str, list[dict]]) -> object:
    return build_desired_state([parse_service(s) for s in objects["Service"]],
                               [parse_endpoint_slice(s) for s in objects["EndpointSlice"]], "node1")


def rebuild(f: model.LabFacts, objects: dict[str, list[dict]]) -> str:
    return json.dumps(layout.scene(model.build(f, objects)), separators=(",", ":"))


def best(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    table = Table("nodes", "pods", "Services", "proxy state (baseline) ms", "scene + JSON ms", "ratio",
                  "SVG snapshot ms", "JSON KiB", title="lab ui: one rebuild of the picture")
    for n_nodes, n_pods, n_svcs in SIZES:
        f, objects = cluster(n_nodes, n_pods, n_svcs)
        sc = layout.scene(model.build(f, objects))
        t_base = best(lambda o=objects: baseline(o), args.repeat)
        t_scene = best(lambda f=f, o=objects: rebuild(f, o), args.repeat)
        t_svg = best(lambda sc=sc: svg.render(sc), args.repeat)
        table.add_row(str(n_nodes), str(n_pods), str(n_svcs), f"{t_base * 1e3:.1f}", f"{t_scene * 1e3:.1f}",
                      f"{t_scene / t_base:.1f}x", f"{t_svg * 1e3:.1f}", f"{len(rebuild(f, objects)) / 1024:.0f}")
    Console().print(table)


if __name__ == "__main__":
    main()
