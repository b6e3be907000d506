"""Reading big manifests: `podnet proxy render` of --services Services x --endpoints endpoints, end to end, as YAML
and as JSON, against the parse alone (the floor: libyaml's CSafeLoader, the json module) in the same run.

Issue 16, goal 1: render + load of 10k x 10 as YAML <= 10 s end to end, as JSON <= 3 s, one parse per file.
The pure-Python SafeLoader (what podnet used before) is timed on a tenth of the file for reference.
The floors parse with the cyclic GC paused, as podnet's loader does (api/loader.py paused_gc): with it
running, its passes over the growing heap add about a third to the YAML parse. Next to the wall-clock
seconds (what the goals are about), the CPU seconds of the same runs: on a shared machine the two differ.

Run: `.venv/bin/python benchmarks/load.py [--services 10000] [--endpoints 10]`
"""

from __future__ import annotations

import argparse
import gc
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

PODNET = str(Path(sys.executable).with_name("podnet"))


def objects(n: int, eps: int) -> list[dict]:
    out: list[dict] = []
    for i in range(n):
        name = f"svc{i:05d}"
        out.append({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                    "spec": {"type": "ClusterIP", "clusterIP": f"10.{96 + i // 65536}.{i // 256 % 256}.{i % 256}",
                             "selector": {"app": name},
                             "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}})
        out.append({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                    "metadata": {"name": f"{name}-abcde", "namespace": "default",
                                 "labels": {"kubernetes.io/service-name": name}},
                    "addressType": "IPv4",
                    "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
                    "endpoints": [{"addresses": [f"10.{128 + (i * eps + e) // 65536}.{(i * eps + e) // 256 % 256}."
                                                 f"{(i * eps + e) % 256}"],
                                   "conditions": {"ready": True}, "nodeName": f"node{e % 3}"}
                                  for e in range(eps)]})
    return out


def timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(wall, CPU) seconds of fn: this process's CPU and that of the children it waited for."""
    def cpu() -> float:
        children = resource.getrusage(resource.RUSAGE_CHILDREN)
        return time.process_time() + children.ru_utime + children.ru_stime

    t, c = time.perf_counter(), cpu()
    fn()
    return time.perf_counter() - t, cpu() - c


def parse_timed(fn) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """timed(fn) with the cyclic GC paused, as podnet parses."""
    gc.disable()
    try:
        return timed(fn)
    finally:
        gc.enable()


def render(path: Path) -> None:
    r = subprocess.run([PODNET, "proxy", "render", "--mode", "nftables", "-f", str(path)], capture_output=True)
    if r.returncode != 0 or b"table ip" not in r.stdout:
        raise SystemExit(f"render of {path} failed: {r.stderr.decode()[-500:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pn-bench-load-"))
    try:
        objs = objects(args.services, args.endpoints)
        y, j = tmp / "objects.yaml", tmp / "objects.json"
        y.write_text(yaml.dump_all(objs, Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
        j.write_text(json.dumps({"apiVersion": "v1", "kind": "List", "items": objs}))
        tenth = tmp / "tenth.yaml"
        tenth.write_text(yaml.dump_all(objs[: len(objs) // 10], Dumper=getattr(yaml, "CSafeDumper", yaml.SafeDumper)))
        text, jtext = y.read_text(), j.read_text()
        (parse_y, parse_y_cpu) = parse_timed(lambda: list(yaml.load_all(text, Loader=yaml.CSafeLoader)))
        (parse_j, parse_j_cpu) = parse_timed(lambda: json.loads(jtext))
        (pure, pure_cpu) = parse_timed(lambda: list(yaml.load_all(tenth.read_text(), Loader=yaml.SafeLoader)))
        (ry, ry_cpu), (rj, rj_cpu) = timed(lambda: render(y)), timed(lambda: render(j))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    size = f"{args.services // 1000}k x {args.endpoints}"
    t = Table(title=f"reading {size} manifests ({len(text) / 1e6:.0f} MB YAML, {len(jtext) / 1e6:.0f} MB JSON)")
    for c in ("measure", "seconds", "CPU seconds", "ratio to its parse", "goal"):
        t.add_column(c)
    t.add_row("YAML parse alone, CSafeLoader (floor)", f"{parse_y:.1f}", f"{parse_y_cpu:.1f}", "1.00x", "")
    t.add_row("YAML: proxy render end to end", f"{ry:.1f}", f"{ry_cpu:.1f}", f"{ry / parse_y:.2f}x",
              f"<= 10 s: {'met' if ry <= 10 else 'NOT met'}")
    t.add_row("JSON parse alone, json module (floor)", f"{parse_j:.2f}", f"{parse_j_cpu:.2f}", "1.00x", "")
    t.add_row("JSON: proxy render end to end", f"{rj:.1f}", f"{rj_cpu:.1f}", f"{rj / parse_j:.2f}x",
              f"<= 3 s: {'met' if rj <= 3 else 'NOT met'}")
    t.add_row("YAML parse, pure-Python SafeLoader, 1/10 of the file", f"{pure:.1f}", f"{pure_cpu:.1f}",
              f"{pure * 10 / parse_y:.1f}x (x10)", "the old path, for reference")
    Console(width=150).print(t)


if __name__ == "__main__":
    main()
