"""Store latency on SQLite (the baseline) vs etcd (1 member and a 3-member cluster on loopback).

  put      sequential unconditional puts of 200-byte values, latency of each call
  get      sequential gets of existing keys
  list     a list of 1,000 keys (what an informer re-list or the subnet manager reads)
  watch    put -> the event arriving at a watcher thread of another store connection (one at a time)
  watch-x  put -> the event arriving at a watcher in another process (the lab's daemons and the API server
           watch what the CLI and other daemons write), one at a time; and the CPU the idle watcher process
           spends in 5 s (SQLite watchers sleep on inotify: store/notify.py)
  checkpoint  (SQLite only) puts of 2 KiB values, 3,000 keys in turn: podnet's background checkpointer
           against SQLite's default (the checkpoint runs inside the commit that crosses 1,000 WAL pages),
           the baseline, measured in the same run: p50, p99, max and how many puts took over 5 ms
  acquire  1,000 nodes acquiring a subnet lease with the real overlay subnet manager (flannel's rules,
           Network 10.0.0.0/8, /24 subnets, 24 h store leases), from `--threads` threads, each its own
           node with its own store connection, so they race for subnets as real nodes do. "store ms"
           is the time spent inside store calls per acquisition; the rest is the manager's own CPU
           (threads share 2 cores and the GIL, so per-call latencies include waiting for them)

etcd servers are started by tests/contract/etcd_cluster.py (free loopback ports, stopped by pid), with
their data on /dev/shm, so etcd's fsync per write is free; `etcd-1-disk` puts it in the temp dir on disk
instead. SQLite runs WAL with synchronous=NORMAL (no fsync per commit) on the temp dir. Ratios are
against SQLite measured in the same run.

Run: `.venv/bin/python benchmarks/store.py [--ops 1000] [--nodes 1000] [--threads 8]
[--backends sqlite,etcd-1,etcd-3,etcd-1-disk]`
"""

from __future__ import annotations

import argparse
import ipaddress
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "contract"))

from etcd_cluster import EtcdCluster, etcd_available  # noqa: E402

from podnet.overlay.netconf import parse_netconf  # noqa: E402
from podnet.overlay.storesubnet import SubnetManager  # noqa: E402
from podnet.store import Store, open_store  # noqa: E402

VALUE = b"x" * 200
NETCONF = b'{"Network": "10.0.0.0/8", "Backend": {"Type": "vxlan"}}'


@dataclass
class Result:
    backend: str
    lat: dict[str, list[float]] = field(default_factory=dict)  # seconds
    totals: dict[str, float] = field(default_factory=dict)  # seconds
    notes: dict[str, str] = field(default_factory=dict)


def pct(xs: list[float], p: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, round(p / 100 * len(s)) - 1))]


