"""How fast podnet's iptables proxy syncs at 1k / 5k / 10k services x 10 endpoints, against kube-proxy's way.

podnet: the real sync path (proxy/iptables/render.py renders, proxy/iptables/restore.py loads) in namespace pn-px-bench:
  full     first full sync into an empty node (render + restore, jumps, stale-chain listing included)
  re-sync  the periodic full sync over the same rules
  floor    iptables-restore alone of the same full input from a file, into an empty namespace (pn-px-bench-fl)
  1-svc    partial sync after one service's endpoint changed (median of 5 changes, kernel settled), and
           the same right after a full sync (the kernel still frees the replaced rules; the transaction waits)
kube-proxy's way, the baseline, in namespace pn-px-bench-kp: the same full restore text through one
`iptables-restore -w --noflush`, as kube-proxy runs it, with a time limit (reported as ">limit" when hit).
Both namespaces hold a foreign chain (as Docker's) that must survive every sync; the script checks it.

nftables rows (--modes nftables): podnet's layout (proxy/nftables/layout.py through the nftables backend) against
kube-proxy's own nftables layout (proxy/nftables/kubeproxy.py, `--layout kube-proxy`) for the same state, each in a
fresh namespace (pn-nft-bench, pn-nft-bench-kp) next to a foreign table that must survive. Each side runs in
a worker process inside its namespace, so both load through one persistent libnftables context:
  full      render + load of the whole table into an empty namespace;  re-sync  the periodic full sync
  1-ep      one endpoint of one service replaced (median of 5);  +svc / -svc  a 10-endpoint service added /
            deleted (median of 5 each). kube-proxy's layout uses its partial-sync transactions for these.
  +1 ep     (--shapes rows) one endpoint added to a service (median of 5): in podnet's layout the service
            moves to another shared chain, a `goto` element of the dispatch map is rewritten.
The kube-proxy layout worker has a time limit (--nft-limit); a hit is reported as ">limit".

Run as root: `.venv/bin/python benchmarks/proxy_sync.py [--sizes 1000,5000,10000] [--limit 120]
[--modes iptables,nftables] [--nft-limit 120]` (about 10 min with both modes).

Scale run, upstream's own worst cases (issue 16, goal 3): `--shapes 44000x1,5000x50` (SERVICESxENDPOINTS)
replaces the rows above by the nftables rows at each shape (namespaces pn-scale-nft, pn-scale-nft-kp; goals:
podnet's full sync <= 30 s, one endpoint change <= 5 ms) and an iptables row for each of --iptables-shapes
(default 44000x1; pn-scale-ipt, pn-scale-ipt-kp; reported, no goal). kube-proxy's ways are limited to
--nft-limit / --limit (300 s each by default here). The kernel log is read from /dev/kmsg all along (never
cleared); soft lockups, RCU stalls and hung tasks logged during each run are printed in its row. Heavy: about 20-30 min.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from podnet.net import netns
from podnet.net.exec import in_netns
from podnet.proxy.backend import SyncError
from podnet.proxy.iptables.backend import IptablesBackend
from podnet.proxy.iptables.render import render
from podnet.proxy.iptables.restore import Restorer, Runner
from podnet.proxy.iptables.ruleset import full_text_parts
from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName
from podnet.proxy.settings import LocalDetector, ProxierSettings

NS = "pn-px-bench"
NS_KP = "pn-px-bench-kp"
ENDPOINTS = 10
FOREIGN = "*nat\n:DOCKER - [0:0]\n-A DOCKER -d 198.51.100.7/32 -j RETURN\n-A PREROUTING -j DOCKER\nCOMMIT\n"


def make_state(n: int, eps: int = ENDPOINTS) -> DesiredState:
    services = {}
    for i in range(n):
        name = ServicePortName(f"ns{i % 50}", f"svc{i}", "http", "TCP")
        e = [
            Endpoint(ip=f"10.{128 + ((i * eps + j) >> 16)}.{((i * eps + j) >> 8) & 255}.{(i * eps + j) & 255}",
                     port=8080, node_name="other")
            for j in range(eps)
        ]
        services[name] = ServicePort(name=name, cluster_ip=f"10.96.{(i >> 8) & 255}.{i & 255}", port=80,
                                     endpoints=tuple(sorted(e, key=str)))
    return DesiredState(node_name="bench", services=services)


SETTINGS = ProxierSettings(node_name="bench", node_ip="192.168.0.1", node_ips=("192.168.0.1",),
                           local_detector=LocalDetector.by_cidr("10.128.0.0/9"))


def fresh_ns(name: str) -> None:
    netns.remove(name)
    netns.create(name)
    netns.run(name, ["iptables-restore", "-w", "5", "--noflush"], input=FOREIGN)


def foreign_ok(name: str) -> bool:
    out = netns.run(name, ["iptables", "-w", "5", "-t", "nat", "-S", "DOCKER"], check=False).stdout
    pre = netns.run(name, ["iptables", "-w", "5", "-t", "nat", "-S", "PREROUTING"], check=False).stdout
    return "198.51.100.7" in out and "-j DOCKER" in pre


def cpu_seconds() -> float:
    """CPU time of this process and its finished children (iptables-restore, nft): unlike wall time it
    hardly moves when other work shares the 2 cores."""
    me, kids = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return me.ru_utime + me.ru_stime + kids.ru_utime + kids.ru_stime


def bench_podnet(n: int, eps: int = ENDPOINTS, ns: str = NS, timeout: float = 600.0) -> dict[str, float]:
    fresh_ns(ns)
    backend = IptablesBackend(Restorer(Runner(netns=ns, timeout=timeout)))
    state = make_state(n, eps)
    t, c = time.monotonic(), cpu_seconds()
    backend.full_sync(state, SETTINGS)
    full, full_cpu = time.monotonic() - t, cpu_seconds() - c
    t, c = time.monotonic(), cpu_seconds()
    backend.full_sync(state, SETTINGS)
    resync, resync_cpu = time.monotonic() - t, cpu_seconds() - c
    names = list(state.services)

    def change(k: int) -> float:
        spn = names[(k * 7919) % n]
        old_sp = state.services[spn]
        new_eps = tuple(sorted((*old_sp.endpoints[1:], Endpoint(ip=f"10.250.{k}.1", port=8080)), key=str))
        new_sp = replace(old_sp, endpoints=new_eps)
        t = time.monotonic()
        # what the sync loop does for one changed service: render old and new of just it, diff, restore
        backend.partial_sync(DesiredState("bench", services={spn: old_sp}),
                             DesiredState("bench", services={spn: new_sp}), SETTINGS, large_cluster=True)
        state.services[spn] = new_sp  # type: ignore[index]
        return time.monotonic() - t

    # Right after a full sync the kernel is still freeing the replaced ruleset, and the next transaction
    # waits for that: report it apart from the steady state (changes between periodic full syncs).
    after_full = change(0)
    time.sleep(3)
    times = [change(k) for k in range(1, 6)]
    ok = foreign_ok(ns)
    # the kernel must hold exactly what a fresh full render says (partial syncs included)
    want = render(state, SETTINGS, full=True, cleanup_stale=False)
    kernel = netns.run(ns, ["iptables-save", "-t", "nat"], check=False, timeout=timeout).stdout
    n_rules = sum(1 for line in kernel.splitlines() if line.startswith("-A KUBE-"))
    expect = want.nat_rules_written
    return {"full": full, "resync": resync, "one": statistics.median(times), "one_after_full": after_full,
            "full_cpu": full_cpu, "resync_cpu": resync_cpu, "foreign": ok,
            "rules_ok": n_rules == expect}


NS_FLOOR = "pn-px-bench-fl"


def restore_alone(n: int, eps: int = ENDPOINTS) -> float:
    """The floor of podnet's first full sync: iptables-restore of the same full input, already rendered and
    read from a file, into an empty namespace (no render, no listing, no Python feeding it)."""
    fresh_ns(NS_FLOOR)
    r = render(make_state(n, eps), SETTINGS, full=True, cleanup_stale=False)
    with tempfile.TemporaryFile("w+") as f:
        for part in full_text_parts(r.tables, cache_trick=True):
            f.write(part)
        f.seek(0)
        del r
        t = time.monotonic()
        p = subprocess.run(in_netns(NS_FLOOR, ["iptables-restore", "-w", "5", "--noflush"]), stdin=f,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, check=False)
        took = time.monotonic() - t
    if p.returncode != 0:
        raise SystemExit(f"iptables-restore alone failed: {p.stderr.strip()[:300]}")
    return took


def bench_kube_proxy(n: int, limit: float, eps: int = ENDPOINTS, ns: str = NS_KP) -> dict[str, float | None]:
    fresh_ns(ns)
    text = render(make_state(n, eps), SETTINGS, full=True).text
    out: dict[str, float | None] = {}
    for phase in ("first", "resync"):
        t, c = time.monotonic(), cpu_seconds()
        try:
            p = subprocess.run(netns.exec_argv(ns, ["iptables-restore", "-w", "5", "--noflush"]), input=text,
                               text=True, capture_output=True, timeout=limit)
            out[phase] = time.monotonic() - t if p.returncode == 0 else None
        except subprocess.TimeoutExpired:
            out[phase] = None  # limit hit
        out[f"{phase}_cpu"] = cpu_seconds() - c  # up to the kill when the limit was hit
        if out[phase] is None:
            break
    out["foreign"] = foreign_ok(ns)
    return out


def fmt(v: float | None, limit: float) -> str:
    return f">{limit:.0f} s (limit)" if v is None else f"{v:.2f} s"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1000,5000,10000")
    ap.add_argument("--limit", type=float, default=None,
                    help="time limit for one kube-proxy-way restore (default 120 s; 300 s with --shapes)")
    ap.add_argument("--modes", default="iptables,nftables")
    ap.add_argument("--nft-limit", type=float, default=None,
                    help="time limit for a kube-proxy nftables layout run (default 120 s; 300 s with --shapes)")
    ap.add_argument("--shapes", help="scale run instead: SERVICESxENDPOINTS,... e.g. 44000x1,5000x50 (see below)")
    ap.add_argument("--iptables-shapes", default="44000x1",
                    help="with --shapes: the shapes that also get an iptables row ('' for none)")
    ap.add_argument("--nft-worker", nargs=2, metavar=("LAYOUT", "SHAPE"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.nft_worker:
        return nft_worker(args.nft_worker[0], *parse_shape(args.nft_worker[1]))
    default_limit = 300.0 if args.shapes else 120.0
    args.limit = default_limit if args.limit is None else args.limit
    args.nft_limit = default_limit if args.nft_limit is None else args.nft_limit
    if args.shapes:
        return shapes_main(args)
    sizes = [int(s) for s in args.sizes.split(",")]
    modes = args.modes.split(",")
    rc = 0
    if "iptables" in modes:
        rc |= iptables_main(args, sizes)
    if "nftables" in modes:
        rc |= nftables_main(args, sizes)
    return rc


def iptables_main(args: argparse.Namespace, sizes: list[int]) -> int:
    rows = []
    try:
        for n in sizes:
            p = bench_podnet(n)
            netns.remove(NS)
            p["floor"] = restore_alone(n)
            netns.remove(NS_FLOOR)
            k = bench_kube_proxy(n, args.limit)
            netns.remove(NS_KP)
            rows.append((n, p, k))
            print(f"  {n} services done", file=sys.stderr, flush=True)
    finally:
        netns.remove(NS)
        netns.remove(NS_KP)
        netns.remove(NS_FLOOR)
    print(f"iptables proxy sync, services x {ENDPOINTS} endpoints (ClusterIP), iptables-nft backend; "
          f"load average at the end {os.getloadavg()[0]:.1f} (wall times stretch with it; cpu seconds much less)")
    hdr = ("services", "podnet full (cpu)", "iptables-restore alone (floor)", "full / floor", "podnet re-sync (cpu)",
           "podnet 1-svc", "1-svc right after full",
           "kube-proxy way (cpu)", "kp re-sync", "full speed-up wall / cpu", "foreign kept", "rules ok")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    for n, p, k in rows:
        kp = k["first"]
        more = "" if kp else ">"
        if kp is None and args.limit <= p["full"]:
            # kube-proxy's way was stopped before podnet's own time: a lower bound under 1x says nothing
            ratio = f"n/a (--limit {args.limit:g} s is below podnet's {p['full']:.1f} s)"
        else:
            ratio = (f"{more}{(kp or args.limit) / p['full']:.1f}x / "
                     f"{more}{k['first_cpu'] / max(p['full_cpu'], 1e-3):.1f}x")
        print(" | ".join([
            str(n), f"{fmt(p['full'], 0)} ({p['full_cpu']:.1f})", f"{p['floor']:.2f} s",
            f"{p['full'] / p['floor']:.2f}x", f"{fmt(p['resync'], 0)} ({p['resync_cpu']:.1f})",
            f"{p['one'] * 1000:.0f} ms", f"{p['one_after_full'] * 1000:.0f} ms",
            f"{fmt(kp, args.limit)} ({k['first_cpu']:.1f})", fmt(k.get("resync"), args.limit), ratio,
            "yes" if p["foreign"] and k["foreign"] else "NO", "yes" if p["rules_ok"] else "NO",
        ]))
    return 0 if all(p["foreign"] and p["rules_ok"] for _, p, _ in rows) else 1


# ------------------------------------------------------------------------------------------------------
# nftables rows

NFT_NS = "pn-nft-bench"
NFT_NS_KP = "pn-nft-bench-kp"
NFT_FOREIGN = ("add table ip pn-foreign\n"
               "add chain ip pn-foreign pre { type nat hook prerouting priority -150 ; }\n"
               "add rule ip pn-foreign pre ip daddr 198.51.100.7 return\n")


def _changed_endpoint(sp: ServicePort, k: int) -> ServicePort:
    eps = (*sp.endpoints[1:], Endpoint(ip=f"10.250.{k}.1", port=8080))
    return replace(sp, endpoints=tuple(sorted(eps, key=str)))


def _extra_service(k: int, n_eps: int = ENDPOINTS) -> ServicePort:
    name = ServicePortName("bench-extra", f"x{k}", "http", "TCP")
    eps = tuple(sorted((Endpoint(ip=f"10.251.{k}.{j + 1}", port=8080) for j in range(n_eps)), key=str))
    return ServicePort(name=name, cluster_ip=f"10.97.0.{k + 1}", port=80, endpoints=eps)


def nft_worker(layout: str, n: int, eps: int = ENDPOINTS) -> int:
    """Runs inside the benchmark namespace (libnftables acts in the caller's namespace); prints JSON."""
    import json

    from podnet.proxy.nftables.backend import NftablesBackend
    from podnet.proxy.nftables.kubeproxy import render_kp, render_kp_delta
    from podnet.proxy.nftables.layout import render as render_nft
    from podnet.proxy.nftables.nft import Nft

    nft = Nft()
    state = make_state(n, eps)
    names = list(state.services)
    out: dict[str, object] = {"binding": nft.uses_binding}

    def one(old: dict, new: dict) -> float:
        old_st, new_st = DesiredState("bench", services=old), DesiredState("bench", services=new)
        t = time.monotonic()
        if layout == "podnet":
            backend.partial_sync(old_st, new_st, SETTINGS, large_cluster=True)
        else:
            nft.run(render_kp_delta(old_st, new_st, SETTINGS).text)
        return time.monotonic() - t

    t, c = time.monotonic(), time.process_time()
    if layout == "podnet":
        backend = NftablesBackend(nft=nft)
        backend.full_sync(state, SETTINGS)
    else:
        nft.run(render_kp(state, SETTINGS))
    # CPU time of this process includes the kernel's work (netlink is processed in the sender's context);
    # on a shared, overloaded host it is the steadier number.
    out["full"], out["full_cpu"] = time.monotonic() - t, time.process_time() - c
    t = time.monotonic()
    if layout == "podnet":
        render_nft(state, SETTINGS)
    else:
        render_kp(state, SETTINGS)
    out["render"] = time.monotonic() - t
    print(json.dumps({"partial": out}), flush=True)
    if layout == "podnet":
        t, c = time.monotonic(), time.process_time()
        backend.full_sync(state, SETTINGS)
        out["resync"], out["resync_cpu"] = time.monotonic() - t, time.process_time() - c
    times = []
    for k in range(5):
        spn = names[(k * 7919) % n]
        new_sp = _changed_endpoint(state.services[spn], k)
        times.append(one({spn: state.services[spn]}, {spn: new_sp}))
        state.services[spn] = new_sp  # type: ignore[index]
    out["one_ep"], out["one_ep_max"] = statistics.median(times), max(times)
    grown = []
    for k in range(5):
        # a scale-up: one more endpoint, so the service moves to another shared chain in podnet's layout
        spn = names[(k * 7919 + 13) % n]
        sp = state.services[spn]
        new_sp = replace(sp, endpoints=tuple(sorted((*sp.endpoints, Endpoint(ip=f"10.252.{k}.1", port=8080)), key=str)))
        grown.append(one({spn: sp}, {spn: new_sp}))
        state.services[spn] = new_sp  # type: ignore[index]
    out["grow_ep"], out["grow_ep_max"] = statistics.median(grown), max(grown)
    adds, dels = [], []
    for k in range(5):
        sp = _extra_service(k, eps)
        adds.append(one({}, {sp.name: sp}))
    for k in range(5):
        sp = _extra_service(k, eps)
        dels.append(one({sp.name: sp}, {}))
    out["add_svc"], out["del_svc"] = statistics.median(adds), statistics.median(dels)
    if layout == "podnet":
        # the last changed service and one the benchmark never touched
        out["kernel_ok"] = _kernel_has(state.services[names[(4 * 7919) % n]]) and _kernel_has(
            state.services[names[n // 2 + 1]])
    print(json.dumps({"done": out}), flush=True)
    return 0


def _kernel_has(sp: ServicePort) -> bool:
    """The kernel maps a changed service's IP to exactly its endpoints (point lookups, not a listing)."""
    import nftables  # type: ignore[import-not-found]

    ctx = nftables.Nftables()
    keys = ", ".join(f"{sp.cluster_ip} . tcp . {sp.port} . {i}" for i in range(len(sp.endpoints)))
    rc, out, _ = ctx.cmd(f"get element ip podnet service-endpoints-tcp {{ {keys} }}")
    got = set(re.findall(r": (\S+) \. (\d+)", out))
    rc2, _, _ = ctx.cmd(f"get element ip podnet service-ips {{ {sp.cluster_ip} . tcp . {sp.port} }}")
    return rc == 0 and rc2 == 0 and got == {(e.ip, str(e.port)) for e in sp.endpoints}


def _nft_fresh(name: str) -> None:
    netns.remove(name)
    netns.create(name)
    netns.run(name, ["nft", "-f", "-"], input=NFT_FOREIGN)


def _nft_foreign_ok(name: str) -> bool:
    p = netns.run(name, ["nft", "list", "table", "ip", "pn-foreign"], check=False, timeout=300)
    ok = "ip daddr 198.51.100.7 return" in p.stdout and "hook prerouting priority" in p.stdout
    if not ok:
        print(f"  foreign table in {name}: exit {p.returncode}: {p.stdout!r} {p.stderr[:500]!r}", file=sys.stderr)
    return ok


def bench_nft(layout: str, n: int, limit: float, eps: int = ENDPOINTS, ns: str | None = None) -> dict[str, object]:
    import json

    ns = ns or (NFT_NS if layout == "podnet" else NFT_NS_KP)
    _nft_fresh(ns)
    argv = netns.exec_argv(ns, [sys.executable, __file__, "--nft-worker", layout, f"{n}x{eps}"])
    result: dict[str, object] = {}
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True)
    try:
        lines, _ = p.communicate(timeout=limit)
    except subprocess.TimeoutExpired:
        p.kill()
        lines, _ = p.communicate()
        result["limit_hit"] = True
    for line in (lines or "").splitlines():
        msg = json.loads(line)
        result.update(msg.get("done") or msg.get("partial") or {})
    result["foreign"] = _nft_foreign_ok(ns)
    netns.remove(ns)
    return result


def _ms(r: dict[str, Any], key: str, digits: int) -> str:
    """A step's time in ms; ">limit" when the layout's time limit stopped it before that step, else "-"."""
    v = r.get(key)
    return (">limit" if r.get("limit_hit") else "-") if v is None else f"{v * 1000:.{digits}f} ms"


def _ratio(p: dict[str, Any], k: dict[str, Any], key: str, limit: float) -> str:
    """kube-proxy's layout's time over podnet's for one step ("-" when one of them has none)."""
    pv, kv = p.get(key), k.get(key)
    if not pv:
        return "-"
    if kv is None:
        # only the full load can be bounded by the limit; later steps were simply not reached
        return f">{limit / pv:.0f}x" if k.get("limit_hit") and key == "full" else "-"
    return f"{kv / pv:.0f}x"


def nftables_main(args: argparse.Namespace, sizes: list[int]) -> int:
    rows = []
    try:
        for n in sizes:
            p = bench_nft("podnet", n, 600.0)
            k = bench_nft("kube-proxy", n, args.nft_limit)
            rows.append((n, p, k))
            print(f"  nftables {n} services done", file=sys.stderr, flush=True)
    finally:
        netns.remove(NFT_NS)
        netns.remove(NFT_NS_KP)

    def sec(r: dict, key: str) -> str:
        v = r.get(key)
        return f">{args.nft_limit:.0f} s (limit)" if v is None and r.get("limit_hit") else (
            "-" if v is None else f"{v:.2f} s")

    def ms(r: dict, key: str) -> str:
        return _ms(r, key, 1)

    def ratio(p: dict, k: dict, key: str) -> str:
        return _ratio(p, k, key, args.nft_limit)

    print()
    print(f"nftables proxy sync, services x {ENDPOINTS} endpoints (ClusterIP): podnet layout vs kube-proxy layout "
          "(same libnftables context)")
    hdr = ("services", "layout", "full (render; cpu)", "re-sync", "1-ep", "+svc", "-svc", "foreign kept", "kernel ok")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    ok = True
    for n, p, k in rows:
        for name, r in (("podnet", p), ("kube-proxy", k)):
            full = sec(r, "full")
            if r.get("render") is not None:
                full += f" ({r['render']:.2f}; cpu {r['full_cpu']:.2f})"
            resync = sec(r, "resync") + (f" (cpu {r['resync_cpu']:.2f})" if r.get("resync_cpu") else "")
            print(" | ".join([str(n), name, full, resync, ms(r, "one_ep"), ms(r, "add_svc"),
                              ms(r, "del_svc"), "yes" if r.get("foreign") else "NO",
                              _yes_no(r.get("kernel_ok"))]))
            ok = ok and bool(r.get("foreign"))
        print(" | ".join([str(n), "speed-up", ratio(p, k, "full"), "", ratio(p, k, "one_ep"), ratio(p, k, "add_svc"),
                          ratio(p, k, "del_svc"), "", ""]))
        ok = ok and p.get("binding") is True and p.get("kernel_ok") is True
    return 0 if ok else 1


# ------------------------------------------------------------------------------------------------------
# Scale run (--shapes): upstream's own worst cases

SCALE_NFT_NS = "pn-scale-nft"
SCALE_NFT_NS_KP = "pn-scale-nft-kp"
SCALE_IPT_NS = "pn-scale-ipt"
SCALE_IPT_NS_KP = "pn-scale-ipt-kp"
SCALE_NAMESPACES = (SCALE_NFT_NS, SCALE_NFT_NS_KP, SCALE_IPT_NS, SCALE_IPT_NS_KP)
GOAL_FULL = 30.0  # s: podnet's nftables full sync at either shape
GOAL_ONE = 0.005  # s: one change (one endpoint replaced)
PODNET_LIMIT = 900.0  # s: podnet's own runs are bounded too, so a regression cannot hang the benchmark
UPSTREAM = {(44000, 1): "kubernetes#139513: 16 min 44 s", (5000, 50): "kubernetes#135639: 13 min 15 s"}
KERNEL_TROUBLE = re.compile(r"soft lockup|rcu\S* .{0,40}stall|rcu_\w+ detected|hung task|blocked for more than",
                            re.IGNORECASE)
def parse_shape(text: str) -> tuple[int, int]:
    """"44000x1" -> (44000, 1); a bare "5000" has the default endpoint count."""
    n, _, eps = text.strip().partition("x")
    return int(n), int(eps or ENDPOINTS)


class KernelLog:
    """Every kernel message logged while the benchmark runs, read from /dev/kmsg as it comes.

    Read-only: the log is never cleared. Reading `dmesg` once at the end is not enough: a soft lockup's
    stack traces and the other workers' veth messages overwrite the ring buffer within minutes. A thread
    drains /dev/kmsg every 0.2 s (a read returns one record; EPIPE means records were overwritten).
    """

    def __init__(self) -> None:
        self.lines: list[str] = []
        self._lock = threading.Lock()
        try:
            self._fd = os.open("/dev/kmsg", os.O_RDONLY | os.O_NONBLOCK)
            os.lseek(self._fd, 0, os.SEEK_END)  # only what is logged from now on
        except OSError as e:
            self._fd = -1
            self.lines.append(f"kernel log unreadable: {e}")
            return
        threading.Thread(target=self._loop, name="kmsg", daemon=True).start()

    def _loop(self) -> None:
        while True:
            self.drain()
            time.sleep(0.2)

    def drain(self) -> None:
        with self._lock:
            while self._fd >= 0:
                try:
                    record = os.read(self._fd, 8192).decode(errors="replace")
                except BlockingIOError:
                    return
                except BrokenPipeError:
                    self.lines.append("(kernel log records lost: the ring buffer overran the reader)")
                    continue
                head, _, text = record.partition(";")
                fields = head.split(",")
                stamp = int(fields[2]) / 1e6 if len(fields) > 2 and fields[2].isdigit() else 0.0
                self.lines.append(f"[{stamp:.6f}] {text.splitlines()[0] if text else ''}")

    def mark(self) -> int:
        """A position in the log: everything logged before this call is behind it."""
        self.drain()
        return len(self.lines)

    def trouble(self, since: int = 0) -> list[str]:
        """Soft lockups, RCU stalls, hung tasks (and lost or unreadable log) after position `since`."""
        self.drain()
        return [line for line in self.lines[since:] if KERNEL_TROUBLE.search(line) or "kernel log" in line]


def _watched(log: KernelLog, run: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """One benchmark run, `run(*args, **kwargs)`, with the kernel log watched during it."""
    since = log.mark()
    try:
        result = dict(run(*args, **kwargs))
    except SyncError as e:  # podnet's iptables path past its time limit, or refused
        result = {"error": str(e).splitlines()[0][:120]}
    result["dmesg"] = log.trouble(since)
    return result


def _dmesg_cell(lines: list[str]) -> str:
    if not lines:
        return "none"
    shown = "; ".join(line.strip() for line in lines[:3])
    return shown + (f" (+{len(lines) - 3} more)" if len(lines) > 3 else "")


def shapes_main(args: argparse.Namespace) -> int:
    shapes = [parse_shape(x) for x in args.shapes.split(",")]
    modes = args.modes.split(",")
    ipt_shapes = [parse_shape(x) for x in args.iptables_shapes.split(",") if x.strip()] if "iptables" in modes else []
    log = KernelLog()
    nft_rows: list[tuple[int, int, dict[str, Any], dict[str, Any]]] = []
    ipt_rows: list[tuple[int, int, dict[str, Any], dict[str, Any]]] = []
    try:
        for n, eps in shapes if "nftables" in modes else []:
            p = _watched(log, bench_nft, "podnet", n, PODNET_LIMIT, eps, SCALE_NFT_NS)
            k = _watched(log, bench_nft, "kube-proxy", n, args.nft_limit, eps, SCALE_NFT_NS_KP)
            nft_rows.append((n, eps, p, k))
            print(f"  nftables {n}x{eps} done", file=sys.stderr, flush=True)
        for n, eps in ipt_shapes:
            p = _watched(log, bench_podnet, n, eps, SCALE_IPT_NS, timeout=PODNET_LIMIT)
            netns.remove(SCALE_IPT_NS)
            k = _watched(log, bench_kube_proxy, n, args.limit, eps, SCALE_IPT_NS_KP)
            netns.remove(SCALE_IPT_NS_KP)
            ipt_rows.append((n, eps, p, k))
            print(f"  iptables {n}x{eps} done", file=sys.stderr, flush=True)
    finally:
        for ns in SCALE_NAMESPACES:
            netns.remove(ns)
    # A namespace's rules are freed by the kernel after it is deleted, and the soft-lockup watchdog speaks
    # after 20 s or more: the whole run's log is read once more after a pause.
    time.sleep(25)
    ok = _print_nft_shapes(nft_rows, args.nft_limit)
    ok = _print_ipt_shapes(ipt_rows, args.limit) and ok
    print(f"\nkernel log over the whole run (until 25 s after the last namespace was deleted): "
          f"{_dmesg_cell(log.trouble())}; load average at the end {os.getloadavg()[0]:.1f}")
    return 0 if ok else 1


def _yes_no(value: object) -> str:
    return "-" if value is None else ("yes" if value else "NO")


def _goal(value: object, goal: float) -> str:
    if not isinstance(value, float):
        return "NOT met (no figure)"
    return "met" if value <= goal else "NOT met"


def _print_nft_shapes(rows: list[tuple[int, int, dict[str, Any], dict[str, Any]]], limit: float) -> bool:
    def sec(r: dict[str, Any], key: str, cap: float) -> str:
        v = r.get(key)
        if v is None:
            return f">{cap:.0f} s (limit)" if r.get("limit_hit") else "-"
        return f"{v:.2f} s"

    def ms(r: dict[str, Any], key: str) -> str:
        return _ms(r, key, 2)

    def ratio(p: dict[str, Any], k: dict[str, Any], key: str) -> str:
        return _ratio(p, k, key, limit)

    print("\nnftables proxy sync at upstream's worst cases (ClusterIP): podnet layout vs kube-proxy's nftables layout "
          f"in the same run (one libnftables context each; kube-proxy's layout limited to {limit:.0f} s)")
    hdr = ("shape", "layout", "full (render; cpu)", f"full <= {GOAL_FULL:.0f} s", "re-sync", "1-ep median (max)",
           f"1-ep <= {GOAL_ONE * 1000:.0f} ms", "+1 ep median (max)", "+svc", "-svc", "kernel ok", "foreign kept",
           "dmesg: soft lockup / RCU stall / hung task")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    ok = True
    for n, eps, p, k in rows:
        shape = f"{n} x {eps}"
        for name, r, cap in (("podnet", p, PODNET_LIMIT), ("kube-proxy", k, limit)):
            full = sec(r, "full", cap)
            if r.get("render") is not None:
                full += f" ({r['render']:.2f}; cpu {r['full_cpu']:.2f})"
            one, grow = (ms(r, key) + (f" ({r[key + '_max'] * 1000:.2f})" if r.get(key + "_max") is not None else "")
                         for key in ("one_ep", "grow_ep"))
            podnet = name == "podnet"
            print(" | ".join([
                shape, name, full, _goal(r.get("full"), GOAL_FULL) if podnet else "-", sec(r, "resync", cap), one,
                _goal(r.get("one_ep"), GOAL_ONE) if podnet else "-", grow, ms(r, "add_svc"), ms(r, "del_svc"),
                _yes_no(r.get("kernel_ok")), "yes" if r.get("foreign") else "NO",
                _dmesg_cell(r["dmesg"]),
            ]))
        print(" | ".join([shape, "speed-up", ratio(p, k, "full"), "", "", ratio(p, k, "one_ep"), "",
                          ratio(p, k, "grow_ep"), ratio(p, k, "add_svc"), ratio(p, k, "del_svc"), "", "", ""]))
        if (n, eps) in UPSTREAM:
            print(f"{shape} | upstream | {UPSTREAM[(n, eps)]} full sync (reported, other hardware)"
                  + " |" * (len(hdr) - 3))
        ok = ok and p.get("binding") is True and p.get("kernel_ok") is True and bool(p.get("foreign"))
        ok = ok and bool(k.get("foreign")) and not p["dmesg"]
    return ok


def _print_ipt_shapes(rows: list[tuple[int, int, dict[str, Any], dict[str, Any]]], limit: float) -> bool:
    if not rows:
        return True
    print(f"\niptables proxy sync (iptables-nft backend, reported, no goal): podnet vs kube-proxy's way "
          f"(one iptables-restore of the same text, limited to {limit:.0f} s)")
    hdr = ("shape", "podnet full (cpu)", "podnet re-sync (cpu)", "podnet 1-svc median", "1-svc right after full",
           "kube-proxy way (cpu)", "kp re-sync", "full speed-up", "foreign kept", "rules ok", "dmesg podnet / kp")
    print(" | ".join(hdr))
    print(" | ".join("---" for _ in hdr))
    ok = True
    for n, eps, p, k in rows:
        shape = f"{n} x {eps}"
        if "error" in p:
            podnet_cells = [f"failed: {p['error']}", "-", "-", "-"]
            ratio = "-"
        else:
            podnet_cells = [f"{p['full']:.2f} s ({p['full_cpu']:.1f})", f"{p['resync']:.2f} s ({p['resync_cpu']:.1f})",
                            f"{p['one'] * 1000:.0f} ms", f"{p['one_after_full'] * 1000:.0f} ms"]
            kp = k.get("first")
            if kp is None and limit <= p["full"]:
                ratio = f"n/a (--limit {limit:g} s is below podnet's {p['full']:.1f} s)"
            else:
                ratio = f"{'' if kp else '>'}{(kp or limit) / p['full']:.1f}x"
        print(" | ".join([
            shape, *podnet_cells, f"{fmt(k.get('first'), limit)} ({k['first_cpu']:.1f})", fmt(k.get("resync"), limit),
            ratio, "yes" if p.get("foreign") and k.get("foreign") else "NO",
            _yes_no(p.get("rules_ok")),
            f"{_dmesg_cell(p['dmesg'])} / {_dmesg_cell(k['dmesg'])}",
        ]))
        ok = ok and bool(p.get("foreign")) and bool(p.get("rules_ok"))
    return ok


if __name__ == "__main__":
    sys.exit(main())
