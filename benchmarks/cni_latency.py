"""CNI ADD/DEL latency: podnet-bridge + podnet-host-local vs the reference bridge + host-local (Debian 1.1.1).

Same config (bridge cni0, isGateway, ipMasq, host-local /24 with a default route), same machine, same
run, calls interleaved so background noise hits both alike. Each side has its own throw-away host
namespace; the plugin process is put into it with setns (no `ip netns exec` in the measured time).
Goals (issue 16): the median ADD <= 1.5x the reference's, the median DEL <= 1.2x. Also prints the import
time of the plugin path and the bare interpreter start, both with the flags the plugin's script runs
python with (`make venv` writes launchers that run python -I -S, see src/podnet/cni/launcher.py).

    sudo .venv/bin/python benchmarks/cni_latency.py [iterations]
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "src"))

from podnet.net import netns  # noqa: E402

REF_BIN = "/usr/lib/cni"
VENV_BIN = os.path.dirname(sys.executable)
_libc = ctypes.CDLL(None, use_errno=True)


def podnet_path(tmp: str) -> str:
    d = os.path.join(tmp, "bin")
    os.makedirs(d)
    os.symlink(os.path.join(VENV_BIN, "podnet-bridge"), os.path.join(d, "bridge"))
    os.symlink(os.path.join(VENV_BIN, "podnet-host-local"), os.path.join(d, "host-local"))
    return d


def timed_call(host_ns: str, cni_path: str, cmd: str, conf: dict, cid: str, cont_ns: str) -> float:
    fd = os.open(f"/run/netns/{host_ns}", os.O_RDONLY)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS=f"/run/netns/{cont_ns}", CNI_IFNAME="eth0",
               CNI_PATH=cni_path)

    def enter() -> None:
        if _libc.setns(fd, 0x40000000) != 0:
            raise OSError(ctypes.get_errno(), "setns")

    data = json.dumps(conf).encode()
    t0 = time.perf_counter()
    proc = subprocess.run([os.path.join(cni_path, "bridge")], input=data, env=env, capture_output=True,
                          preexec_fn=enter, check=False)
    dt = time.perf_counter() - t0
    os.close(fd)
    if proc.returncode != 0:
        raise SystemExit(f"{cni_path} {cmd} failed: {proc.stdout.decode()} {proc.stderr.decode()}")
    return dt * 1000


def p95(xs: list[float]) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(round(0.95 * (len(s) - 1))))]


def plugin_flags() -> list[str]:
    """The interpreter flags VENV_BIN/podnet-bridge runs python with: launcher.py's, or none (pip's script)."""
    from podnet.cni import launcher

    with open(os.path.join(VENV_BIN, "podnet-bridge"), encoding="utf-8", errors="replace") as f:
        head = " ".join(f.read(4096).splitlines()[:3])
    return [launcher.FLAGS] if f" {launcher.FLAGS} " in head else []


def import_ms(flags: list[str]) -> tuple[float, float]:
    """(all imports incl. interpreter startup ones, podnet's plugin modules with what they pull in), ms."""
    from podnet.cni import launcher

    code = (f"import sys; sys.path.append({launcher.podnet_root()!r}); "
            "import podnet.cni.main, podnet.cni.bridge, podnet.cni.host_local")
    out = subprocess.run([sys.executable, *flags, "-X", "importtime", "-c", code],
                         capture_output=True, text=True, check=True).stderr
    total = ours = 0
    for line in out.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[0].startswith("import time:") and not parts[2].startswith(" " * 2):
            try:
                us = int(parts[1])
            except ValueError:
                continue
            total += us
            if parts[2].strip().startswith("podnet"):
                ours += us
    return total / 1000, ours / 1000


def main() -> None:
    if os.geteuid() != 0:
        raise SystemExit("needs root (network namespaces)")
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 30
    # pip installs compile bytecode; this checkout may run with PYTHONDONTWRITEBYTECODE, so do it here
    subprocess.run([sys.executable, "-m", "compileall", "-q", os.path.join(ROOT, "src", "podnet", "cni"),
                    os.path.join(ROOT, "src", "podnet", "net")], check=True, capture_output=True)
    tmp = tempfile.mkdtemp(prefix="pn-cni-bench-")
    sides = {"reference": REF_BIN, "podnet": podnet_path(tmp)}
    names: list[str] = []
    times: dict[tuple[str, str], list[float]] = {(s, op): [] for s in sides for op in ("ADD", "DEL")}
    try:
        hosts, conts = {}, {}
        for s in sides:
            hosts[s] = f"pn-cni-bench-{s[:3]}-h"
            conts[s] = f"pn-cni-bench-{s[:3]}-c"
            for name in (hosts[s], conts[s]):
                netns.create(name)
                names.append(name)
        confs = {s: {"cniVersion": "1.0.0", "name": "benchnet", "type": "bridge", "bridge": "cni0", "isGateway": True,
                     "ipMasq": True, "ipam": {"type": "host-local", "subnet": "10.250.0.0/24",
                                              "routes": [{"dst": "0.0.0.0/0"}],
                                              "dataDir": os.path.join(tmp, s)}} for s in sides}
        for i in range(n + 2):
            for s in (sides if i % 2 == 0 else list(reversed(list(sides)))):
                a = timed_call(hosts[s], sides[s], "ADD", confs[s], f"bench{i}", conts[s])
                d = timed_call(hosts[s], sides[s], "DEL", confs[s], f"bench{i}", conts[s])
                if i >= 2:  # the first rounds create the bridge and warm caches
                    times[(s, "ADD")].append(a)
                    times[(s, "DEL")].append(d)
    finally:
        for name in reversed(names):
            netns.remove(name)
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"CNI latency, {n} ADD+DEL pairs per side (ms; ratio = podnet / reference)")
    print(f"{'op':<5}{'ref median':>12}{'ref p95':>10}{'podnet median':>15}{'podnet p95':>12}{'ratio med':>11}"
          f"{'ratio p95':>11}  goal (issue 16: the medians' ratio)")
    for op in ("ADD", "DEL"):
        r, p = times[("reference", op)], times[("podnet", op)]
        rm, pm = statistics.median(r), statistics.median(p)
        goal = GOALS[op]
        print(f"{op:<5}{rm:>12.1f}{p95(r):>10.1f}{pm:>15.1f}{p95(p):>12.1f}{pm / rm:>11.2f}{p95(p) / p95(r):>11.2f}"
              f"  <= {goal:.1f}x: {'met' if pm / rm <= goal else 'NOT met'}")
    flags = plugin_flags()
    starts = []
    for _ in range(5):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, *flags, "-c", "pass"], check=True)
        starts.append((time.perf_counter() - t0) * 1000)
    total, ours = min(import_ms(flags) for _ in range(5))
    print(f"python {' '.join(flags) or '(no flags: pip console script)'}: import time (-X importtime, best of 5): "
          f"podnet.cni.main+bridge+host_local {ours:.1f} ms, all imports incl. startup {total:.1f} ms; "
          f"bare interpreter start {min(starts):.1f} ms (best of 5)")


GOALS = {"ADD": 1.5, "DEL": 1.2}  # issue 16, goal 5


if __name__ == "__main__":
    main()
