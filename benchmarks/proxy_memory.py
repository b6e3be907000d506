"""Peak memory of the proxy at 10k services x 10 endpoints, both modes (issue 16, goal 4: <= 250 MB each).

`podnet proxy run` (the real daemon: store informers, tracker, backend) runs in namespace pn-mem-bench against a
SQLite store holding the Services and EndpointSlices. After its first full sync and --settle seconds more
(45 s: periodic runs every syncPeriod of 10 s and, in iptables mode, whole drift checks), the script reads the
daemon's peak resident memory (VmHWM) and, in iptables mode, the peak of the iptables-restore it ran (the largest VmHWM seen while sampling). Baselines measured in the same
run: the same daemon with no Services (what the interpreter and the libraries take), and the size of the
decoded objects themselves in this script's process (tracemalloc of the store's values, parsed).

Run as root: `.venv/bin/python benchmarks/proxy_memory.py [--services 10000] [--endpoints 10] [--modes
iptables,nftables]` (about 5 min).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from podnet.net import netns
from podnet.store import keys, open_store

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from proxy_resync import endpoint_slice, service  # noqa: E402

NS = "pn-mem-bench"
CONFIG = """apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clusterCIDR: 10.128.0.0/9
syncPeriod: 10s
"""


def vm_hwm(pid: int) -> int:
    """Peak resident set of a process, in kB (0 when it is gone)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0
    m = re.search(r"^VmHWM:\s+(\d+) kB", text, re.M)
    return int(m.group(1)) if m else 0


def restore_peaks() -> int:
    """The largest VmHWM among iptables-restore processes now alive in any namespace (kB)."""
    peak = 0
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                if (d / "comm").read_text().startswith(("iptables-resto", "iptables-nft-r")):
                    peak = max(peak, vm_hwm(int(d.name)))
            except OSError:
                pass
    return peak


def run_daemon(url: str, tmp: Path, mode: str, settle: float) -> dict[str, float]:
    netns.remove(NS)
    netns.create(NS)
    try:
        netns.run(NS, ["ip", "link", "add", "pn-mem0", "type", "veth", "peer", "name", "pn-mem1"])
        netns.run(NS, ["ip", "addr", "add", "192.168.77.1/24", "dev", "pn-mem0"])
        netns.run(NS, ["ip", "link", "set", "pn-mem0", "up"])
        cfg = tmp / "proxy.yaml"
        cfg.write_text(CONFIG)
        log = tmp / f"proxy-{mode}.log"
        argv = [sys.executable, "-m", "podnet.cli.main", "--store", url, "proxy", "run", "--node", "bench",
                "--mode", mode, "--config", str(cfg), "--metrics-bind-address", "", "--healthz-bind-address", ""]
        with log.open("w") as out:
            proc = subprocess.Popen(netns.exec_argv(NS, argv), stdout=out, stderr=out)
        try:
            start, restore_peak, synced_at = time.monotonic(), 0, None
            while time.monotonic() - start < 600:
                restore_peak = max(restore_peak, restore_peaks())
                if synced_at is None and re.search(r"full sync of \d+ service ports", log.read_text()):
                    synced_at = time.monotonic()
                if synced_at is not None and time.monotonic() - synced_at >= settle:
                    break
                if proc.poll() is not None:
                    raise SystemExit(f"proxy exited: {log.read_text()[-2000:]}")
                time.sleep(0.05)
            else:
                raise SystemExit("no full sync in 600 s")
            return {"proxy_mb": vm_hwm(proc.pid) / 1024, "restore_mb": restore_peak / 1024,
                    "first_sync_s": (synced_at or start) - start}
        finally:
            proc.terminate()
            proc.wait(30)
    finally:
        netns.remove(NS)


def decoded_mb(services: int, eps: int) -> float:
    """The decoded Services and EndpointSlices alone (the proxy's input), measured with tracemalloc."""
    import tracemalloc

    from podnet.api.loader import parse_object

    docs = [json.dumps(o) for i in range(services) for o in (service(i), endpoint_slice(i, eps))]
    tracemalloc.start()
    objs = [parse_object(json.loads(d)) for d in docs]
    size = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del objs
    return size / 2**20


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--services", type=int, default=10000)
    ap.add_argument("--endpoints", type=int, default=10)
    ap.add_argument("--modes", default="iptables,nftables")
    ap.add_argument("--settle", type=float, default=45.0,
                    help="seconds after the first full sync (periodic runs and, in iptables mode, drift checks)")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="pn-bench-mem-"))
    rows = []
    try:
        empty, full = f"sqlite:///{tmp}/empty.db", f"sqlite:///{tmp}/state.db"
        open_store(empty).close()
        store = open_store(full)
        for i in range(args.services):
            for obj in (service(i), endpoint_slice(i, args.endpoints)):
                meta = obj["metadata"]
                store.put(keys.resource(obj["kind"], meta["namespace"], meta["name"]), json.dumps(obj).encode())
        store.close()
        for mode in args.modes.split(","):
            base = run_daemon(empty, tmp, mode, settle=2.0)
            big = run_daemon(full, tmp, mode, settle=args.settle)
            rows.append((mode, base, big))
        objects = decoded_mb(args.services, args.endpoints)
    finally:
        netns.remove(NS)
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"\nproxy peak memory (VmHWM), {args.services} services x {args.endpoints} endpoints; the decoded "
          f"objects alone: {objects:.0f} MB")
    hdr = ("mode", "empty cluster (baseline)", f"{args.services} x {args.endpoints}", "above the baseline", "x decoded objects",
           "goal: <= 250 MB", "iptables-restore peak", "first full sync")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    for mode, base, big in rows:
        extra = big["proxy_mb"] - base["proxy_mb"]
        print(" | ".join([mode, f"{base['proxy_mb']:.0f} MB", f"{big['proxy_mb']:.0f} MB", f"{extra:.0f} MB",
                          f"{extra / objects:.1f}x", "met" if big["proxy_mb"] <= 250 else "NOT met",
                          f"{big['restore_mb']:.0f} MB" if mode == "iptables" else "-",
                          f"{big['first_sync_s']:.1f} s"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
