"""Incremental nftables transactions for podnet's layout: the ledger of what the kernel holds after the
last successful sync (per service port, with element owners) and render_delta, which turns changed
service ports into element operations (and, rarely, chain and set changes).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from podnet.proxy.model import ServicePort, ServicePortName
from podnet.proxy.nftables.layout import Layout, Rendered, element_lines, service_objects, shared_chain_rules
from podnet.proxy.nftables.vocab import Element, ServiceObjects

# ---------------------------------------------------------------------------------------------------
# Incremental transactions


class Ledger:
    """What the kernel holds after the last successful sync, per service port, with element owners.

    Elements can be shared (the hairpin element of a pod that backs two services; the cluster IP of a
    multi-port service; an externalIP two services claim), so an element leaves the kernel only when its
    last owner does, and the first owner's value is the one loaded. Owners beyond the first are rare, so
    they live in a side table and the common case costs one dict entry per element.
    """

    def __init__(self, lay: Layout, rendered: Rendered) -> None:
        self.lay = lay
        self.objects: dict[ServicePortName, ServiceObjects] = dict(rendered.objects)
        self.shared: set[str] = set(rendered.shared)
        first: dict[tuple[str, str], tuple[ServicePortName, Element]] = {}
        more: dict[tuple[str, str], list[tuple[ServicePortName, Element]]] = {}
        for spn, o in self.objects.items():
            for e in o.elements:
                k = (e.container, e.key)
                cur = first.setdefault(k, (spn, e))
                if cur[1] is not e:
                    more.setdefault(k, []).append((spn, e))
        self.first, self.more = first, more

    def effective(self, k: tuple[str, str]) -> Element | None:
        cur = self.first.get(k)
        return cur[1] if cur is not None else None

    def disown(self, spn: ServicePortName, e: Element) -> None:
        k = (e.container, e.key)
        rest = [o for o in self.more.get(k, ()) if o[0] != spn]
        cur = self.first.get(k)
        if cur is not None and cur[0] == spn:
            if rest:
                self.first[k] = rest.pop(0)
            else:
                del self.first[k]
        if rest:
            self.more[k] = rest
        else:
            self.more.pop(k, None)

    def own(self, spn: ServicePortName, e: Element) -> None:
        k = (e.container, e.key)
        cur = self.first.setdefault(k, (spn, e))
        if cur[1] is not e:
            self.more.setdefault(k, []).append((spn, e))


@dataclass(frozen=True)
class Delta:
    text: str
    operations: int
    element_only: bool


def render_delta(ledger: Ledger, changes: Mapping[ServicePortName, ServicePort | None]) -> Delta:
    """The transaction moving the given service ports to their new value (None = gone).

    Updates the ledger as if the transaction succeeded; a caller whose load fails must drop the ledger
    (the next sync is a full one). Only elements change unless a service needs a new shared chain or has
    per-service chains (affinity, source ranges).
    """
    lay, t = ledger.lay, ledger.lay.table
    new_objs: dict[ServicePortName, ServiceObjects | None] = {}
    for spn, sp in changes.items():
        new_objs[spn] = service_objects(sp, lay, ledger.objects.get(spn)) if sp is not None else None
    touched: dict[tuple[str, str], Element | None] = {}
    for spn, new in new_objs.items():
        old = ledger.objects.get(spn)
        for e in old.elements if old else ():
            touched.setdefault((e.container, e.key), ledger.effective((e.container, e.key)))
        for e in new.elements if new else ():
            touched.setdefault((e.container, e.key), ledger.effective((e.container, e.key)))
    for spn, new in new_objs.items():
        old = ledger.objects.get(spn)
        for e in old.elements if old else ():
            ledger.disown(spn, e)
        for e in new.elements if new else ():
            ledger.own(spn, e)
    deletes: list[Element] = []
    adds: list[Element] = []
    for k, before in touched.items():
        after = ledger.effective(k)
        if before == after:
            continue
        if before is not None:
            deletes.append(before)
        if after is not None:
            adds.append(after)

    head: list[str] = []
    tail: list[str] = []
    ops = len(deletes) + len(adds)
    for spn, new in new_objs.items():
        for name in sorted(new.shared_chains - ledger.shared) if new else ():
            rules = shared_chain_rules(name, lay)
            head += [f"add chain {t} {name}", *(f"add rule {t} {name} {r}" for r in rules)]
            ops += 1 + len(rules)
            ledger.shared.add(name)
        old = ledger.objects.get(spn)
        old_chains = old.chains if old else {}
        old_sets = old.sets if old else {}
        new_chains = new.chains if new else {}
        new_sets = new.sets if new else {}
        for name, body in new_sets.items():
            if name not in old_sets:
                head.append(f"add set {t} {name} {{ {body} }}")
                ops += 1
        for name, rules in new_chains.items():
            if old_chains.get(name) != rules:
                head += [f"add chain {t} {name}", f"flush chain {t} {name}"]
                head += [f"add rule {t} {name} {r}" for r in rules]
                ops += 2 + len(rules)
        gone = [c for c in old_chains if c not in new_chains]
        tail += [f"flush chain {t} {c}" for c in gone] + [f"delete chain {t} {c}" for c in gone]
        tail += [f"delete set {t} {s}" for s in old_sets if s not in new_sets]
        ops += 2 * len(gone) + sum(1 for s in old_sets if s not in new_sets)
        if new is None:
            ledger.objects.pop(spn, None)
        else:
            ledger.objects[spn] = new
    lines = head + element_lines(t, deletes, "delete") + element_lines(t, adds) + tail
    element_only = not head and not tail
    return Delta("\n".join(lines) + ("\n" if lines else ""), ops, element_only)
