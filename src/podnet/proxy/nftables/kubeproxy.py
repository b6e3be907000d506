"""Pure renderer of kube-proxy's own nftables layout (`ip kube-proxy`), for `--layout kube-proxy`.

It exists for two reasons: people migrating from kube-proxy can diff what podnet would program against
what they run today, and it is the baseline `benchmarks/proxy_sync.py` measures podnet's layout against.
The output is what kube-proxy's fake nftables (knftables.Fake) dumps after a sync, line for line, so it
compares equal to shared/reference/kube-proxy-golden/nftables-* after sort_nftables_transaction().

The vocabulary (vocab.py) and the per-service-port chains (kpchains.py) are shared with podnet's own
layout (layout.py).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from podnet.proxy.model import DesiredState, ServicePort
from podnet.proxy.nftables.kpchains import kp_base, kp_service_objects
from podnet.proxy.nftables.vocab import KP_TABLE, Family, ServiceObjects, unique_elements
from podnet.proxy.settings import ProxierSettings


def kp_objects(desired: DesiredState, settings: ProxierSettings) -> dict[str, ServiceObjects]:
    """kube-proxy's per-service objects of a whole desired state, keyed by "ns/name:port/proto"."""
    fam = Family.of(desired.ip_family)
    zone = desired.topology_zone
    return {_key(sp): kp_service_objects(sp, settings, fam, zone) for sp in desired.services.values()}


def _key(sp: ServicePort) -> str:
    return f"{sp.name}/{sp.protocol}"


def render_kp(desired: DesiredState, settings: ProxierSettings, *, service_cidrs: Iterable[str] = (),
              stale_chains: Iterable[str] = ()) -> str:
    """The full `ip kube-proxy` table as knftables.Fake dumps it after a sync.

    `stale_chains` are service chains kube-proxy has flushed but not yet deleted (they stay, empty,
    for a second after they stop being used).
    """
    fam = Family.of(desired.ip_family)
    t = f"{fam.nfproto} {KP_TABLE}"
    decl, rules, elements = kp_base(settings, fam, service_cidrs=service_cidrs)
    out = [*decl, *rules, *elements]
    objs = kp_objects(desired, settings)
    emitted: set[str] = set()
    for o in objs.values():
        for name, body in o.sets.items():
            out.append(f"add set {t} {name} {{ {body} }}")
        for name, chain_rules in o.chains.items():
            out.append(f"add chain {t} {name}")
            emitted.add(name)
            out += [f"add rule {t} {name} {r}" for r in chain_rules]
        out += [f"add element {t} {e.container} {{ {e.body()} }}" for e in unique_elements(o.elements)]
    out += [f"add chain {t} {name}" for name in sorted(set(stale_chains) - emitted)]
    return "\n".join(out) + "\n"


def kp_chain_names(desired: DesiredState, settings: ProxierSettings) -> set[str]:
    return {name for o in kp_objects(desired, settings).values() for name in o.chains}


@dataclass(frozen=True)
class KpDelta:
    text: str
    operations: int
    stale_chains: frozenset[str]  # flushed now, to be deleted by a later transaction


def render_kp_delta(old: DesiredState, new: DesiredState, settings: ProxierSettings) -> KpDelta:
    """kube-proxy's partial-sync transaction for the services in `old`/`new` (only changed ones given).

    As kube-proxy (PR #126013): map/set elements are diffed (a changed value is deleted and re-added),
    every chain of a changed service is added, flushed and refilled, chains no longer used are flushed
    (and deleted in a later transaction), affinity sets no longer used are deleted at once.
    """
    fam = Family.of(new.ip_family)
    t = f"{fam.nfproto} {KP_TABLE}"
    o_objs = kp_objects(old, settings)
    n_objs = kp_objects(new, settings)
    o_el = {(e.container, e.key): e for o in o_objs.values() for e in o.elements}
    n_el = {(e.container, e.key): e for o in n_objs.values() for e in o.elements}
    lines: list[str] = []
    ops = 0
    # chains first: an element may point at a chain this transaction creates
    new_chains: set[str] = set()
    new_sets: set[str] = set()
    for o in n_objs.values():
        for name, body in o.sets.items():
            new_sets.add(name)
            lines.append(f"add set {t} {name} {{ {body} }}")
            ops += 1
        for name, rules in o.chains.items():
            new_chains.add(name)
            lines += [f"add chain {t} {name}", f"flush chain {t} {name}"]
            lines += [f"add rule {t} {name} {r}" for r in rules]
            ops += 2 + len(rules)
    for k, e in n_el.items():
        prev = o_el.get(k)
        if prev == e:
            continue
        if prev is not None:
            lines.append(f"delete element {t} {e.container} {{ {e.key} }}")
            ops += 1
        lines.append(f"add element {t} {e.container} {{ {e.body()} }}")
        ops += 1
    for k, e in o_el.items():
        if k not in n_el:
            lines.append(f"delete element {t} {e.container} {{ {e.key} }}")
            ops += 1
    stale = {name for o in o_objs.values() for name in o.chains} - new_chains
    for name in sorted(stale):
        lines.append(f"flush chain {t} {name}")
        ops += 1
    for name in sorted({s for o in o_objs.values() for s in o.sets} - new_sets):
        lines.append(f"delete set {t} {name}")
        ops += 1
    return KpDelta("\n".join(lines) + ("\n" if lines else ""), ops, frozenset(stale))
