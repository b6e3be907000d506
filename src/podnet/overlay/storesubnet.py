"""The store's subnet manager (kubesubnet.py is the Kubernetes one): which pod subnet this node owns,
keeping it, and knowing everyone else's. The lease value itself and its decoding are lease.py's.

Same keys, JSON and choice rules as flannel's etcd subnet manager (pkg/subnet/etcd), so podnet and flanneld
can share one etcd. Three differences, each because flannel's behaviour hurts users:

- A lost race (two nodes pick the same free subnet at once) is retried with a fresh list; flannel means
  to retry but its check never matches, so the loser exits and waits for systemd/kubelet to restart it.
- Renewal keeps the store lease alive (etcd LeaseKeepAlive) instead of granting a new lease and
  re-putting the key: peers see no event on renewal, and a key that was deleted in between is never
  brought back (flannel's unconditional put can resurrect a revoked lease).
- Exhaustion names the range and the count, not just "out of subnets".

Layout: `choose_subnet` is the pure decision (unit-tested against flannel's cases); `SubnetManager` does the
store I/O; `LeaseWatch` (flannel's LeaseWatcher, on the store Informer) and `LeaseRenewer` are the loops the
daemon runs in threads.
"""

from __future__ import annotations

import bisect
import ipaddress
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Literal

from podnet.errors import AllocationError, PodnetError
from podnet.overlay.lease import (
    NO_PUBLIC_IP,
    NO_SUBNET,
    BackendData,
    Lease,
    LeaseDecodeError,
    LeaseEvent,
    decode_lease_kv,
    encode_attrs,
)
from podnet.overlay.netconf import NetConf
from podnet.store import keys
from podnet.store.base import (
    ConflictError,
    KeyValue,
    LeaseNotFound,
    Store,
    StoreError,
)

log = logging.getLogger(__name__)

SUBNET_TTL = 24 * 3600.0  # flannel's subnetTTL
RENEW_MARGIN = 3600.0  # flannel's --subnet-lease-renew-margin default (60 min)
RENEW_RETRY = 60.0  # flannel retries a failed renewal every minute
MAX_CANDIDATES = 100  # flannel picks at random among the first 100 free subnets
RACE_RETRIES = 50  # acquisitions that lost a race to another node before giving up


class LeaseLost(PodnetError):
    """Our own lease is gone (revoked, deleted, expired or taken over): the daemon must stop."""


# ---- the pure decision --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Choice:
    """How to get our subnet(s). `subnet` is NO_SUBNET when the config has no IPv4 (IPv6-only),
    `subnet_v6` None when it has no IPv6. `reuse` is the existing lease to update (kind "reuse"); `drop`
    an own lease from an older config that must be deleted first."""

    kind: Literal["reuse", "previous", "new"]
    subnet: ipaddress.IPv4Network
    reuse: Lease | None = None
    drop: Lease | None = None
    subnet_v6: ipaddress.IPv6Network | None = None


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class _Taken:
    """Leased subnets of one family as merged address intervals: an overlap test is one bisect, not a
    scan of every lease (at 1,000 leases the scan made each acquisition cost ~1 s of CPU)."""

    def __init__(self, subnets: Iterable[Network]) -> None:
        spans = sorted((int(n.network_address), int(n.broadcast_address)) for n in subnets)
        self.starts: list[int] = []
        self.ends: list[int] = []
        for lo, hi in spans:
            if self.ends and lo <= self.ends[-1] + 1:
                self.ends[-1] = max(self.ends[-1], hi)
            else:
                self.starts.append(lo)
                self.ends.append(hi)

    def overlaps(self, net: Network) -> bool:
        lo, hi = int(net.network_address), int(net.broadcast_address)
        i = bisect.bisect_right(self.starts, hi) - 1
        return i >= 0 and self.ends[i] >= lo


def lease_fits(conf: NetConf, lease: Lease) -> bool:
    """flannel's isSubnetConfigCompat for both families: each enabled family's subnet fits the config,
    and a disabled family has none."""
    v4 = conf.subnet_fits(lease.subnet) if conf.enable_ipv4 else not lease.has_v4
    if conf.enable_ipv6:
        v6 = lease.subnet_v6 is not None and conf.subnet_v6_fits(lease.subnet_v6)
    else:
        v6 = lease.subnet_v6 is None
    return v4 and v6


