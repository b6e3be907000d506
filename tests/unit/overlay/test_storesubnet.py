"""Subnet choice (flannel-golden-cases.md §4), the lease tracker, and the renewal state machine on a fake clock."""

from __future__ import annotations

import ipaddress
import random

import pytest

from podnet.errors import AllocationError
from podnet.overlay.lease import Lease, decode_lease_kv, encode_attrs
from podnet.overlay.netconf import parse_netconf
from podnet.overlay.storesubnet import LeaseLost, LeaseRenewer, LeaseWatch, choose_subnet
from podnet.store import keys
from podnet.store.base import StoreUnavailable

Net = ipaddress.IPv4Network
IP = ipaddress.IPv4Address

CONF = parse_netconf('{ "Network": "10.3.0.0/16", "SubnetMin": "10.3.1.0", "SubnetMax": "10.3.25.0" }')
EXISTING = [
    Lease(subnet=Net(f"10.3.{i}.0/24"), public_ip=IP("1.1.1.1")) for i in (1, 2, 4, 5, 31)
]
ME = IP("1.2.3.4")


def test_new_lease_is_free_and_in_range() -> None:
    seen = set()
    for seed in range(50):
        c = choose_subnet(CONF, EXISTING, ME, None, random.Random(seed))
        assert c.kind == "new"
        assert IP("10.3.1.0") <= c.subnet.network_address <= IP("10.3.25.0")
        assert c.subnet not in {e.subnet for e in EXISTING}
        seen.add(c.subnet)
    assert len(seen) > 5  # chosen at random among the free ones, not always the first


def test_reuse_by_public_ip() -> None:
    mine = Lease(subnet=Net("10.3.9.0/24"), public_ip=ME)
    c = choose_subnet(CONF, [*EXISTING, mine], ME, Net("10.3.6.0/24"))
    assert (c.kind, c.subnet, c.reuse) == ("reuse", Net("10.3.9.0/24"), mine)


def test_previous_subnet_is_reused_when_free_and_fitting() -> None:
    c = choose_subnet(CONF, EXISTING, ME, Net("10.3.6.0/24"))
    assert (c.kind, c.subnet) == ("previous", Net("10.3.6.0/24"))


@pytest.mark.parametrize("previous", ["10.4.1.0/24", "10.3.2.0/24", "10.3.6.0/25", "10.3.30.0/24"])
def test_previous_subnet_ignored_when_taken_or_not_fitting(previous: str) -> None:
    c = choose_subnet(CONF, EXISTING, ME, Net(previous))
    assert c.kind == "new" and c.subnet != Net(previous)


def test_config_change_drops_own_lease_and_allocates_in_new_range() -> None:
    conf = parse_netconf('{ "Network": "10.4.0.0/16" }')
    mine = Lease(subnet=Net("10.3.9.0/24"), public_ip=ME)
    c = choose_subnet(conf, [*EXISTING, mine], ME)
    assert c.kind == "new" and c.drop == mine and c.subnet.subnet_of(Net("10.4.0.0/16"))


def test_overlapping_leases_of_other_sizes_block_candidates() -> None:
    conf = parse_netconf('{ "Network": "10.5.0.0/22", "SubnetLen": 24 }')  # candidates .1, .2, .3
    big = Lease(subnet=Net("10.5.2.0/23"), public_ip=IP("9.9.9.9"))
    for seed in range(20):
        assert choose_subnet(conf, [big], ME, None, random.Random(seed)).subnet == Net("10.5.1.0/24")


def test_exhaustion_is_a_clear_error() -> None:
    conf = parse_netconf('{ "Network": "10.5.0.0/22" }')
    full = [Lease(subnet=Net(f"10.5.{i}.0/24"), public_ip=IP(f"9.9.9.{i}")) for i in (1, 2, 3)]
    with pytest.raises(AllocationError, match=r"out of subnets: all 3 /24 subnets of Network 10.5.0.0/22"):
        choose_subnet(conf, full, ME)


