"""The subnet manager on the real sqlite store: races, reuse, watch, revoke and expiry (no devices)."""

from __future__ import annotations

import ipaddress
import multiprocessing
import queue
import random
import threading
import time

import pytest

from podnet.overlay.lease import Lease, encode_attrs
from podnet.overlay.netconf import parse_netconf
from podnet.overlay.storesubnet import LeaseLost, LeaseRenewer, LeaseWatch, SubnetManager
from podnet.store import keys
from podnet.store.sqlite import SqliteStore

pytestmark = pytest.mark.integration

IP = ipaddress.IPv4Address
Net = ipaddress.IPv4Network
CONF_JSON = b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'


@pytest.fixture
def store_url(tmp_path) -> str:
    return f"sqlite://{tmp_path}/state.db"


def _acquire_in_process(url: str, i: int, start: float, out: multiprocessing.Queue) -> None:
    store = SqliteStore(url)
    try:
        # 20 racers in a range of 31 subnets: collisions are certain, every loser must retry
        conf = parse_netconf(b'{"Network": "10.244.0.0/19", "SubnetLen": 24}')
        while time.time() < start:
            time.sleep(0.001)
        mgr = SubnetManager(store, ttl=60)
        lease = mgr.acquire(conf, IP(f"192.168.0.{i + 1}"), backend_type="vxlan")
        out.put((i, str(lease.subnet), mgr.lost_races))
    except Exception as e:  # reported to the parent, which fails the test
        out.put((i, f"error: {e}", 0))
    finally:
        store.close()


def test_twenty_racing_managers_get_twenty_distinct_subnets(store_url: str) -> None:
    SqliteStore(store_url).close()  # schema first, so racers only race on leases
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue = ctx.Queue()
    start = time.time() + 2.0
    procs = [ctx.Process(target=_acquire_in_process, args=(store_url, i, start, out)) for i in range(20)]
    for p in procs:
        p.start()
    got = [out.get(timeout=60) for _ in procs]
    results = {i: subnet for i, subnet, _ in got}
    for p in procs:
        p.join(timeout=10)
    errors = [v for v in results.values() if v.startswith("error")]
    assert not errors
    assert len(set(results.values())) == 20
    with SqliteStore(store_url) as store:
        stored = store.list(keys.SUBNETS_PREFIX).items
        assert sorted(keys.subnet_from_lease_key(kv.key) for kv in stored) == sorted(results.values())
        assert all(kv.lease for kv in stored)  # every lease key hangs on a TTL


class SlowStore:
    """The real store with etcd-like latency before each put, so every racer lists before anyone writes."""

    def __init__(self, store: SqliteStore, delay: float) -> None:
        self._store = store
        self._delay = delay

    def __getattr__(self, name: str) -> object:
        return getattr(self._store, name)

    def put(self, *args: object, **kwargs: object) -> int:
        time.sleep(self._delay)
        return self._store.put(*args, **kwargs)  # type: ignore[arg-type]


def test_lost_races_are_retried_not_fatal(store_url: str) -> None:
    """20 managers that all pick the same free subnet at the same time (same random seed, slow writes):
    flannel would let 19 of them exit; here each loser re-lists and tries again."""
    conf = parse_netconf(b'{"Network": "10.244.0.0/19", "SubnetLen": 24}')
    barrier = threading.Barrier(20)
    managers: list[SubnetManager] = []
    results: dict[int, object] = {}

    def run(i: int) -> None:
        store = SqliteStore(store_url)
        try:
            mgr = SubnetManager(SlowStore(store, 0.05), ttl=60, rng=random.Random(7))  # type: ignore[arg-type]
            managers.append(mgr)
            barrier.wait()
            results[i] = mgr.acquire(conf, IP(f"192.168.0.{i + 1}"), backend_type="vxlan").subnet
        except Exception as e:
            results[i] = e
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert all(isinstance(r, ipaddress.IPv4Network) for r in results.values()), results
    assert len(set(results.values())) == 20
    assert sum(m.lost_races for m in managers) >= 19  # the first round alone has 19 losers