@contextmanager
def backend(name: str, tmp: str) -> Iterator[str]:
    if name == "sqlite":
        yield f"sqlite://{tmp}/bench-{os.getpid()}.db"
        return
    size = int(name.split("-")[1])  # etcd-N[-disk]
    # data on /dev/shm (fsync is free) unless the name says -disk: then in the tmp dir, on disk
    with EtcdCluster(size, base_dir=tmp if name.endswith("-disk") else None) as c:
        yield c.url


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_kv(store: Store, res: Result, ops: int) -> None:
    p = "/bench/kv/"
    for i in range(20):  # warm up connections and caches
        store.put(f"/bench/warm/{i}", VALUE)
    t0 = time.perf_counter()
    res.lat["put"] = [timed(lambda i=i: store.put(f"{p}{i:06d}", VALUE)) for i in range(ops)]
    res.totals["put"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    res.lat["get"] = [timed(lambda i=i: store.get(f"{p}{i:06d}")) for i in range(ops)]
    res.totals["get"] = time.perf_counter() - t0
    for i in range(ops, 1000):  # list needs 1,000 keys
        store.put(f"{p}{i:06d}", VALUE)
    t0 = time.perf_counter()
    res.lat["list"] = [timed(lambda: store.list(p)) for _ in range(20)]
    res.totals["list"] = time.perf_counter() - t0
    if len(store.list(p).items) != max(ops, 1000):
        raise RuntimeError(f"list {p}: expected {max(ops, 1000)} keys")


class TimedStore:
    """Forwards to a store and adds up the wall time spent inside its calls (per instance)."""

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.url = inner.url
        self.spent = 0.0

    def __getattr__(self, name: str) -> object:
        attr = getattr(self.inner, name)
        if not callable(attr):
            return attr

        def call(*a: object, **kw: object) -> object:
            t = time.perf_counter()
            try:
                return attr(*a, **kw)
            finally:
                self.spent += time.perf_counter() - t

        return call


def bench_watch(url: str, store: Store, res: Result, samples: int) -> None:
    watcher = open_store(url)
    arrived: dict[str, float] = {}
    cond = threading.Condition()
    w = watcher.watch("/bench/watch/", store.revision() + 1)

    def run() -> None:
        for ev in w:
            with cond:
                arrived[ev.key] = time.perf_counter()
                cond.notify_all()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    lat: list[float] = []
    try:
        for i in range(samples):
            key = f"/bench/watch/{i:05d}"
            start = time.perf_counter()
            store.put(key, VALUE)
            with cond:
                if not cond.wait_for(lambda k=key: k in arrived, 10):
                    raise RuntimeError(f"watch event for {key} did not arrive within 10 s")
                lat.append(arrived[key] - start)
    finally:
        w.close()
        t.join(5)
        watcher.close()
    res.lat["watch"] = lat


WATCHER = """
import sys, time
from podnet.store import open_store
s = open_store(sys.argv[1])
w = s.watch("/bench/watchx/", s.revision() + 1)
print("ready", flush=True)
for ev in w:
    print(ev.key, time.monotonic(), flush=True)
"""


def bench_watch_process(url: str, store: Store, res: Result, samples: int) -> None:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", WATCHER, url], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        if child.stdout.readline().strip() != "ready":
            raise RuntimeError("the watcher process did not start")
        time.sleep(0.5)  # let its start-up settle before measuring its idle CPU
        cpu0 = _cpu(child.pid)
        time.sleep(5)
        idle = _cpu(child.pid) - cpu0
        lat: list[float] = []
        for i in range(samples):
            key = f"/bench/watchx/{i:05d}"
            start = time.monotonic()
            store.put(key, VALUE)
            got, stamp = child.stdout.readline().split()
            if got != key:
                raise RuntimeError(f"the watcher saw {got}, expected {key}")
            lat.append(float(stamp) - start)
            time.sleep(0.002)  # one at a time: the watcher is idle again before the next put
    finally:
        child.terminate()
        child.wait(10)
    res.lat["watch-x"] = lat
    res.notes["watch-x"] = f"idle watcher process: {idle * 1000:.0f} ms CPU in 5 s"


def _cpu(pid: int) -> float:
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def bench_acquire(url: str, res: Result, nodes: int, threads: int) -> None:
    conf = parse_netconf(NETCONF)
    lat: list[float] = []
    in_store: list[float] = []
    lost = 0
    errors: list[BaseException] = []
    lock = threading.Lock()

    def node_range(k: int) -> range:
        return range(k, nodes, threads)

    def worker(k: int) -> None:
        nonlocal lost
        raw = open_store(url)
        store = TimedStore(raw)
        try:
            for n in node_range(k):
                mgr = SubnetManager(store)  # type: ignore[arg-type]
                ip = ipaddress.IPv4Address("172.16.0.0") + n + 1
                mac = f"0a:00:00:00:{n >> 8 & 255:02x}:{n & 255:02x}"
                store.spent = 0.0
                t = time.perf_counter()
                mgr.acquire(conf, ip, backend_type="vxlan", backend_data={"VNI": 1, "VtepMAC": mac})
                d = time.perf_counter() - t
                with lock:
                    lat.append(d)
                    in_store.append(store.spent)
                    lost += mgr.lost_races
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)
        finally:
            raw.close()

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    res.totals["acquire"] = time.perf_counter() - t0
    if errors:
        raise errors[0]
    check = open_store(url)
    try:
        leases = check.list("/coreos.com/network/subnets/").items
        if len(leases) != nodes:
            raise RuntimeError(f"{len(leases)} leases in the store after {nodes} acquisitions")
        if len({kv.key for kv in leases}) != nodes:
            raise RuntimeError("two nodes hold the same subnet")
    finally:
        check.close()
    res.lat["acquire"] = lat
    res.notes["acquire"] = (f"{lost} lost races retried; store ms p50 {ms(pct(in_store, 50))}, "
                            f"mean {ms(statistics.fmean(in_store))}")


