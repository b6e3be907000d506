"""etcd fault tests on a 3-member loopback cluster: members die, the store carries on or says so fast.

Members are SIGKILLed (a crash, not a clean shutdown). The cluster fixture restarts them after each test.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest

from podnet.store import Put, StoreUnavailable
from podnet.store.etcd import EtcdStore
from podnet.store.informer import Informer

pytestmark = pytest.mark.integration

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "src"))


def leader_first(cluster: Any) -> tuple[int, str]:
    """The leader's index and a URL listing it first, so the store talks to the member we kill."""
    lead = cluster.leader()
    eps = [cluster.members[lead].endpoint] + [m.endpoint for i, m in enumerate(cluster.members) if i != lead]
    return lead, "etcd://" + ",".join(eps)


class KeepAliver:
    """What a daemon does with its lease: keepalive every interval; records every outcome."""

    def __init__(self, store: EtcdStore, lease: int, interval: float = 0.5) -> None:
        self.store, self.lease, self.interval = store, lease, interval
        self.ok: list[float] = []  # monotonic times of successful keepalives
        self.errors: list[BaseException] = []
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.store.keepalive(self.lease)
                self.ok.append(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - recorded for the test
                self.errors.append(exc)

    def stop(self) -> None:
        self._stop.set()
        self._t.join(timeout=10)


def test_one_member_down_reads_writes_watches_and_keepalives_go_on(cluster: Any, ns: str, collect: Any) -> None:
    lead, url = leader_first(cluster)
    store = EtcdStore(url)
    try:
        ttl = 3
        lease = store.grant(ttl)
        store.put(ns + "lease", b"held", lease=lease)
        r0 = store.revision()
        watch = collect(store.watch(ns, r0 + 1))
        keeper = KeepAliver(store, lease)
        store.put(ns + "before", b"0")
        watch.wait_for(lambda evs: len(evs) == 1)

        cluster.kill_member(lead)  # the leader, and the member the store and the watch talk to
        killed_at = time.monotonic()

        revs = [store.put(f"{ns}k{i}", f"v{i}".encode()) for i in range(10)]
        assert revs == sorted(revs) and len(set(revs)) == 10
        kv = store.get(f"{ns}k9")
        assert kv is not None and kv.value == b"v9" and kv.mod_revision == revs[-1]
        assert [k.key for k in store.list(ns).items] == [ns + "before"] + [f"{ns}k{i}" for i in range(10)] + [
            ns + "lease"
        ]
        rc = store.commit([Put(ns + "t1", b"1"), Put(ns + "t2", b"2")])
        assert rc == revs[-1] + 1

        # the watch moved to a live member and resumed where it was: every write once, in order
        events = watch.wait_for(lambda evs: len(evs) >= 13)
        assert [(e.key, e.revision) for e in events[1:]] == [(f"{ns}k{i}", r) for i, r in enumerate(revs)] + [
            (ns + "t1", rc), (ns + "t2", rc),
        ]
        assert watch.error is None

        # outlive the TTL: only the keepalives (now answered by the new leader) keep the key
        time.sleep(max(0.0, killed_at + ttl + 1 - time.monotonic()))
        keeper.stop()
        assert keeper.errors == []
        assert [t for t in keeper.ok if t > killed_at + 1], "no keepalive went through after the kill"
        kv = store.get(ns + "lease")
        assert kv is not None and kv.lease == lease
        assert store.keepalive(lease) == ttl
    finally:
        store.close()


def test_all_members_down_fails_fast(cluster: Any, ns: str) -> None:
    store = EtcdStore(cluster.url)
    try:
        store.put(ns + "k", b"v")
        cluster.kill_all()
        for call in (lambda: store.get(ns + "k"), lambda: store.put(ns + "k", b"w"), lambda: store.list(ns),
                     lambda: store.watch(ns, 0), lambda: store.grant(5)):
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match="no etcd member answered"):
                call()
            # refused everywhere is known at once; the 5 s budget is only for a cluster that is up
            assert time.monotonic() - t0 < 1.0
    finally:
        store.close()


def _cli_has_get() -> bool:
    out = subprocess.run([sys.executable, "-m", "podnet.cli.main", "get", "--help"], capture_output=True,
                         text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=60)
    return out.returncode == 0


def test_cli_exits_2_store_unreachable_when_all_members_are_down(cluster: Any) -> None:
    if not _cli_has_get():
        pytest.skip("`podnet get` not implemented yet (CLI area); the store-level check is above")
    cluster.kill_all()
    t0 = time.monotonic()
    out = subprocess.run(
        [sys.executable, "-m", "podnet.cli.main", "--store", cluster.url, "get", "services"],
        capture_output=True, text=True, env={**os.environ, "PYTHONPATH": SRC}, timeout=60,
    )
    elapsed = time.monotonic() - t0
    assert out.returncode == 2, out
    assert "store unreachable" in out.stderr
    assert cluster.url in out.stderr
    assert elapsed < 4.5  # interpreter start + imports; the store part is milliseconds


