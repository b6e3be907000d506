"""The daemon's orchestration with a recording fake backend (no kernel): call order, peers, restart, loss."""

from __future__ import annotations

import ipaddress
import socket
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import pytest

from podnet.errors import AllocationError, ValidationError
from podnet.overlay.daemon import DaemonOptions, OverlayDaemon
from podnet.overlay.lease import Lease, encode_attrs
from podnet.store import keys
from podnet.store.sqlite import SqliteStore

IP = ipaddress.IPv4Address


@dataclass
class Ext:
    name: str = "eth0"
    index: int = 2
    address: ipaddress.IPv4Address = IP("192.168.77.1")
    public_ip: ipaddress.IPv4Address = IP("192.168.77.1")
    mtu: int = 1500


@dataclass
class FakeBackend:
    calls: list[tuple[str, Any]] = field(default_factory=list)
    backend_type: str = "vxlan"
    mtu: int = 1450
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _rec(self, name: str, arg: Any = None) -> None:
        with self.lock:
            self.calls.append((name, arg))

    def register(self) -> dict[str, Any]:
        self._rec("register")
        return {"VNI": 1, "VtepMAC": "02:00:00:00:00:01"}

    def configure(self, own: Any, network: Any) -> None:
        self._rec("configure", (str(own.subnet), str(network)))

    def add_remote(self, lease: Any) -> None:
        self._rec("add", str(lease.subnet))

    def remove_remote(self, lease: Any) -> None:
        self._rec("remove", (str(lease.subnet), lease.backend_data))

    def resync(self) -> None:
        pass

    def close(self) -> None:
        self._rec("close")

    def names(self) -> list[str]:
        with self.lock:
            return [c[0] for c in self.calls]


class FakeRules:
    def __init__(self, want: Any) -> None:
        self.want = want
        self.syncs = 0

    def sync(self) -> bool:
        self.syncs += 1
        return self.syncs == 1


def make(store: SqliteStore, tmp_path, backend: FakeBackend, **opts: Any) -> OverlayDaemon:  # type: ignore[no-untyped-def]
    o = DaemonOptions(node="n1", iface="eth0", subnet_file=str(tmp_path / "subnet.env"), resync_period=0.1, **opts)
    return OverlayDaemon(store, o, backend_factory=lambda *a, **k: backend,
                         interface_lookup=lambda iface, pub: Ext(), rules_factory=FakeRules)


