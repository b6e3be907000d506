"""podnet and flanneld share one etcd: same keys, same lease JSON byte for byte, leases on etcd leases.

"flanneld" here is etcdctl, etcd's own Go v3 client (the client library flanneld uses): it grants a
24 h lease and puts the lease JSON under /coreos.com/network/subnets/<ip>-<plen>, as flannel's etcd
registry does; values are flannel-golden-cases.md §3. podnet is the real overlay subnet manager on the
etcd store.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from podnet.overlay.lease import LeaseEvent
from podnet.overlay.netconf import load_netconf
from podnet.overlay.storesubnet import SUBNET_TTL, LeaseLost, LeaseWatch, SubnetManager
from podnet.store import keys
from podnet.store.etcd import EtcdStore
from tests.contract.etcd_cluster import EtcdCluster, etcd_available

pytestmark = pytest.mark.integration

CONFIG = b'{ "Network": "10.5.0.0/16", "Backend": { "Type": "vxlan" } }'
# flannel Documentation/reservations.md: a real vxlan lease value
VXLAN_VALUE = b'{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}'
# flannel pkg/subnet/etcd/registry_test.go: a lease without backend attributes
MINIMAL_VALUE = b'{"PublicIP":"1.2.3.4","PublicIPv6":null}'


@pytest.fixture(scope="module")
def etcd1() -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd server binary not installed")
    with EtcdCluster(1) as c:
        yield c


@pytest.fixture
def etcd(etcd1: EtcdCluster) -> Iterator[EtcdCluster]:
    etcd1.etcdctl("del", "--prefix", keys.FLANNEL_PREFIX)
    etcd1.etcdctl("put", keys.NETWORK_CONFIG, CONFIG.decode())
    yield etcd1
    etcd1.etcdctl("del", "--prefix", keys.FLANNEL_PREFIX)


def flannel_create_lease(etcd: EtcdCluster, subnet: str, value: bytes, ttl: int = int(SUBNET_TTL)) -> int:
    """What flanneld's createSubnet does: Grant(24 h), then put the JSON with the lease attached."""
    out = etcd.etcdctl("lease", "grant", str(ttl))  # "lease 694d7ab1a3e8a20b granted with TTL(86400s)"
    lease_id = int(out.split()[1], 16)
    etcd.etcdctl("put", f"--lease={lease_id:x}", keys.subnet_lease(subnet), value.decode())
    return lease_id


def flannel_read(etcd: EtcdCluster, key: str) -> tuple[bytes, int]:
    """The raw bytes and etcd lease id flanneld would read for key."""
    doc = json.loads(etcd.etcdctl("get", key, "-w", "json"))
    (kv,) = doc["kvs"]
    return base64.b64decode(kv["value"]), int(kv.get("lease", 0))


def granted_ttl(etcd: EtcdCluster, lease_id: int) -> int:
    doc = json.loads(etcd.etcdctl("lease", "timetolive", f"{lease_id:x}", "-w", "json"))
    return int(doc["granted-ttl"])


