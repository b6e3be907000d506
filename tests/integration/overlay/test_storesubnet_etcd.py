"""The subnet manager on a real etcd: what a real flanneld (or etcdctl) sees must be flannel's keys, JSON
and TTL, byte for byte."""

from __future__ import annotations

import ipaddress
import json
import queue
import subprocess
import threading
from collections.abc import Iterator

import pytest

from podnet.overlay.netconf import load_netconf, save_netconf
from podnet.overlay.storesubnet import LeaseLost, LeaseWatch, SubnetManager
from podnet.store import keys, open_store
from tests.contract.etcd_cluster import EtcdCluster, etcd_available

pytestmark = pytest.mark.integration

CONF = b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'


@pytest.fixture(scope="module")
def cluster() -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    with EtcdCluster(1) as c:
        yield c


def etcdctl(c: EtcdCluster, *args: str) -> str:
    return subprocess.run(["etcdctl", f"--endpoints={c.endpoints}", *args], capture_output=True, text=True,
                          check=True, timeout=20, env={"ETCDCTL_API": "3", "PATH": "/usr/bin:/bin"}).stdout


def test_flannel_sees_our_config_and_lease(cluster: EtcdCluster) -> None:
    store = open_store(cluster.url)
    try:
        save_netconf(store, CONF)
        assert etcdctl(cluster, "get", "--print-value-only", "/coreos.com/network/config").strip() == CONF.decode()
        conf, _ = load_netconf(store)
        lease = SubnetManager(store).acquire(conf, ipaddress.IPv4Address("192.168.64.3"), backend_type="vxlan",
                                             backend_data={"VNI": 1, "VtepMAC": "c6:d2:32:6f:8f:44"})
        key = f"/coreos.com/network/subnets/{lease.subnet.network_address}-24"
        assert etcdctl(cluster, "get", "--print-value-only", key).strip() == (
            '{"PublicIP":"192.168.64.3","PublicIPv6":null,"BackendType":"vxlan",'
            '"BackendData":{"VNI":1,"VtepMAC":"c6:d2:32:6f:8f:44"}}')
        got = json.loads(etcdctl(cluster, "get", "-w", "json", key))
        lease_id = got["kvs"][0]["lease"]
        ttl = json.loads(etcdctl(cluster, "lease", "timetolive", "-w", "json", format(lease_id, "x")))
        assert ttl["granted-ttl"] == 86400 and 86380 < ttl["ttl"] <= 86400
    finally:
        store.close()


def next_for(events: queue.Queue, subnet: str):  # type: ignore[no-untyped-def]
    """The next event about `subnet` (the module's etcd also holds the other test's lease)."""
    while True:
        ev = events.get(timeout=10)
        if str(ev.lease.subnet) == subnet:
            return ev


def test_flannel_written_lease_is_watched_and_revocation_ends_ours(cluster: EtcdCluster) -> None:
    store = open_store(cluster.url)
    try:
        save_netconf(store, CONF)
        conf, _ = load_netconf(store)
        mgr = SubnetManager(store, ttl=30)
        own = mgr.acquire(conf, ipaddress.IPv4Address("10.0.0.1"), backend_type="vxlan")
        events: queue.Queue = queue.Queue()
        lost: queue.Queue = queue.Queue()
        watch = LeaseWatch(store, own, lambda evs: [events.put(e) for e in evs], lost.put)
        t = threading.Thread(target=watch.run, daemon=True)
        t.start()
        try:
            # a peer's lease put the way flanneld does it (grant + put with the lease), here by etcdctl
            lease_id = etcdctl(cluster, "lease", "grant", "30").split()[1]
            value = '{"PublicIP":"10.0.0.9","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:00:00:09"}}'
            etcdctl(cluster, "put", "--lease", lease_id, "/coreos.com/network/subnets/10.244.200.0-24", value)
            ev = next_for(events, "10.244.200.0/24")
            assert ev.type == "added"
            assert ev.lease.backend_data == {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:09"}
            etcdctl(cluster, "lease", "revoke", lease_id)
            ev = next_for(events, "10.244.200.0/24")
            assert ev.type == "removed" and ev.lease.backend_data == {"VNI": 1, "VtepMAC": "aa:bb:cc:00:00:09"}
            etcdctl(cluster, "del", own.key)
            err = lost.get(timeout=10)
            assert isinstance(err, LeaseLost) and "revoked" in str(err)
        finally:
            watch.stop()
            t.join(5)
        assert keys.subnet_lease(str(own.subnet)) == own.key
    finally:
        store.close()