def test_threads_racing_for_three_subnets_three_win_rest_get_exhaustion(store_url: str) -> None:
    from podnet.errors import AllocationError

    conf = parse_netconf(b'{"Network": "10.5.0.0/22"}')  # 3 allocatable subnets
    results: list[object] = []
    barrier = threading.Barrier(6)

    def run(i: int) -> None:
        store = SqliteStore(store_url)
        try:
            barrier.wait()
            results.append(SubnetManager(store, ttl=60).acquire(conf, IP(f"10.0.0.{i + 1}"), backend_type="udp"))
        except AllocationError as e:
            results.append(e)
        finally:
            store.close()

    threads = [threading.Thread(target=run, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    won = [r.subnet for r in results if isinstance(r, Lease)]
    lost = [r for r in results if isinstance(r, AllocationError)]
    assert sorted(map(str, won)) == ["10.5.1.0/24", "10.5.2.0/24", "10.5.3.0/24"]
    assert len(lost) == 3 and all("out of subnets" in str(e) for e in lost)


def test_lease_json_and_ttl_in_store(store_url: str) -> None:
    with SqliteStore(store_url) as store:
        mgr = SubnetManager(store, ttl=86400)
        conf = parse_netconf(CONF_JSON)
        lease = mgr.acquire(conf, IP("192.168.64.3"), backend_type="vxlan",
                            backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
        kv = store.get(lease.key)
        assert kv is not None
        assert kv.key == f"/coreos.com/network/subnets/{lease.subnet.network_address}-24"
        assert kv.value == (b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                            b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
        assert 86390 < store.lease_ttl(kv.lease) <= 86400
        assert lease.expiration is not None and abs(lease.expiration - (time.time() + 86400)) < 10


def test_restart_reuses_lease_without_writing(store_url: str) -> None:
    with SqliteStore(store_url) as store:
        conf = parse_netconf(CONF_JSON)
        first = SubnetManager(store, ttl=60).acquire(conf, IP("10.0.0.1"), backend_type="vxlan",
                                                     backend_data={"VNI": 1, "VtepMAC": "aa:aa:aa:aa:aa:01"})
        rev = store.revision()
        again = SubnetManager(store, ttl=60).acquire(conf, IP("10.0.0.1"), backend_type="vxlan",
                                                     backend_data={"VNI": 1, "VtepMAC": "aa:aa:aa:aa:aa:01"})
        assert again.subnet == first.subnet and again.store_lease == first.store_lease
        assert store.revision() == rev  # nothing written: peers see no event
        changed = SubnetManager(store, ttl=60).acquire(conf, IP("10.0.0.1"), backend_type="vxlan",
                                                       backend_data={"VNI": 1, "VtepMAC": "aa:aa:aa:aa:aa:02"})
        assert changed.subnet == first.subnet and store.revision() == rev + 1
        assert b"aa:aa:aa:aa:aa:02" in store.get(first.key).value


def test_previous_subnet_after_the_lease_expired(store_url: str) -> None:
    with SqliteStore(store_url) as store:
        conf = parse_netconf(CONF_JSON)
        lease = SubnetManager(store, ttl=60).acquire(conf, IP("10.0.0.1"), backend_type="vxlan",
                                                     previous=Net("10.244.77.0/24"))
        assert lease.subnet == Net("10.244.77.0/24")
        store.revoke(lease.store_lease)  # lease gone, as after a long outage
        again = SubnetManager(store, ttl=60).acquire(conf, IP("10.0.0.1"), backend_type="vxlan",
                                                     previous=lease.subnet)
        assert again.subnet == lease.subnet and again.store_lease != lease.store_lease


def test_watch_reports_others_and_revocation_of_own(store_url: str) -> None:
    with SqliteStore(store_url) as store:
        conf = parse_netconf(CONF_JSON)
        mgr = SubnetManager(store, ttl=60)
        own = mgr.acquire(conf, IP("10.0.0.1"), backend_type="vxlan")
        peer = SubnetManager(store, ttl=1.0).acquire(conf, IP("10.0.0.2"), backend_type="vxlan",
                                                     backend_data={"VNI": 1, "VtepMAC": "aa:aa:aa:aa:aa:02"})
        events: queue.Queue = queue.Queue()
        lost: queue.Queue = queue.Queue()
        watch = LeaseWatch(store, own, lambda evs: [events.put(e) for e in evs], lost.put)
        t = threading.Thread(target=watch.run, daemon=True)
        t.start()
        try:
            first = events.get(timeout=5)
            assert (first.type, first.lease.subnet) == ("added", peer.subnet)
            # the peer's TTL (1 s) runs out: removal carries its last attributes
            gone = events.get(timeout=5)
            assert (gone.type, gone.lease.subnet) == ("removed", peer.subnet)
            assert gone.lease.backend_data == {"VNI": 1, "VtepMAC": "aa:aa:aa:aa:aa:02"}
            assert gone.lease.public_ip == IP("10.0.0.2")
            # an operator revokes our own lease: the watch reports it, naming the subnet
            assert mgr.revoke(own.subnet)
            err = lost.get(timeout=5)
            assert isinstance(err, LeaseLost) and str(own.subnet) in str(err) and "revoked" in str(err)
            t.join(5)
            assert not t.is_alive()
        finally:
            watch.stop()
        assert events.empty()


def test_renewer_keeps_a_short_lease_alive_and_notices_revocation(store_url: str) -> None:
    with SqliteStore(store_url) as store:
        conf = parse_netconf(CONF_JSON)
        mgr = SubnetManager(store, ttl=1.0)
        lease = mgr.acquire(conf, IP("10.0.0.1"), backend_type="vxlan")
        renewer = LeaseRenewer(mgr, lease, margin=0.6, retry=0.1)
        failure: list[BaseException] = []

        def run() -> None:
            try:
                renewer.run()
            except LeaseLost as e:
                failure.append(e)

        t = threading.Thread(target=run, daemon=True)
        t.start()
        time.sleep(2.5)  # 2.5 TTLs: without renewal the key would be gone
        assert store.get(lease.key) is not None and not failure
        store.delete(lease.key)
        t.join(3)
        assert failure and "revoked" in str(failure[0])


def test_stored_value_of_other_tools_is_accepted(store_url: str) -> None:
    """A lease written by a real flanneld (or etcdctl) is read like ours."""
    with SqliteStore(store_url) as store:
        flannel_value = (b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
                         b'"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
        store.put("/coreos.com/network/subnets/10.244.52.0-24", flannel_value)  # a reservation (no TTL)
        store.put("/coreos.com/network/subnets/garbage", b"{}")
        leases, _ = SubnetManager(store).list_leases()
        assert [str(x.subnet) for x in leases] == ["10.244.52.0/24"]
        assert encode_attrs(leases[0]) == flannel_value
        # a reservation for our PublicIP is reused and keeps having no TTL
        conf = parse_netconf(CONF_JSON)
        mine = SubnetManager(store).acquire(conf, IP("192.168.64.3"), backend_type="vxlan",
                                            backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
        assert mine.subnet == Net("10.244.52.0/24") and mine.store_lease == 0 and mine.expiration is None


def test_restart_with_another_ttl_moves_the_key_to_a_lease_of_that_ttl(store_url: str) -> None:
    with SqliteStore(store_url) as store:
        conf = parse_netconf(CONF_JSON)
        short = SubnetManager(store, ttl=5).acquire(conf, IP("10.0.0.1"), backend_type="vxlan")
        longer = SubnetManager(store, ttl=600).acquire(conf, IP("10.0.0.1"), backend_type="vxlan")
        assert longer.subnet == short.subnet and longer.store_lease != short.store_lease
        assert 590 < store.lease_ttl(longer.store_lease) <= 600
        assert store.get(longer.key).lease == longer.store_lease  # type: ignore[union-attr]
