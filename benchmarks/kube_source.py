"""The Kubernetes source (podnet.source.kube) when its API server dies and comes back.

  cold      a fresh informer's first list over HTTPS (the baseline: what any restart of a daemon costs)
  recover   SIGKILL of `podnet apiserver`, a Service written while it is down (into the store it serves),
            the server started again: seconds from "the server answers /readyz again" to "the informer
            holds the new Service" (re-list with backoff), and from the kill to the same point
  relists   how many re-lists the outage cost

Goal (issue 14): daemons converge within 5 s of the API server's return. Each row is measured --rounds times.

Run: `.venv/bin/python benchmarks/kube_source.py [--rounds 5] [--services 200]`
"""

from __future__ import annotations

import argparse
import json
import signal
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from rich.console import Console
from rich.table import Table

from podnet.apiserver import certs
from podnet.source.kube import KubeSource
from podnet.source.kubeconfig import KubeOptions
from podnet.store import keys, open_store

PODNET = str(Path(sys.executable).with_name("podnet"))


def svc(name: str, i: int) -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "bench"},
                       "spec": {"clusterIP": f"10.96.{i // 250}.{i % 250 + 1}", "ports": [{"port": 80}]}}).encode()


class Server:
    def __init__(self, d: Path, store_url: str, port: int = 0) -> None:
        self.d, self.store_url, self.port = d, store_url, port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        pf = self.d / "port"
        pf.unlink(missing_ok=True)
        self.proc = subprocess.Popen([PODNET, "--store", self.store_url, "apiserver", "--listen",
                                      f"127.0.0.1:{self.port}", "--cert-dir", str(self.d / "pki"), "--port-file",
                                      str(pf)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while not (pf.exists() and pf.read_text().strip()):
            time.sleep(0.02)
        self.port = int(pf.read_text())

    def ready(self) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.d / "pki" / "ca.crt"))
        ctx.load_cert_chain(str(self.d / "pki" / "admin.crt"), str(self.d / "pki" / "admin.key"))
        try:
            with urllib.request.urlopen(f"https://127.0.0.1:{self.port}/readyz", context=ctx, timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


def main() -> None:
    import logging

    logging.getLogger("podnet.source.kube").setLevel(logging.ERROR)  # the outage's retries, one line each
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--services", type=int, default=200)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="pn-bench-kube-") as tmp:
        d = Path(tmp)
        store_url = f"sqlite:///{d}/state.db"
        store = open_store(store_url)
        for i in range(args.services):
            store.put(keys.resource("Service", "bench", f"s{i}"), svc(f"s{i}", i))
        server = Server(d, store_url)
        server.start()
        while not server.ready():
            time.sleep(0.02)
        kc = d / "kubeconfig"
        kc.write_text(certs.kubeconfig(certs.CertDir(d / "pki"), f"https://127.0.0.1:{server.port}"))
        src = KubeSource(KubeOptions(kubeconfig=str(kc)))
        cold, after_ready, after_kill, relists = [], [], [], []
        try:
            for _ in range(args.rounds):
                t0 = time.monotonic()
                inf = src.informer("Service", lambda doc: doc["metadata"]["name"], name="bench")
                inf.start()
                inf.wait_synced(60)
                cold.append(time.monotonic() - t0)
                inf.stop()
            inf = src.informer("Service", lambda doc: doc["metadata"]["name"], name="bench")
            inf.start()
            inf.wait_synced(60)
            for r in range(args.rounds):
                before = inf.relists
                t_kill = time.monotonic()
                server.kill()
                name = f"new{r}"
                store.put(keys.resource("Service", "bench", name), svc(name, args.services + r))
                server.start()  # same port: the kubeconfig stays right, as the lab's does
                while not server.ready():
                    time.sleep(0.01)
                t_ready = time.monotonic()
                while name not in inf.snapshot().values():
                    time.sleep(0.005)
                t_seen = time.monotonic()
                after_ready.append(t_seen - t_ready)
                after_kill.append(t_seen - t_kill)
                relists.append(inf.relists - before)
            inf.stop()
        finally:
            src.close()
            if server.proc is not None and server.proc.poll() is None:
                server.proc.terminate()
                server.proc.wait()
            store.close()

    def row(xs: list[float]) -> tuple[str, str, str]:
        return f"{statistics.median(xs):.3f}", f"{max(xs):.3f}", f"{statistics.median(xs) / statistics.median(cold):.1f}x"

    t = Table(title=f"Kubernetes source: API server SIGKILL + restart ({args.services} Services, {args.rounds} rounds)")
    for c in ("measurement", "median s", "max s", "vs cold list"):
        t.add_column(c)
    t.add_row("cold: first list of a new informer (baseline)", *row(cold))
    t.add_row("recover: server ready -> informer has the new Service", *row(after_ready))
    t.add_row("recover: SIGKILL -> informer has the new Service", *row(after_kill))
    t.add_row("re-lists per outage (median, max)", f"{statistics.median(relists):.0f}", f"{max(relists)}", "")
    Console().print(t)
    ok = max(after_ready) < 5.0
    print(f"goal: converge within 5 s of the API server's return: {'met' if ok else 'MISSED'} "
          f"(worst {max(after_ready):.2f} s)")


if __name__ == "__main__":
    main()
