"""The lab control plane's LoadBalancer step: MetalLB's controller for the lab's pool on the underlay.

controllers/loadbalancer.py decides which addresses a Service should hold; this carries the decision out
in one commit per Service: the address records under keys.lb_ip (only-if-absent for a new one, so no
address is ever given twice, even by two controllers at once during a restart), the Service's
status.loadBalancer.ingress (conditional on the revision the informer decoded), and MetalLB's events
(IPAllocated, AllocationFailed). Records survive restarts in the store; a record whose Service went while
no controller ran is released at the first round.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable

from podnet.api.meta import Resource
from podnet.api.service import LoadBalancerStatus, Service
from podnet.controllers.events import event_put
from podnet.controllers.loadbalancer import decide, manages
from podnet.store import ConflictError, Delete, Op, Put, Store, keys
from podnet.store.informer import Informer

log = logging.getLogger("podnet.lab.lbcontroller")
COMPONENT = "metallb-controller"  # the events' source, as MetalLB's controller writes them

ServiceRef = tuple[str, str]  # (namespace, name)


class LoadBalancerAllocator:
    def __init__(self, store: Store, informer: Informer[Resource], pool: list[str]) -> None:
        self.store = store
        self.informer = informer
        self.pool = pool  # usable addresses, lowest first
        # address -> (owner `Service/ns/name`, mod_revision): listed at the first round, then kept current by
        # our own commits; listed again after a lost race.
        self.records: dict[str, tuple[str, int]] | None = None
        self.problems: dict[ServiceRef, str] = {}  # the last AllocationFailed reason per Service
        self.freed = False  # whether this pass released an address

    def sync(self, refs: Iterable[ServiceRef]) -> set[ServiceRef]:
        """Bring these Services' addresses up to date; returns the ones to try again."""
        scope = set(refs)
        if self.records is None:
            prefix = keys.ALLOC_LB_IP_PREFIX
            self.records = {kv.key[len(prefix):]: (kv.value.decode(errors="replace"), kv.mod_revision)
                            for kv in self.store.list(prefix).items}
            for owner, _ in self.records.values():
                parts = owner.split("/")
                if len(parts) == 3 and parts[0] == "Service":
                    scope.add((parts[1], parts[2]))
        todo = sorted(scope)
        while todo:
            self.freed = False
            for i, ref in enumerate(todo):
                if not self._sync_one(ref):
                    self.records = None  # list them again; this one and the rest wait for that
                    return set(todo[i:])
            # An address was freed: Services left pending for want of one may have it now.
            todo = sorted(self.problems) if self.freed else []
        return set()

    def _sync_one(self, ref: ServiceRef) -> bool:
        assert self.records is not None
        records = self.records
        ns, name = ref
        key = keys.resource("Service", ns, name)
        seen = self.informer.get_with_revision(key)
        svc = seen[0] if seen is not None and isinstance(seen[0], Service) else None
        owner = f"Service/{ns}/{name}"
        held = sorted(ip for ip, (o, _) in records.items() if o == owner)
        d = decide(svc, held, {ip: o for ip, (o, _) in records.items()}, self.pool)
        released = [ip for ip in held if ip not in d.ips]
        claimed = [ip for ip in d.ips if ip not in held]
        ops: list[Op] = [Delete(keys.lb_ip(ip), if_revision=records[ip][1]) for ip in released]
        ops += [Put(keys.lb_ip(ip), owner.encode(), if_absent=True) for ip in claimed]
        if svc is not None and seen is not None:
            ops += self._status_ops(key, svc, seen[1], d.ips if manages(svc) else None, held)
            if claimed and not d.problem:
                ops.append(event_put(svc, "IPAllocated", f"Assigned IP {json.dumps(list(d.ips))}", component=COMPONENT))
            if d.problem and self.problems.get(ref) != d.problem:
                ops.append(event_put(svc, "AllocationFailed", f'Failed to allocate IP for "{ns}/{name}": {d.problem}',
                                     type="Warning", component=COMPONENT))
        if ops:
            try:
                rev = self.store.commit(ops)
            except ConflictError as e:
                log.info("load balancer %s/%s: lost a race (%s); retrying", ns, name, e)
                return False
            for ip in released:
                records.pop(ip, None)
                self.freed = True
            for ip in claimed:
                records[ip] = (owner, rev)
            if claimed or released or d.problem:
                log.info("load balancer %s/%s: %s", ns, name,
                         d.problem or (f"assigned {', '.join(d.ips)}" if d.ips else "released"))
        if d.problem:
            self.problems[ref] = d.problem
        else:
            self.problems.pop(ref, None)
        return True

    @staticmethod
    def _status_ops(key: str, svc: Service, rev: int, ours: tuple[str, ...] | None, held: list[str]) -> list[Op]:
        """The status write, if status.loadBalancer must change. ours None: the Service is not ours (any more),
        so only the addresses we gave it are taken back."""
        current = [i.to_dict() for i in svc.status.load_balancer.ingress]
        if ours is not None:
            want = [{"ip": ip, "ipMode": "VIP"} for ip in ours]  # the API server's default ipMode for an IP
        else:
            want = [i for i in current if i.get("ip") not in held]
        if want == current:
            return []
        updated = svc.model_copy(deep=True)
        updated.status.load_balancer = LoadBalancerStatus.model_validate({"ingress": want})
        return [Put(key, json.dumps(updated.to_dict()).encode(), if_revision=rev)]