def run_backend(name: str, args: argparse.Namespace, tmp: str) -> Result:
    res = Result(name)
    with backend(name, tmp) as url:
        store = open_store(url)
        try:
            bench_kv(store, res, args.ops)
            bench_watch(url, store, res, args.watch_samples)
            bench_watch_process(url, store, res, args.watch_samples)
        finally:
            store.close()
        if name in args.acquire_backends.split(","):
            bench_acquire(url, res, args.nodes, args.threads)
    return res


def bench_checkpoint(tmp: str, ops: int) -> None:
    from podnet.store.sqlite import SqliteStore

    value = b"x" * 2048
    rows = []
    for label, background in (("in the commit (SQLite default)", False), ("background (podnet)", True)):
        store = SqliteStore(f"sqlite://{tmp}/ckpt-{int(background)}.db", background_checkpoint=background)
        try:
            lat = [timed(lambda i=i, s=store: s.put(f"/ckpt/{i % 3000}", value)) for i in range(ops)]
        finally:
            store.close()
        rows.append((label, lat))
    base = pct(rows[0][1], 99)
    print(f"\nsqlite checkpoints: {ops} puts of 2 KiB values (ms); ratio = p99 / the in-commit p99")
    print(f"{'checkpoint':32} {'p50':>7} {'p99':>7} {'max':>8} {'> 5 ms':>7} {'ratio':>7}")
    for label, lat in rows:
        print(f"{label:32} {ms(pct(lat, 50)):>7} {ms(pct(lat, 99)):>7} {ms(max(lat)):>8} "
              f"{sum(x > 0.005 for x in lat):7d} {pct(lat, 99) / base:7.2f}")


def ms(x: float) -> str:
    return f"{x * 1000:.2f}"


def report(results: list[Result], args: argparse.Namespace) -> None:
    base = results[0]
    print(f"\nstore latency (ms): {args.ops} puts/gets, {args.watch_samples} watch samples, "
          f"{args.nodes} nodes acquiring leases from {args.threads} threads; ratio = backend p50 / {base.backend} p50")
    hdr = f"{'op':8} {'backend':11} {'p50':>8} {'p99':>8} {'mean':>8} {'total s':>8} {'ratio':>7}  note"
    print(hdr)
    print("-" * len(hdr))
    for op in ("put", "get", "list", "watch", "watch-x", "acquire"):
        for r in results:
            if op not in r.lat:
                continue
            xs = r.lat[op]
            p50 = pct(xs, 50)
            ratio = p50 / pct(base.lat[op], 50)
            total = r.totals.get(op, sum(xs))
            print(f"{op:8} {r.backend:11} {ms(p50):>8} {ms(pct(xs, 99)):>8} {ms(statistics.fmean(xs)):>8} "
                  f"{total:8.2f} {ratio:7.2f}  {r.notes.get(op, '')}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=1000)
    ap.add_argument("--watch-samples", type=int, default=200)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=8)
    ap.add_argument("--backends", default="sqlite,etcd-1,etcd-3,etcd-1-disk")
    ap.add_argument("--checkpoint-ops", type=int, default=5000)
    # 1,000 acquisitions cost ~200 s of subnet-manager CPU per backend today (choose_subnet compares every
    # candidate with every lease), so by default only the baseline and the 3-member cluster run it
    ap.add_argument("--acquire-backends", default="sqlite,etcd-3")
    args = ap.parse_args()
    names = [b.strip() for b in args.backends.split(",") if b.strip()]
    if names[0] != "sqlite":
        names.insert(0, "sqlite")  # the baseline
    if not etcd_available():
        print("etcd server binary not installed: measuring sqlite only", file=sys.stderr)
        names = ["sqlite"]
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="pn-bench-store-") as tmp:
        for name in names:
            t = time.perf_counter()
            results.append(run_backend(name, args, tmp))
            print(f"{name}: done in {time.perf_counter() - t:.1f} s", file=sys.stderr)
        report(results, args)
        bench_checkpoint(tmp, args.checkpoint_ops)


if __name__ == "__main__":
    main()
