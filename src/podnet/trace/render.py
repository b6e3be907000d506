"""A trace for a person: the most likely path one hop a line, then every outcome with its probability."""

from __future__ import annotations

from typing import TYPE_CHECKING

from podnet.trace.model import Result

if TYPE_CHECKING:  # verify.py runs probes in the lab's namespaces: imported only where verifying is asked for
    from podnet.trace.verify import Report


def text(r: Result) -> str:
    f = r.flow
    lines = [f"trace {f.proto} {f.src}:{f.sport or '*'} -> {f.dst}:{f.dport}: {r.verdict}"]
    if r.conntrack:
        lines.append(f"  conntrack decides: {r.conntrack['entry']}" + ("  [STALE]" if r.conntrack.get("stale") else ""))
    for i, o in enumerate(r.outcomes):
        lines.append("")
        lines.append(f"outcome {i + 1}: {o.verdict} {o.where}" + (f" ({o.endpoint})" if o.endpoint else "")
                     + f"  probability {o.probability:.4g}" + (f"  reason: {o.reason}" if o.reason else ""))
        if i == 0 or len(r.outcomes) <= 4:
            for h in o.hops:
                where = f"{h.node:<10}" if h.node else ""
                lines.append(f"  {where} {h.step:<9} {h.detail}")
    if r.warnings:
        lines.append("")
        lines += [f"warning: {w}" for w in r.warnings]
    return "\n".join(lines)


def verify_text(rep: Report) -> str:
    lines = [""]
    lines.append(f"verify: {'the kernel agrees' if rep.agree else 'DISAGREEMENT'}: {rep.summary}")
    for d in rep.disagreements:
        lines.append(f"  - {d}")
    if rep.attempts > 1:
        lines.append(f"  ({rep.attempts} rounds: the kernel's trace of the earlier ones was incomplete)")
    return "\n".join(lines)
