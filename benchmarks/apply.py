"""apply/delete benchmark: the cost of `podnet apply` of ONE object into a store that already holds many.

What the write path must pay is proportional to the change (the object's own key, the allocation keys
of a service, the pods and slices of the services the change selects), not to the size of the store.

Scenarios (sqlite store in a temp dir):
- 1k services + 1k user EndpointSlices: apply one changed EndpointSlice (the lab convergence benchmark's step)
- 2k services (selector app=sN) + 2k pods: apply one new service; apply one changed pod; delete that pod

Baseline in the same run: one plain store.put of the same object's bytes (the floor of any write path).

`podnet apply` (one process per command, no cache) plans on SQLite from the store's own bucket table
(store/buckets.py, written with every object). The same three writes again planned from lists of the
touched namespaces, what etcd without a write index does (and SQLite did before the table): the
before-figure. And once more as the API server writes them, planned from its write index
(controllers/writeindex.py, a watch cache of the store).

On etcd (one loopback member started by the script, on tmpfs, when the etcd binary is installed): the
same three `podnet apply` writes planned from etcd's bucket member keys (store/etcd_buckets.py), and again
from lists of the touched namespaces (the before-figure on etcd); baseline one plain etcd put.

Also the lab controller (src/podnet/lab/controller.py) on the same 2k services + 2k pods: the time from an
agent's status write of one pod reached the controller's informer until the controller has written that
service's slice (one round), against the full recompute it used to run on every change
(controllers.endpoints.sync_ops over the whole store).

The growth table (issue 16, goal 7: one object's cost at the largest size within 1.2x of the smallest)
is measured apart, after every size's store was built and with all of them open: each repetition times
the three writes on every size in turn (the order alternating), so the machine's drift over minutes,
which moved untouched rows by up to 50% between sequential runs, falls on every size alike.

Run: .venv/bin/python benchmarks/apply.py [--sizes 1000,2000] [--reps 20]
"""

from __future__ import annotations

import contextlib
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table

from lab import services_yaml  # the same 1k-service fixture the lab benchmark loads
from podnet.api.loader import load_objects, to_json
from podnet.api.pod import Pod
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.controllers.endpoints import sync_ops
from podnet.controllers.writeindex import WriteIndex
from podnet.lab import topology
from podnet.lab.controller import LabController
from podnet.lab.state import LabState
from podnet.store import keys, open_store

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "contract"))
from etcd_cluster import EtcdCluster, etcd_available  # noqa: E402


def _slice_doc(i: int, k: int) -> str:
    return f"""apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: s{i}-a, labels: {{kubernetes.io/service-name: s{i}}}}}
addressType: IPv4
endpoints: [{{addresses: [10.200.{i // 250}.{i % 250 + 1}]}}, {{addresses: [10.201.{k // 250}.{k % 250 + 1}]}}]
ports: [{{name: p, port: 8080, protocol: TCP}}]"""


def _svc_doc(i: int) -> str:
    return f"""apiVersion: v1
kind: Service
metadata: {{name: s{i}}}
spec: {{selector: {{app: s{i}}}, ports: [{{name: p, port: 80, targetPort: 8080}}]}}"""


def _pod_doc(i: int, k: int = 0) -> str:
    ip = f"10.{32 + i // 60000}.{i // 250 % 240}.{i % 250 + 1}"
    return f"""apiVersion: v1
kind: Pod
metadata: {{name: p{i}, labels: {{app: s{i}, rev: r{k}}}}}
spec: {{containers: [{{name: c}}]}}
status: {{podIP: {ip}, phase: Running, conditions: [{{type: Ready, status: "True"}}]}}"""


def _timed(reps: int, fn: Callable[[int], object]) -> float:
    times = []
    for k in range(reps):
        t = time.perf_counter()
        fn(k)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


Targets = dict[str, dict[int, object]]  # growth row label -> size -> the store (or view) to write through


def run(n: int, reps: int, keep: contextlib.ExitStack, targets: Targets) -> list[tuple[str, float, float]]:
    """The rows of one size; the stores the growth table writes to stay open in `keep`."""
    rows = []
    with tempfile.TemporaryDirectory() as d:
        store = open_store(f"sqlite:///{d}/state.db")
        apply_objects(store, load_objects(services_yaml(n, 1)))
        objs = [load_objects(_slice_doc((k * 37) % n, k)) for k in range(reps)]
        t = _timed(reps, lambda k: apply_objects(store, objs[k]))
        floor = _timed(reps, lambda k: store.put("/podnet/bench/floor", to_json(objs[k][0])))
        rows.append((f"{n} svc + {n} slices: apply 1 EndpointSlice", t, floor))
        store.close()
    d = keep.enter_context(tempfile.TemporaryDirectory())
    store = open_store(f"sqlite:///{d}/state.db")
    keep.callback(store.close)
    apply_objects(store, load_objects("\n---\n".join(_svc_doc(i) for i in range(n))))
    apply_objects(store, load_objects("\n---\n".join(_pod_doc(i) for i in range(n))))
    # `podnet apply` on SQLite: the store's own bucket table; then the same writes planned from lists of
    # the touched namespaces (what etcd without a write index does, and SQLite did before the table)
    rows += _cli_rows(store, store, "podnet apply (SQLite bucket table)", n, reps, 1)
    rows += _cli_rows(store, _Listing(store), "listing (SQLite, its table hidden)", n, reps, 3)
    rows += _indexed_rows(store, n, reps)
    rows.append(_controller_row(store, n, reps))
    targets.setdefault("podnet apply (SQLite bucket table)", {})[n] = store
    targets.setdefault("listing (SQLite, its table hidden)", {})[n] = _Listing(store)
    if etcd_available():
        rows += _etcd_rows(n, reps, keep, targets)
    return rows