def is_ours(conf: NetConf, lease: Lease, public_ip: ipaddress.IPv4Address,
            public_ipv6: ipaddress.IPv6Address | None) -> bool:
    """flannel finds its lease by PublicIP; an IPv6-only node (PublicIP 0.0.0.0) by PublicIPv6."""
    if conf.enable_ipv4:
        return lease.public_ip == public_ip
    return public_ipv6 is not None and lease.public_ipv6 == public_ipv6


def _pick(pick: random.Random, candidates: Iterable[Network], taken: _Taken, out_of: str) -> Network:
    """A random one of the first MAX_CANDIDATES free candidates; AllocationError(out_of) if none is free."""
    free = _free(candidates, taken)
    if not free:
        raise AllocationError(out_of)
    return pick.choice(free)


def _free(candidates: Iterable[Network], taken: _Taken) -> list[Network]:
    free: list[Network] = []
    for candidate in candidates:
        if not taken.overlaps(candidate):
            free.append(candidate)
            if len(free) >= MAX_CANDIDATES:
                break
    return free


def choose_subnet(
    conf: NetConf,
    leases: Iterable[Lease],
    public_ip: ipaddress.IPv4Address,
    previous: ipaddress.IPv4Network | None = None,
    rng: random.Random | None = None,
    *,
    public_ipv6: ipaddress.IPv6Address | None = None,
    previous_v6: ipaddress.IPv6Network | None = None,
) -> Choice:
    """flannel's tryAcquireLease decision, without I/O, for each enabled family.

    1. Our lease by PublicIP (PublicIPv6 when IPv6-only), if it still fits the config (else it is dropped).
    2. The subnet(s) of the previous subnet.env, if nobody holds them and they fit.
    3. A random one of the first MAX_CANDIDATES free subnets from SubnetMin up (and from IPv6SubnetMin).
    Raises AllocationError when nothing is free.
    """
    pick = rng if rng is not None else random.Random()
    leases = list(leases)
    drop = None
    mine = next((lease for lease in leases if is_ours(conf, lease, public_ip, public_ipv6)), None)
    if mine is not None:
        if lease_fits(conf, mine):
            return Choice("reuse", mine.subnet, reuse=mine, subnet_v6=mine.subnet_v6)
        drop = mine
    others = [lease for lease in leases if lease is not drop]
    taken = _Taken(lease.subnet for lease in others if lease.has_v4)
    taken6 = _Taken(lease.subnet_v6 for lease in others if lease.subnet_v6 is not None)
    prev_ok = (not conf.enable_ipv4 or (previous is not None and conf.subnet_fits(previous)
                                         and not taken.overlaps(previous)))
    prev6_ok = (not conf.enable_ipv6 or (previous_v6 is not None and conf.subnet_v6_fits(previous_v6)
                                          and not taken6.overlaps(previous_v6)))
    if prev_ok and prev6_ok and (previous is not None or previous_v6 is not None):
        return Choice("previous", previous if conf.enable_ipv4 and previous else NO_SUBNET, drop=drop,
                      subnet_v6=previous_v6 if conf.enable_ipv6 else None)
    subnet: ipaddress.IPv4Network = NO_SUBNET
    subnet_v6: ipaddress.IPv6Network | None = None
    if conf.enable_ipv4:
        picked = _pick(pick, conf.candidate_subnets(), taken,
                       f"out of subnets: all {conf.subnet_count()} /{conf.subnet_len} subnets of Network "
                       f"{conf.network} between SubnetMin {conf.subnet_min} and SubnetMax {conf.subnet_max} are "
                       f"leased (leases of dead nodes free up when their TTL runs out; `podnet overlay leases` "
                       f"lists them)")
        assert isinstance(picked, ipaddress.IPv4Network)
        subnet = picked
    if conf.enable_ipv6:
        picked6 = _pick(pick, conf.candidate_subnets_v6(), taken6,
                        f"out of IPv6 subnets: all {conf.subnet_count_v6()} /{conf.ipv6_subnet_len} subnets of "
                        f"IPv6Network {conf.ipv6_network} between IPv6SubnetMin {conf.ipv6_subnet_min} and "
                        f"IPv6SubnetMax {conf.ipv6_subnet_max} are leased (`podnet overlay leases` lists them)")
        assert isinstance(picked6, ipaddress.IPv6Network)
        subnet_v6 = picked6
    return Choice("new", subnet, drop=drop, subnet_v6=subnet_v6)


# ---- store I/O ----------------------------------------------------------------------------------


def lease_from_kv(kv: KeyValue) -> Lease | None:
    """The lease stored in kv with its store bookkeeping, or None (logged) if it is not flannel's format;
    flannel skips such entries too."""
    try:
        lease = decode_lease_kv(kv.key, kv.value)
    except LeaseDecodeError as e:
        log.warning("ignoring %s", e)
        return None
    return replace(lease, store_lease=kv.lease, revision=kv.mod_revision)


