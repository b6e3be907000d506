"""A trace for the page: `podnet trace`'s own code, and the words the form suggests.

A prediction runs in-process (the calls cli/trace.py makes; blocking, so the server runs it in a thread).
`--verify` runs the CLI in a child process instead: it puts trace rules into the nodes' kernels and turns
SIGTERM into an exception to take them out again, which only a main thread can do, and a child keeps that
cleanup its own if the page's server is stopped while probes are out.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from podnet.trace.errors import TraceError
from podnet.ui.model import LabView

PROTOS = ("tcp", "udp", "icmp")
VERIFY_TIMEOUT = 120.0
DISAGREE = 3  # `podnet trace --verify` exits 3 when the kernel took another path (its JSON is still printed)


def run(lab: str, src: str, dst: str, proto: str = "tcp", sport: int | None = None) -> dict[str, Any]:
    """What `podnet trace --lab LAB --from SRC --to DST -o json` prints, as a dict."""
    from podnet.trace import resolve, snapshot, walk

    cluster = snapshot.read_cluster(lab)
    source, pkt = resolve.flow(cluster, src, dst, proto, sport)
    return walk.walk(cluster, source, pkt).to_json()


def argv(lab: str, src: str, dst: str, proto: str, sport: int | None, *, verify: bool) -> list[str]:
    from podnet.lab.supervisor import podnet_exe

    out = [podnet_exe(), "trace", "--lab", lab, "--from", src, "--to", dst, "--proto", proto, "-o", "json"]
    if sport is not None:
        out += ["--sport", str(sport)]
    return out + (["--verify"] if verify else [])


async def run_verified(lab: str, src: str, dst: str, proto: str = "tcp", sport: int | None = None,
                       timeout: float = VERIFY_TIMEOUT) -> dict[str, Any]:
    """`podnet trace ... -o json --verify` in a child process: the prediction and the kernel's verdict."""
    proc = await asyncio.create_subprocess_exec(*argv(lab, src, dst, proto, sport, verify=True),
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    except (TimeoutError, asyncio.CancelledError):
        proc.terminate()  # SIGTERM: the child removes its trace rules on the way out
        try:
            await asyncio.wait_for(proc.wait(), 20)
        except TimeoutError:
            proc.kill()
            await proc.wait()
        raise TraceError(f"podnet trace --verify: no answer within {timeout:.0f} s") from None
    if proc.returncode not in (0, DISAGREE):
        lines = [ln.removeprefix("error: ") for ln in err.decode(errors="replace").splitlines() if ln.strip()]
        raise TraceError("; ".join(lines) or f"podnet trace --verify exited {proc.returncode}")
    try:
        return json.loads(out)
    except ValueError:
        raise TraceError(f"podnet trace --verify printed no JSON: {out[:200]!r}") from None


def _pod_word(ref: str) -> str:
    ns, _, name = ref.partition("/")
    return name if ns == "default" else ref


def choices(view: LabView) -> dict[str, list[str]]:
    """Words `podnet trace` accepts, for the form's suggestions: sources (pods, nodes) and destinations
    (each Service port, each endpoint pod on its port, each NodePort on every node)."""
    sources = [_pod_word(p.ref) for n in view.nodes for p in n.pods if p.ip] + [n.name for n in view.nodes]
    dests: list[str] = []
    for s in view.services:
        svc = f"svc/{s.name}" if s.namespace == "default" else f"svc/{s.ref}"
        if s.cluster_ip and s.cluster_ip != "None":
            for p in s.ports:
                dests.append(svc if len(s.ports) == 1 else f"{svc}:{p.port}")
        for p in s.ports:
            for e in p.endpoints:
                if e.pod:
                    dests.append(f"{_pod_word(e.pod)}:{e.address.rpartition(':')[2]}")
            if p.node_port:
                dests += [f"{n.internal_ip}:{p.node_port}" for n in view.nodes if n.internal_ip]
    return {"from": list(dict.fromkeys(sources)), "to": list(dict.fromkeys(dests))}