def test_only_first_100_free_candidates_are_considered() -> None:
    conf = parse_netconf('{ "Network": "10.0.0.0/8" }')
    picks = {choose_subnet(conf, [], ME, None, random.Random(s)).subnet for s in range(300)}
    assert max(int(p.network_address) for p in picks) <= int(IP("10.0.100.0"))


# ---- the lease watch's event rules (flannel's LeaseWatcher) ------------------------------------

def _vx(subnet: str, public_ip: str, mac: str = "aa:bb:cc:dd:ee:01") -> Lease:
    return Lease(subnet=Net(subnet), public_ip=IP(public_ip), backend_type="vxlan",
                 backend_data={"VNI": 1, "VtepMAC": mac})


def _watch() -> tuple[LeaseWatch, list[tuple[str, Lease]], list[LeaseLost]]:
    events: list[tuple[str, Lease]] = []
    lost: list[LeaseLost] = []
    own = _vx("10.244.1.0/24", "10.0.0.1")
    w = LeaseWatch(None, own, lambda evs: events.extend((e.type, e.lease) for e in evs), lost.append)  # type: ignore[arg-type]
    return w, events, lost


def test_watch_filters_own_and_reports_peers() -> None:
    w, events, lost = _watch()
    w.on_change("add", None, _vx("10.244.1.0/24", "10.0.0.1"))
    w.on_change("update", _vx("10.244.1.0/24", "10.0.0.1"), _vx("10.244.1.0/24", "10.0.0.1", "aa:bb:cc:dd:ee:09"))
    peer = _vx("10.244.2.0/24", "10.0.0.2")
    w.on_change("add", None, peer)
    assert events == [("added", peer)] and lost == []


def test_watch_skips_updates_that_change_nothing_and_passes_changed_ones() -> None:
    w, events, _ = _watch()
    a = _vx("10.244.2.0/24", "10.0.0.2")
    w.on_change("update", a, _vx("10.244.2.0/24", "10.0.0.2"))
    assert events == []
    b = _vx("10.244.2.0/24", "10.0.0.2", mac="aa:bb:cc:dd:ee:02")  # e.g. the peer's device was recreated
    w.on_change("update", a, b)
    assert events == [("added", b)]


def test_watch_removal_carries_the_last_seen_lease() -> None:
    w, events, _ = _watch()
    last = _vx("10.244.2.0/24", "10.0.0.2", mac="aa:bb:cc:dd:ee:02")
    w.on_change("delete", last, None)
    assert events == [("removed", last)]


def test_own_lease_deleted_or_taken_over_is_lost_once() -> None:
    w, events, lost = _watch()
    w.on_change("delete", _vx("10.244.1.0/24", "10.0.0.1"), None)
    w.on_change("delete", _vx("10.244.1.0/24", "10.0.0.1"), None)
    assert len(lost) == 1 and "10.244.1.0/24 has been revoked" in str(lost[0]) and events == []
    w2, _, lost2 = _watch()
    w2.on_change("update", _vx("10.244.1.0/24", "10.0.0.1"), _vx("10.244.1.0/24", "10.0.0.7"))
    assert len(lost2) == 1 and "taken over by 10.0.0.7" in str(lost2[0])


def test_decoder_rejects_foreign_keys() -> None:
    with pytest.raises(ValueError, match="not a subnet lease key"):
        decode_lease_kv("/coreos.com/network/subnets/garbage", b"{}")
    lease = decode_lease_kv(keys.subnet_lease("10.244.2.0/24"), encode_attrs(_vx("10.244.2.0/24", "10.0.0.2")))
    assert lease.subnet == Net("10.244.2.0/24") and lease.backend_data["VtepMAC"] == "aa:bb:cc:dd:ee:01"


# ---- renewal on a fake clock --------------------------------------------------------------------

class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0
        self.stop_after: float | None = None

    def __call__(self) -> float:
        return self.now

    def wait(self, timeout: float) -> bool:
        self.now += timeout
        return self.stop_after is not None and self.now >= self.stop_after