def _etcd_rows(n: int, reps: int, keep: contextlib.ExitStack, targets: Targets) -> list[tuple[str, float, float]]:
    cluster = keep.enter_context(EtcdCluster(1))
    store = open_store(cluster.url)
    keep.callback(store.close)
    for docs in (_svc_doc, _pod_doc):  # in parts of 200 objects, which is what apply_objects does anyway
        for lo in range(0, n, 200):
            apply_objects(store, load_objects("\n---\n".join(docs(i) for i in range(lo, min(n, lo + 200)))))
    rows = _cli_rows(store, store, "podnet apply (etcd bucket keys)", n, reps, 1)
    rows += _cli_rows(store, _Listing(store), "etcd, listing", n, reps, 3)
    targets.setdefault("podnet apply (etcd bucket keys)", {})[n] = store
    targets.setdefault("etcd, listing", {})[n] = _Listing(store)
    return rows


def growth(targets: Targets, reps: int) -> dict[str, dict[int, float]]:
    """Median of each write per target and size, the sizes interleaved within every repetition."""
    out: dict[str, dict[int, float]] = {}
    for band, (label, by_size) in enumerate(targets.items(), start=9):
        sizes = sorted(by_size)
        pods = {n: _live_pods(by_size[n], n, reps) for n in sizes}
        times: dict[tuple[str, int], list[float]] = {}
        for k in range(reps):
            for n in (sizes if k % 2 else sizes[::-1]):
                for what in _WRITES:
                    t = time.perf_counter()
                    _write(by_size[n], what, svc=n + band * reps + k, pod=pods[n][k], rev=band * reps + k + 1)
                    times.setdefault((what, n), []).append(time.perf_counter() - t)
        for (what, n), ts in times.items():
            out.setdefault(f"{what}, {label}", {})[n] = statistics.median(ts)
        if any(sync_ops(store) for store in by_size.values()):  # type: ignore[arg-type]
            raise SystemExit(f"the writes of {label} left derived slices out of date")
    return out


_WRITES = ("apply 1 new Service", "apply 1 changed Pod", "delete 1 Pod")


def _write(via, what: str, *, svc: int, pod: int, rev: int) -> None:  # type: ignore[no-untyped-def]
    if what == "apply 1 new Service":
        apply_objects(via, load_objects(_svc_doc(svc)))
    elif what == "apply 1 changed Pod":
        apply_objects(via, load_objects(_pod_doc(pod, rev)))
    else:
        delete_objects(via, [("Pod", "default", f"p{pod}")])


def _live_pods(store, n: int, reps: int) -> list[int]:  # type: ignore[no-untyped-def]
    """reps pods that the rows before left in place (they deleted some), spread over the store."""
    found: list[int] = []
    i = 7
    while len(found) < reps:
        i = (i + 43) % n
        if store.get(keys.resource("Pod", "default", f"p{i}")) is not None and i not in found:
            found.append(i)
    return found


def _cli_rows(store, via, label: str, n: int, reps: int, band: int) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
    """A new Service, a changed Pod and a deleted Pod planned without a write index, through `via` (other
    objects for every band), then a check that they left no derived slice out of date."""
    rows = []
    svcs = [load_objects(_svc_doc(n + band * reps + k)) for k in range(reps)]
    t = _timed(reps, lambda k: apply_objects(via, svcs[k]))
    floor = _timed(reps, lambda k: store.put("/podnet/bench/floor", to_json(svcs[k][0])))
    rows.append((f"{n} svc + {n} pods: apply 1 new Service, {label}", t, floor))
    pods = [load_objects(_pod_doc((k * 37 + band * 11) % n, band * reps + k + 1)) for k in range(reps)]
    t = _timed(reps, lambda k: apply_objects(via, pods[k]))
    floor = _timed(reps, lambda k: store.put("/podnet/bench/floor", to_json(pods[k][0])))
    rows.append((f"{n} svc + {n} pods: apply 1 changed Pod, {label}", t, floor))
    t = _timed(reps, lambda k: delete_objects(via, [("Pod", "default", f"p{(k * 37 + band * 11) % n}")]))
    floor = _timed(reps, lambda k: store.delete(keys.resource("Pod", "default", "nope")))
    rows.append((f"{n} svc + {n} pods: delete 1 Pod, {label}", t, floor))
    if sync_ops(store):
        raise SystemExit(f"the writes of {label} left derived slices out of date")
    return rows