class SubnetManager:
    """Acquire, update and renew our lease in the store; list everyone's."""

    def __init__(
        self, store: Store, *, ttl: float = SUBNET_TTL, rng: random.Random | None = None,
        clock: Callable[[], float] = time.time, race_retries: int = RACE_RETRIES,
    ) -> None:
        if ttl <= 0:
            raise ValueError(f"lease TTL must be > 0, got {ttl}")
        self.store = store
        self.ttl = ttl
        self.rng = rng or random.Random()
        self.clock = clock
        self.race_retries = race_retries
        self.lost_races = 0  # how often another node took our pick first (tests and metrics read it)

    def list_leases(self) -> tuple[list[Lease], int]:
        result = self.store.list(keys.SUBNETS_PREFIX)
        leases = [lease for kv in result.items if (lease := lease_from_kv(kv)) is not None]
        return leases, result.revision

    def acquire(
        self, conf: NetConf, public_ip: ipaddress.IPv4Address, *, backend_type: str | None,
        backend_data: BackendData = None, previous: ipaddress.IPv4Network | None = None,
        public_ipv6: ipaddress.IPv6Address | None = None, backend_v6_data: BackendData = None,
        previous_v6: ipaddress.IPv6Network | None = None,
    ) -> Lease:
        """Our lease: reused, from the previous subnet.env, or new. Retries lost races with a fresh list.

        An IPv6-only config gives a lease without an IPv4 subnet and with PublicIP 0.0.0.0 (flannel's
        zero values), whatever `public_ip` is; a config without IPv6 ignores `public_ipv6`."""
        if not conf.enable_ipv4:
            public_ip, backend_data = NO_PUBLIC_IP, None
        if not conf.enable_ipv6:
            public_ipv6, backend_v6_data = None, None
        elif public_ipv6 is None:
            raise AllocationError("the net-conf enables IPv6 but this node has no public IPv6 (--public-ipv6)")
        for attempt in range(self.race_retries):
            leases, _ = self.list_leases()
            choice = choose_subnet(conf, leases, public_ip, previous, self.rng, public_ipv6=public_ipv6,
                                   previous_v6=previous_v6)
            want = Lease(subnet=choice.subnet, public_ip=public_ip, backend_type=backend_type,
                         backend_data=backend_data, public_ipv6=public_ipv6, backend_v6_data=backend_v6_data,
                         subnet_v6=choice.subnet_v6)
            try:
                if choice.drop is not None:
                    log.info("deleting our lease %s: it does not fit the network config any more", choice.drop.subnet)
                    self.store.delete(choice.drop.key, if_revision=choice.drop.revision)
                if choice.reuse is not None:
                    lease = self._take_over(choice.reuse, want)
                else:
                    lease = self._create(want)
            except ConflictError as e:
                # Someone else wrote the key between our list and our write: look again.
                self.lost_races += 1
                log.info("subnet %s was taken concurrently (%s), retrying (%d)", choice.subnet, e.reason, attempt + 1)
                time.sleep(self.rng.uniform(0, 0.02 * min(attempt + 1, 10)))
                continue
            log.info("acquired lease %s (%s) for %s", lease.describe(), choice.kind,
                     public_ip if conf.enable_ipv4 else public_ipv6)
            return lease
        raise AllocationError(f"could not acquire a subnet after {self.race_retries} lost races with other nodes")

    def _create(self, want: Lease) -> Lease:
        grant = self.store.grant(self.ttl)
        try:
            rev = self.store.put(want.key, encode_attrs(want), if_absent=True, lease=grant)
        except BaseException:
            self._revoke_quietly(grant)
            raise
        return replace(want, store_lease=grant, revision=rev, expiration=self.clock() + self.ttl)

    def _take_over(self, old: Lease, want: Lease) -> Lease:
        """Reuse a lease we held before (a restart): keep its store lease so nothing changes on the wire
        when the attributes are the same; rewrite the value (conditionally) when they differ."""
        store_lease, expiration = old.store_lease, None
        if store_lease:
            try:
                ttl = self.store.keepalive(store_lease)
            except LeaseNotFound:
                return self._create(want)  # expired just now: the key is going (a conflict re-lists)
            expiration = self.clock() + ttl
            if abs(ttl - self.ttl) > 0.5:
                # Granted with another TTL (the daemon was restarted with a new --lease-ttl): move the key
                # to a lease of the configured TTL, or the renewal schedule would not fit the lease.
                grant = self.store.grant(self.ttl)
                try:
                    rev = self.store.put(want.key, encode_attrs(want), if_revision=old.revision, lease=grant)
                except BaseException:
                    self._revoke_quietly(grant)
                    raise
                return replace(want, store_lease=grant, revision=rev, expiration=self.clock() + self.ttl)
        lease = replace(want, store_lease=store_lease, revision=old.revision, expiration=expiration)
        if encode_attrs(old) != encode_attrs(want):
            rev = self.store.put(want.key, encode_attrs(want), if_revision=old.revision, lease=store_lease)
            lease = replace(lease, revision=rev)
        return lease

    def update(self, lease: Lease, **attrs: object) -> Lease:
        """Change our lease's attributes (e.g. BackendData after the backend registered). No-op if equal."""
        new = replace(lease, **attrs)  # type: ignore[arg-type]
        if encode_attrs(new) == encode_attrs(lease):
            return new
        try:
            rev = self.store.put(lease.key, encode_attrs(new), if_revision=lease.revision, lease=lease.store_lease)
        except (ConflictError, LeaseNotFound) as e:
            raise LeaseLost(f"lease {lease.describe()} changed or vanished while updating it: {e}") from e
        return replace(new, revision=rev)

    def renew(self, lease: Lease) -> Lease:
        """Push our lease's expiry out by its TTL. Raises LeaseLost if it is gone or no longer ours."""
        self.check_own(lease)
        if not lease.store_lease:
            return lease  # a reservation: never expires
        try:
            ttl = self.store.keepalive(lease.store_lease)
        except LeaseNotFound as e:
            raise LeaseLost(f"lease {lease.describe()} has expired (store lease {lease.store_lease:x} is gone)") from e
        return replace(lease, expiration=self.clock() + ttl)

    def check_own(self, lease: Lease) -> None:
        kv = self.store.get(lease.key)
        if kv is None:
            raise LeaseLost(f"lease {lease.describe()} has been revoked (its key {lease.key} is gone)")
        current = lease_from_kv(kv)
        if current is None or not same_owner(current, lease):
            raise LeaseLost(f"lease {lease.describe()} has been taken over by {owner(current) if current else '?'}")

    def revoke(self, subnet: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
        """Delete the lease holding `subnet` (its IPv4 or IPv6 subnet; operator action; its owner exits).
        False if there was none."""
        kv = self.store.get(keys.subnet_lease(str(subnet))) if subnet.version == 4 else None
        if kv is None:
            for item in self.store.list(keys.SUBNETS_PREFIX).items:
                lease = lease_from_kv(item)
                if lease is not None and subnet in ((lease.subnet if lease.has_v4 else None), lease.subnet_v6):
                    kv = item
                    break
        if kv is None:
            return False
        if kv.lease:
            self.store.revoke(kv.lease)
        else:
            self.store.delete(kv.key)
        return True

    def _revoke_quietly(self, grant: int) -> None:
        try:
            self.store.revoke(grant)
        except StoreError as e:
            log.warning("could not revoke unused store lease %x: %s (it expires on its own)", grant, e)


def same_owner(a: Lease, b: Lease) -> bool:
    """Both leases advertise the same node (PublicIP, and PublicIPv6 for IPv6-only ones)."""
    return a.public_ip == b.public_ip and (a.has_v4 or a.public_ipv6 == b.public_ipv6)


def owner(lease: Lease) -> str:
    return str(lease.public_ip) if lease.has_v4 or lease.public_ipv6 is None else str(lease.public_ipv6)


# ---- watching the others ------------------------------------------------------------------------


class LeaseWatch:
    """flannel's WatchLeases + LeaseWatcher on top of the store Informer (list, watch, re-list on gaps).

    Other nodes' leases reach `handler` as added/removed events; our own subnet never does. A removal
    carries the lease as it was last seen (the informer keeps it), because the delete event only names the
    key and the backend must delete entries keyed by the old VtepMAC / PublicIP. An update that changes
    nothing on the wire is not reported. Our own lease vanishing or changing hands goes to `on_lost`.
    """

    def __init__(
        self, store: Store, own: Lease, handler: Callable[[list[LeaseEvent]], None],
        on_lost: Callable[[LeaseLost], None],
    ) -> None:
        from podnet.store.informer import Informer

        self.own = own
        self.handler = handler
        self.on_lost = on_lost
        self._stop = threading.Event()
        self.informer: Informer[Lease] = Informer(
            store, keys.SUBNETS_PREFIX, decode_kv=decode_lease_kv, on_change=self.on_change, name="subnet leases",
        )

    def on_change(self, kind: str, old: Lease | None, new: Lease | None) -> None:
        lease = new if new is not None else old
        assert lease is not None
        if lease.ident == self.own.ident:
            if new is None:
                self._lost(LeaseLost(f"lease {self.own.describe()} has been revoked (key {self.own.key} deleted)"))
            elif not same_owner(new, self.own):
                self._lost(LeaseLost(f"lease {self.own.describe()} has been taken over by {owner(new)}"))
            return
        if new is None:
            self.handler([LeaseEvent("removed", lease)])
        elif old is None or not old.attrs_equal(new):
            self.handler([LeaseEvent("added", new)])

    def _lost(self, err: LeaseLost) -> None:
        if not self._stop.is_set():
            self._stop.set()
            self.on_lost(err)

    def run(self) -> None:
        """Follow the leases until stop() or until our own lease is lost (blocking; run it in a thread)."""
        self.informer.start()
        try:
            while not self.informer.wait_synced(0.2):
                if self._stop.is_set():
                    return
            # Our key was already gone before the first list: no delete event will ever say so.
            if not self._stop.is_set() and self.informer.get(self.own.key) is None:
                self._lost(LeaseLost(f"lease {self.own.describe()} has been revoked (its key {self.own.key} is gone)"))
            self._stop.wait()
        finally:
            self.informer.stop()

    def stop(self) -> None:
        self._stop.set()


# ---- renewing our own ---------------------------------------------------------------------------


class LeaseRenewer:
    """Renew our lease `margin` seconds before it expires; retry failures every `retry` seconds until it
    is renewed or has expired. `clock` and `wait` are injectable so tests run the state machine on a fake
    clock (wait(timeout) -> True when asked to stop)."""

    def __init__(
        self, manager: SubnetManager, lease: Lease, *, margin: float = RENEW_MARGIN, retry: float = RENEW_RETRY,
        clock: Callable[[], float] = time.time, wait: Callable[[float], bool] | None = None,
        on_renewed: Callable[[Lease], None] | None = None,
    ) -> None:
        if margin <= 0 or margin >= manager.ttl:
            raise ValueError(f"renew margin must be between 0 and the lease TTL ({manager.ttl}s), got {margin}")
        self.manager = manager
        self.lease = lease
        self.margin = margin
        self.retry = retry
        self.clock = clock
        self._stop = threading.Event()
        self.wait = wait or self._stop.wait
        self.on_renewed = on_renewed

    def stop(self) -> None:
        self._stop.set()

    def next_renewal(self) -> float | None:
        """When to renew next (unix time); None for a reservation (never expires)."""
        if self.lease.expiration is None or not self.lease.store_lease:
            return None
        return self.lease.expiration - self.margin

    def run(self) -> None:
        """Returns when stopped; raises LeaseLost when the lease is gone."""
        retry_at: float | None = None
        while not self._stop.is_set():
            due = retry_at if retry_at is not None else self.next_renewal()
            delay = 3600.0 if due is None else max(0.0, due - self.clock())
            if self.wait(delay):
                return
            if due is None:
                continue
            try:
                self.lease = self.manager.renew(self.lease)
            except StoreError as e:  # store unreachable: LeaseLost is not a StoreError and ends the loop
                left = (self.lease.expiration or 0) - self.clock()
                if left <= 0:
                    raise LeaseLost(f"lease {self.lease.describe()} expired: renewal kept failing ({e})") from e
                log.warning("renewing lease %s failed: %s; retrying in %.0fs", self.lease.subnet, e,
                            min(self.retry, left))
                retry_at = self.clock() + min(self.retry, left)
                continue
            retry_at = None
            nxt = self.next_renewal()
            if nxt is not None and nxt <= self.clock():
                # The store granted less than the margin: never spin, renew every `retry` seconds instead.
                retry_at = self.clock() + self.retry
            log.info("renewed lease %s until %s", self.lease.subnet, time.ctime(self.lease.expiration or 0))
            if self.on_renewed is not None:
                self.on_renewed(self.lease)


__all__ = [
    "Choice", "LeaseLost", "LeaseRenewer", "LeaseWatch", "SubnetManager", "choose_subnet", "decode_lease_kv", "lease_fits",
    "is_ours", "owner", "same_owner",
    "lease_from_kv", "RENEW_MARGIN", "SUBNET_TTL",
]