def wait_until(cond, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


@pytest.fixture
def store(tmp_path):  # type: ignore[no-untyped-def]
    s = SqliteStore(f"sqlite://{tmp_path}/state.db")
    s.put(keys.NETWORK_CONFIG, b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}')
    yield s
    s.close()


def peer(subnet: str, ip: str) -> tuple[str, bytes]:
    lease = Lease(subnet=ipaddress.IPv4Network(subnet), public_ip=IP(ip), backend_type="vxlan",
                  backend_data={"VNI": 1, "VtepMAC": "02:00:00:00:00:99"})
    return lease.key, encode_attrs(lease)


def test_start_order_peers_and_clean_stop(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store.put(*peer("10.244.9.0/24", "192.168.77.9"))
    backend = FakeBackend()
    d = make(store, tmp_path, backend, ip_masq=True)
    lease = d.start()
    try:
        assert backend.names()[:2] == ["register", "configure"]
        assert backend.calls[1] == ("configure", (str(lease.subnet), "10.244.0.0/16"))
        wait_until(lambda: ("add", "10.244.9.0/24") in backend.calls)
        assert (tmp_path / "subnet.env").read_text() == (
            f"FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET={lease.subnet.network_address + 1}/24\n"
            "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        stored = store.get(lease.key)
        assert stored is not None and b'"VtepMAC":"02:00:00:00:00:01"' in stored.value
        # a new peer, then its removal carrying its last attributes. The daemon picked its own subnet at
        # random among the free ones: the peer must take another (writing over ours is a take-over).
        other = next(s for s in ("10.244.10.0/24", "10.244.11.0/24") if s != str(lease.subnet))
        store.put(*peer(other, "192.168.77.10"))
        wait_until(lambda: ("add", other) in backend.calls)
        store.delete(keys.subnet_lease(other))
        wait_until(lambda: any(c[0] == "remove" for c in backend.calls))
        assert ("remove", (other, {"VNI": 1, "VtepMAC": "02:00:00:00:00:99"})) in backend.calls
        assert ("add", str(lease.subnet)) not in backend.calls  # never our own
        wait_until(lambda: d.rules.syncs >= 3)  # the resync loop keeps checking the rules
    finally:
        d.stop()
        assert d.wait() == 0
    assert backend.names()[-1] == "close"
    assert store.get(lease.key) is not None  # the lease stays for the restart


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def test_healthz_readyz_and_metrics(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store.put(*peer("10.244.9.0/24", "192.168.77.9"))
    port = free_port()
    backend = FakeBackend()
    d = make(store, tmp_path, backend, healthz_ip="127.0.0.1", healthz_port=port, lease_ttl=60, renew_margin=59.5)
    lease = d.start()
    try:
        assert get(port, "/healthz") == (200, "ok\n")
        assert get(port, "/readyz") == (200, "ok\n")
        wait_until(lambda: "podnet_overlay_peers 1.0" in get(port, "/metrics")[1])
        wait_until(lambda: "podnet_overlay_lease_renewals_total 1.0" in get(port, "/metrics")[1])
        metrics = get(port, "/metrics")[1]
        assert 'podnet_overlay_peer_events_total{type="added"} 1.0' in metrics
        exp = float(next(line.split()[1] for line in metrics.splitlines()
                         if line.startswith("podnet_overlay_lease_expiration_timestamp_seconds ")))
        assert abs(exp - (time.time() + 60)) < 5 and lease.expiration is not None
        assert get(port, "/nope")[0] == 404
    finally:
        d.stop()
        d.wait()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)


def test_restart_keeps_subnet_and_writes_nothing(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    first = make(store, tmp_path, FakeBackend())
    lease = first.start()
    first.stop()
    first.wait()
    rev = store.revision()
    (tmp_path / "subnet.env").unlink()  # even without the old subnet.env: found again by PublicIP
    second = make(store, tmp_path, FakeBackend())
    try:
        assert second.start().subnet == lease.subnet
        assert store.revision() == rev
    finally:
        second.stop()
        second.wait()


def test_revoked_lease_stops_the_daemon_with_code_1(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    backend = FakeBackend()
    d = make(store, tmp_path, backend)
    lease = d.start()
    store.delete(lease.key)
    assert d.wait() == 1
    assert d.lost is not None and f"lease {lease.subnet} has been revoked" in str(d.lost)
    assert backend.names()[-1] == "close"


def test_ipv6_config_is_refused_before_the_backend_is_made(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store.put(keys.NETWORK_CONFIG, b'{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48"}')
    backend = FakeBackend()
    with pytest.raises(ValidationError, match="EnableIPv6"):
        make(store, tmp_path, backend).start()
    assert backend.calls == [] and not (tmp_path / "subnet.env").exists()


def test_full_network_is_refused_before_the_backend_is_made(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    store.put(keys.NETWORK_CONFIG, b'{"Network": "10.5.0.0/22", "Backend": {"Type": "vxlan"}}')
    for i in (1, 2, 3):
        store.put(*peer(f"10.5.{i}.0/24", f"192.168.77.{100 + i}"))
    backend = FakeBackend()
    with pytest.raises(AllocationError, match="out of subnets"):
        make(store, tmp_path, backend).start()
    assert backend.calls == []


def test_renew_margin_must_fit_the_ttl(store, tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError, match="--renew-margin"):
        make(store, tmp_path, FakeBackend(), lease_ttl=10, renew_margin=10)