def test_podnet_reads_flannel_written_leases_as_peers(etcd: EtcdCluster) -> None:
    flannel_id = flannel_create_lease(etcd, "10.5.52.0/24", VXLAN_VALUE)
    store = EtcdStore(etcd.url)
    events: list[LeaseEvent] = []
    cond = threading.Condition()
    lost: list[LeaseLost] = []

    def handler(evs: list[LeaseEvent]) -> None:
        with cond:
            events.extend(evs)
            cond.notify_all()

    def wait_events(n: int) -> list[LeaseEvent]:
        with cond:
            if not cond.wait_for(lambda: len(events) >= n, 10):
                inf = watcher.informer if watcher is not None else None
                state = (f"informer revision {inf.revision}, relists {inf.relists}, holds {sorted(inf.snapshot())}"
                         if inf is not None else "no watcher")
                raise AssertionError(f"events so far: {events}; lost: {lost}; {state}; store revision {store.revision()}")
            return list(events)

    watcher: LeaseWatch | None = None
    thread: threading.Thread | None = None
    try:
        mgr = SubnetManager(store)
        leases, _ = mgr.list_leases()
        (peer,) = leases
        assert str(peer.subnet) == "10.5.52.0/24"
        assert str(peer.public_ip) == "192.168.64.3" and peer.public_ipv6 is None
        assert peer.backend_type == "vxlan"
        assert peer.backend_data == {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}
        assert peer.store_lease == flannel_id

        conf, _ = load_netconf(store)
        own = mgr.acquire(conf, ipaddress.IPv4Address("192.168.64.9"), backend_type="vxlan",
                          backend_data={"VNI": 1, "VtepMAC": "0a:00:00:00:00:09"})
        assert own.subnet != peer.subnet and own.subnet.subnet_of(ipaddress.IPv4Network("10.5.0.0/16"))

        watcher = LeaseWatch(store, own, handler, lost.append)
        thread = threading.Thread(target=watcher.run, daemon=True)
        thread.start()
        first = wait_events(1)
        assert [(e.type, str(e.lease.subnet), e.lease.backend_data) for e in first] == [
            ("added", "10.5.52.0/24", {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
        ]

        # a flanneld joining later, with flannel's minimal value, shows up live. Its subnet is one podnet did
        # not pick (acquire picks at random, and a flanneld writing over our key would be a takeover)
        later_subnet = next(s for s in ("10.5.60.0/24", "10.5.61.0/24") if s != str(own.subnet))
        flannel_create_lease(etcd, later_subnet, MINIMAL_VALUE)
        later = wait_events(2)[1]
        assert (later.type, str(later.lease.subnet), str(later.lease.public_ip)) == ("added", later_subnet, "1.2.3.4")

        # that flanneld's etcd lease ends (revoke = what expiry does): removal carries the old attributes
        etcd.etcdctl("lease", "revoke", f"{flannel_id:x}")
        gone = wait_events(3)[2]
        assert (gone.type, str(gone.lease.subnet)) == ("removed", "10.5.52.0/24")
        assert gone.lease.backend_data == {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}
        assert lost == []
    finally:
        if watcher is not None:
            watcher.stop()
        if thread is not None:
            thread.join(timeout=10)
        store.close()


@pytest.mark.parametrize(
    ("public_ip", "backend_type", "backend_data", "expected"),
    [
        ("192.168.64.3", "vxlan", {"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"}, VXLAN_VALUE),
        ("1.2.3.4", None, None, MINIMAL_VALUE),
        ("10.0.0.7", "host-gw", None, b'{"PublicIP":"10.0.0.7","PublicIPv6":null,"BackendType":"host-gw"}'),
    ],
)
def test_podnet_lease_is_byte_identical_to_flannels(
    etcd: EtcdCluster, public_ip: str, backend_type: str | None, backend_data: Any, expected: bytes
) -> None:
    store = EtcdStore(etcd.url)
    try:
        conf, _ = load_netconf(store)
        mgr = SubnetManager(store)
        t0 = time.time()
        lease = mgr.acquire(conf, ipaddress.IPv4Address(public_ip), backend_type=backend_type,
                            backend_data=backend_data, previous=ipaddress.IPv4Network("10.5.52.0/24"))
        assert str(lease.subnet) == "10.5.52.0/24"  # flannel's subnet.env reuse rule
        value, etcd_lease = flannel_read(etcd, "/coreos.com/network/subnets/10.5.52.0-24")
        assert value == expected
        # on an etcd lease of flannel's 24 h, so a flanneld sees it expire like its own
        assert etcd_lease == lease.store_lease != 0
        assert granted_ttl(etcd, etcd_lease) == 86400
        assert lease.expiration is not None and lease.expiration >= t0 + 86400 - 5
    finally:
        store.close()
