"""The repair pass: make the allocation records and the derived EndpointSlices agree with the Services.

kube-apiserver runs one repair controller per allocator (pkg/registry/core/service/ipallocator/controller
and portallocator/controller): every few minutes it lists the Services and the allocation bitmap, frees
what no Service holds and records what a Service holds but the bitmap lost. This is that pass for
podnet's records (ALLOC_CLUSTER_IP_PREFIX / ALLOC_NODE_PORT_PREFIX, value = owner `Service/ns/name`):

- a record whose owner is gone, or whose owner (decodable) does not hold that value, is freed;
- a value a Service holds without a record is recorded again (if_absent), or reported if another
  Service's record has it (upstream's "allocated to more than one service": left for a person);
- an undecodable Service keeps every record naming it: what it holds cannot be known, and deleting it
  by key frees them (apply.py);
- a controller-managed EndpointSlice whose Service is gone (and not merely undecodable) is deleted.

Upstream waits several passes before freeing a leak, because its allocation and its Service write are
two steps. Here both are one commit (apply.py), so a record without its Service is never in flight and is
freed at once. Each change is conditional on the revisions read, and the owner's key is part of the
same commit (absent: a delete of an absent key conditional on revision 0; present: rewritten unchanged,
conditional on its revision), so a concurrent apply that re-claims a value makes the repair fail and it
is simply run again.

Where it runs: not inside every apply/delete transaction (it reads every Service and record: cost
proportional to the cluster on each write). Instead `podnet repair` runs it on demand, `podnet apply`
runs it once when an allocation fails for want of a free value (controllers/apply.py), which is when a
leak actually hurts, and a lab's control plane runs it at start and every 30 s while the store changes
(lab/controller.py), as kube-apiserver's repair controllers do every few minutes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from podnet.api.endpointslice import CONTROLLER_NAME, MANAGED_BY_LABEL, SERVICE_NAME_LABEL, EndpointSlice
from podnet.api.loader import from_json
from podnet.api.service import Service
from podnet.errors import PodnetError
from podnet.store import ConflictError, Delete, KeyValue, Op, Put, Store, keys

MAX_ATTEMPTS = 10


@dataclass
class RepairReport:
    freed: list[str] = field(default_factory=list)  # allocation keys deleted
    restored: list[str] = field(default_factory=list)  # allocation keys written again
    slices_deleted: list[str] = field(default_factory=list)
    conflicts: list[str] = field(default_factory=list)  # values held by two services: for a person

    @property
    def changed(self) -> bool:
        return bool(self.freed or self.restored or self.slices_deleted)

    def lines(self) -> list[str]:
        out = [f"freed {k}" for k in self.freed] + [f"restored {k}" for k in self.restored]
        out += [f"deleted orphaned {k}" for k in self.slices_deleted]
        return out + [f"conflict: {c}" for c in self.conflicts]


def _owner_key(owner: str) -> str | None:
    parts = owner.split("/")
    if len(parts) != 3 or parts[0] != "Service" or not all(parts):
        return None
    return keys.resource("Service", parts[1], parts[2])


def _held(svc: Service) -> tuple[set[str], set[int]]:
    ips = {ip for ip in svc.cluster_ips if ip and ip != "None"}
    ports = {p.node_port for p in svc.spec.ports if p.node_port}
    if svc.spec.health_check_node_port:
        ports.add(svc.spec.health_check_node_port)
    return ips, ports


def _plan(store: Store) -> tuple[list[Op], RepairReport]:
    report = RepairReport()
    services: dict[str, tuple[KeyValue, Service | None]] = {}  # service key -> (kv, object or None)
    for kv in store.list(keys.kind_prefix("Service")).items:
        try:
            obj = from_json(kv.value)
        except PodnetError:
            obj = None
        services[kv.key] = (kv, obj if isinstance(obj, Service) else None)
    ops: dict[str, Op] = {}

    def guard(owner_key: str) -> None:
        """Make the commit conditional on the owner's key being as read."""
        if owner_key in ops:
            return
        entry = services.get(owner_key)
        if entry is None:
            ops[owner_key] = Delete(owner_key, if_revision=0)
        else:
            ops[owner_key] = Put(owner_key, entry[0].value, if_revision=entry[0].mod_revision)

    records: dict[str, tuple[str, int]] = {}  # allocation key -> (owner, mod_revision)
    for prefix in (keys.ALLOC_CLUSTER_IP_PREFIX, keys.ALLOC_NODE_PORT_PREFIX):
        for kv in store.list(prefix).items:
            records[kv.key] = (kv.value.decode(errors="replace"), kv.mod_revision)
    for akey, (owner, rev) in sorted(records.items()):
        owner_key = _owner_key(owner)
        entry = services.get(owner_key) if owner_key else None
        if entry is not None:
            owner_svc = entry[1]
            if owner_svc is None:
                continue  # undecodable owner: keep what it may hold
            ips, ports = _held(owner_svc)
            value = akey.rsplit("/", 1)[1]
            held = value in ips if akey.startswith(keys.ALLOC_CLUSTER_IP_PREFIX) else (
                value.isdigit() and int(value) in ports)
            if held:
                continue
        ops[akey] = Delete(akey, if_revision=rev)
        report.freed.append(akey)
        if owner_key:
            guard(owner_key)
    for skey, (_kv, svc) in sorted(services.items()):
        if svc is None:
            continue
        ips, ports = _held(svc)
        wanted = [keys.cluster_ip(ip) for ip in sorted(ips) if _is_ip(ip)] + [keys.node_port(p) for p in sorted(ports)]
        for akey in wanted:
            if akey in records and records[akey][0] == svc.ref:
                continue
            if akey in records and akey not in ops:
                report.conflicts.append(f"{akey} is held by {svc.ref} and recorded for {records[akey][0]}")
                continue
            ops[akey] = Put(akey, svc.ref.encode(), if_absent=akey not in records,
                            if_revision=records[akey][1] if akey in records else None)
            report.restored.append(akey)
            guard(skey)
    _orphaned_slices(store, services, ops, report)
    return list(ops.values()), report


def _is_ip(text: str) -> bool:
    import ipaddress

    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _orphaned_slices(store: Store, services: dict[str, tuple[KeyValue, Service | None]], ops: dict[str, Op],
                     report: RepairReport) -> None:
    for kv in store.list(keys.kind_prefix("EndpointSlice")).items:
        try:
            obj = from_json(kv.value)
        except PodnetError:
            continue
        if not isinstance(obj, EndpointSlice):
            continue
        labels = obj.metadata.labels
        if labels.get(MANAGED_BY_LABEL) != CONTROLLER_NAME or not labels.get(SERVICE_NAME_LABEL):
            continue
        skey = keys.resource("Service", obj.namespace, labels[SERVICE_NAME_LABEL])
        if skey in services:
            continue
        ops[kv.key] = Delete(kv.key, if_revision=kv.mod_revision)
        ops.setdefault(skey, Delete(skey, if_revision=0))
        report.slices_deleted.append(kv.key)


def repair_allocations(store: Store) -> RepairReport:
    """One repair pass (see the module doc). Returns what it changed; retries when a writer got in between."""
    last: ConflictError | None = None
    for _ in range(MAX_ATTEMPTS):
        ops, report = _plan(store)
        if not report.changed:
            return report
        try:
            store.commit(ops)
            return report
        except ConflictError as e:
            last = e
    raise PodnetError(f"repair: the store kept changing ({last}); try again")


__all__ = ["RepairReport", "repair_allocations"]