def test_cluster_return_watch_informer_and_keepalive_resume(cluster: Any, ns: str, collect: Any) -> None:
    store = EtcdStore(cluster.url)
    seen: list[tuple[str, Any, Any]] = []
    informer = Informer(store, ns, decode=bytes, on_change=lambda k, o, n: seen.append((k, o, n)),
                        retry_interval=0.5)
    try:
        lease = store.grant(10)
        store.put(ns + "own", b"lease", lease=lease)
        informer.start()
        assert informer.wait_synced(5)
        r = store.put(ns + "a", b"1")
        watch = collect(store.watch(ns, r))
        watch.wait_for(lambda evs: len(evs) == 1)

        cluster.kill_all()
        # with no member left the watch ends with StoreUnavailable (the informer re-lists, below)
        assert isinstance(watch.wait_done(timeout=15), StoreUnavailable)
        time.sleep(1.5)  # an outage much shorter than the 10 s TTL
        cluster.restart_all()
        back = time.monotonic()

        # the lease survived and keepalive works again within 5 s of the cluster's return
        while True:
            try:
                assert store.keepalive(lease) == 10
                break
            except StoreUnavailable:
                assert time.monotonic() - back < 5, "keepalive did not resume within 5 s"
                time.sleep(0.1)
        kv = store.get(ns + "own")
        assert kv is not None and kv.lease == lease

        # a watch resumed from the last delivered revision + 1 misses nothing written since
        r2 = store.put(ns + "b", b"2")
        resumed = collect(store.watch(ns, watch.watch.next_revision))
        assert [(e.key, e.revision) for e in resumed.wait_for(lambda evs: len(evs) >= 1)] == [(ns + "b", r2)]

        # the informer (what daemons use) re-listed on its own and follows new writes
        deadline = back + 5
        while time.monotonic() < deadline and informer.get(ns + "b") != b"2":
            time.sleep(0.05)
        assert informer.get(ns + "b") == b"2", "informer did not resync within 5 s"
        assert informer.relists >= 1
        assert ("add", None, b"2") in seen
    finally:
        informer.stop()
        store.close()


def test_leases_survive_an_outage_shorter_than_their_ttl(cluster: Any, ns: str) -> None:
    store = EtcdStore(cluster.url)
    try:
        lease = store.grant(6)
        store.put(ns + "node", b"up", lease=lease)
        cluster.kill_all()
        time.sleep(3)  # half the TTL with no member alive to count it down
        cluster.restart_all()
        # etcd restores leases with a fresh TTL when the new leader takes over
        assert store.lease_ttl(lease) > 3
        kv = store.get(ns + "node")
        assert kv is not None and kv.value == b"up" and kv.lease == lease
        assert store.keepalive(lease) == 6
        store.revoke(lease)
        assert store.get(ns + "node") is None
    finally:
        store.close()


def test_a_silent_host_costs_one_connect_timeout_then_fails_over(cluster: Any, ns: str) -> None:
    # a socket that listens but never accepts: TCP connects, gRPC never hears back, like a hung host
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(0)
        port = silent.getsockname()[1]
        alone = EtcdStore(f"etcd://127.0.0.1:{port}")
        try:
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable):
                alone.get(ns + "x")
            assert time.monotonic() - t0 < 2.5
        finally:
            alone.close()
        mixed = EtcdStore(f"etcd://127.0.0.1:{port}," + cluster.endpoints)
        try:
            rev = mixed.put(ns + "x", b"1")  # not ambiguous: the silent host never got it
            kv = mixed.get(ns + "x")
            assert kv is not None and kv.mod_revision == rev
        finally:
            mixed.close()


class _SlowStart:
    """A loopback TCP relay to one member that holds back the member's first bytes (its HTTP/2 SETTINGS) for
    `delay` seconds, as a busy machine or a slow link would: the connection is up, the handshake is late."""

    def __init__(self, target: str, delay: float) -> None:
        host, port = target.rsplit(":", 1)
        self.target, self.delay = (host, int(port)), delay
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.sock.accept()
            except OSError:
                return
            server = socket.create_connection(self.target)
            threading.Thread(target=self._pipe, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pipe, args=(server, client, self.delay), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            first = True
            while data := src.recv(65536):
                if first and delay:
                    time.sleep(delay)
                first = False
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.sock.close()


def test_a_member_slow_to_finish_the_handshake_is_waited_for_not_given_up(cluster: Any, ns: str) -> None:
    """gRPC gives a connection attempt at least its min_reconnect_backoff: once 100 ms, so one member whose
    SETTINGS came 0.1 s late (a loaded machine) was 'unreachable' and a one-member store failed at once."""
    relay = _SlowStart(cluster.members[0].endpoint, 0.5)
    store = EtcdStore(f"etcd://127.0.0.1:{relay.port}")
    try:
        rev = store.put(ns + "slow", b"1")
        kv = store.get(ns + "slow")
        assert kv is not None and kv.mod_revision == rev
    finally:
        store.close()
        relay.close()