class _Listing:
    """The store with its bucket table hidden: the planner lists, as on etcd without a write index."""

    keeps_buckets = False

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def _indexed_rows(store, n: int, reps: int) -> list[tuple[str, float, float]]:  # type: ignore[no-untyped-def]
    """The same three writes as the API server makes them: planned from its WriteIndex (a watch cache of
    the store) instead of lists of whole namespaces. Other objects than the rows above, same store."""
    rows = []
    index = WriteIndex(store).start()
    try:
        if not index.caught_up(60):
            raise SystemExit("the write index did not catch up with the store in 60 s")
        svcs = [load_objects(_svc_doc(n + 5 * reps + k)) for k in range(reps)]
        t = _timed(reps, lambda k: apply_objects(store, svcs[k], index=index))
        floor = _timed(reps, lambda k: store.put("/podnet/bench/floor", to_json(svcs[k][0])))
        rows.append((f"{n} svc + {n} pods: apply 1 new Service, API server (write index)", t, floor))
        pods = [load_objects(_pod_doc((k * 41 + 3) % n, 5 * reps + k + 1)) for k in range(reps)]
        t = _timed(reps, lambda k: apply_objects(store, pods[k], index=index))
        floor = _timed(reps, lambda k: store.put("/podnet/bench/floor", to_json(pods[k][0])))
        rows.append((f"{n} svc + {n} pods: apply 1 changed Pod, API server (write index)", t, floor))
        t = _timed(reps, lambda k: delete_objects(store, [("Pod", "default", f"p{(k * 41 + 3) % n}")], index=index))
        floor = _timed(reps, lambda k: store.delete(keys.resource("Pod", "default", "nope")))
        rows.append((f"{n} svc + {n} pods: delete 1 Pod, API server (write index)", t, floor))
        if sync_ops(store):
            raise SystemExit("the writes through the write index left derived slices out of date")
    finally:
        index.stop()
    return rows


def _controller_row(store, n: int, reps: int) -> tuple[str, float, float]:  # type: ignore[no-untyped-def]
    url = store.url
    ctl = LabController(LabState(spec=topology.build("pn-cv-bench", 2), store_url=url), open_store(url))
    ctl.informer.start()
    try:
        ctl.informer.wait_synced(60)
        ctl.round()  # the initial sync of everything, once

        rounds: list[float] = []

        def status_write(k: int) -> None:
            i = (k * 41) % n
            key = keys.resource("Pod", "default", f"p{i}")
            kv = store.get(key)
            if kv is None:
                return
            pod = Pod.model_validate_json(kv.value)
            pod.status.pod_ip = f"10.99.{k // 250}.{k % 250 + 1}"  # as an agent writes it: a plain put
            store.put(key, to_json(pod))
            while ctl.informer.revision < store.revision():
                time.sleep(0.0005)
            t = time.perf_counter()
            ctl.round()
            rounds.append(time.perf_counter() - t)

        _timed(reps, status_write)
        t = statistics.median(rounds)
        floor = _timed(max(2, reps // 5), lambda k: sync_ops(store))
    finally:
        ctl.informer.stop()
        ctl.store.close()
    return (f"{n} svc + {n} pods: lab controller, 1 pod status write (baseline: full sync_ops)", t, floor)


def main() -> None:
    sizes = [1000, 2000]
    reps = 20
    args = sys.argv[1:]
    if "--sizes" in args:
        sizes = [int(x) for x in args[args.index("--sizes") + 1].split(",")]
    if "--reps" in args:
        reps = int(args[args.index("--reps") + 1])
    t = Table(title=f"apply/delete of one object (median of {reps})")
    t.add_column("scenario")
    t.add_column("measured", justify="right")
    t.add_column("floor / baseline", justify="right")
    t.add_column("ratio", justify="right")
    targets: Targets = {}
    with contextlib.ExitStack() as keep:
        for n in sizes:
            for name, took, floor in run(n, reps, keep, targets):
                t.add_row(name, f"{took * 1000:.1f} ms", f"{floor * 1000:.2f} ms", f"{took / floor:.3g}x")
        Console(width=140).print(t)
        by_scenario = growth(targets, reps) if len(sizes) > 1 else {}
    if len(sizes) > 1:  # issue 16 goal 7: the cost of one object does not grow with the store (within 1.2x)
        lo, hi = min(sizes), max(sizes)
        g = Table(title=f"growth: one object's cost at {hi} stored against {lo}, sizes interleaved, median of "
                        f"{reps} (goal <= 1.2x)")
        for c in ("scenario", f"at {lo}", f"at {hi}", "ratio"):
            g.add_column(c)
        for name, at in by_scenario.items():
            if lo in at and hi in at:
                g.add_row(name, f"{at[lo] * 1000:.1f} ms", f"{at[hi] * 1000:.1f} ms", f"{at[hi] / at[lo]:.2f}x")
        Console(width=140).print(g)


if __name__ == "__main__":
    main()