class FakeManager:
    """Stands in for SubnetManager.renew: scripted outcomes, records when it was called."""

    ttl = 100.0

    def __init__(self, clock: FakeClock, outcomes: list[object]) -> None:
        self.clock = clock
        self.outcomes = outcomes
        self.calls: list[float] = []

    def renew(self, lease: Lease) -> Lease:
        self.calls.append(self.clock.now)
        outcome = self.outcomes.pop(0) if self.outcomes else "ok"
        if isinstance(outcome, Exception):
            raise outcome
        from dataclasses import replace
        return replace(lease, expiration=self.clock.now + self.ttl)


def _lease(clock: FakeClock) -> Lease:
    return Lease(subnet=Net("10.244.1.0/24"), public_ip=IP("10.0.0.1"), store_lease=7, expiration=clock.now + 100)


def test_renews_margin_before_expiry_each_time() -> None:
    clock = FakeClock()
    clock.stop_after = 1000 + 300
    mgr = FakeManager(clock, [])
    r = LeaseRenewer(mgr, _lease(clock), margin=10, retry=3, clock=clock, wait=clock.wait)  # type: ignore[arg-type]
    r.run()
    assert mgr.calls == [1090.0, 1180.0, 1270.0]


def test_failed_renewal_is_retried_until_it_works() -> None:
    clock = FakeClock()
    clock.stop_after = 1000 + 150
    mgr = FakeManager(clock, [StoreUnavailable("down"), StoreUnavailable("down"), "ok"])
    r = LeaseRenewer(mgr, _lease(clock), margin=10, retry=3, clock=clock, wait=clock.wait)  # type: ignore[arg-type]
    r.run()
    assert mgr.calls == [1090.0, 1093.0, 1096.0]
    assert r.lease.expiration == 1196.0


def test_renewal_failing_until_expiry_loses_the_lease() -> None:
    clock = FakeClock()
    mgr = FakeManager(clock, [StoreUnavailable("down")] * 10)
    r = LeaseRenewer(mgr, _lease(clock), margin=10, retry=4, clock=clock, wait=clock.wait)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost, match="10.244.1.0/24 expired"):
        r.run()
    assert mgr.calls == [1090.0, 1094.0, 1098.0, 1100.0]


def test_revoked_lease_ends_the_loop() -> None:
    clock = FakeClock()
    mgr = FakeManager(clock, [LeaseLost("lease 10.244.1.0/24 has been revoked")])
    r = LeaseRenewer(mgr, _lease(clock), margin=10, clock=clock, wait=clock.wait)  # type: ignore[arg-type]
    with pytest.raises(LeaseLost, match="revoked"):
        r.run()


def test_reservation_is_never_renewed() -> None:
    clock = FakeClock()
    clock.stop_after = 1000 + 10 * 3600
    mgr = FakeManager(clock, [])
    lease = Lease(subnet=Net("10.244.1.0/24"), public_ip=IP("10.0.0.1"))
    LeaseRenewer(mgr, lease, margin=10, clock=clock, wait=clock.wait).run()  # type: ignore[arg-type]
    assert mgr.calls == []


def test_margin_must_be_below_ttl() -> None:
    clock = FakeClock()
    with pytest.raises(ValueError, match="renew margin"):
        LeaseRenewer(FakeManager(clock, []), _lease(clock), margin=100)  # type: ignore[arg-type]


def test_a_lease_shorter_than_the_margin_is_renewed_at_the_retry_pace_not_in_a_spin() -> None:
    clock = FakeClock()
    clock.stop_after = 1000 + 20

    class ShortManager(FakeManager):
        def renew(self, lease: Lease) -> Lease:
            from dataclasses import replace
            self.calls.append(self.clock.now)
            return replace(lease, expiration=self.clock.now + 5)  # the store grants 5 s, margin is 10 s

    mgr = ShortManager(clock, [])
    lease = Lease(subnet=Net("10.244.1.0/24"), public_ip=IP("10.0.0.1"), store_lease=7, expiration=clock.now + 5)
    LeaseRenewer(mgr, lease, margin=10, retry=3, clock=clock, wait=clock.wait).run()  # type: ignore[arg-type]
    assert mgr.calls == [1000.0, 1003.0, 1006.0, 1009.0, 1012.0, 1015.0, 1018.0]
