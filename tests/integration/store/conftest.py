"""Fixtures for the etcd fault tests: one 3-member loopback cluster per module, healed after each test."""

from __future__ import annotations

import secrets
import threading
from collections.abc import Callable, Iterator

import pytest

from podnet.store import Event, Watch
from podnet.store.etcd import EtcdStore
from tests.contract.etcd_cluster import EtcdCluster, etcd_available


@pytest.fixture(scope="module")
def etcd1() -> Iterator[EtcdCluster]:
    """One loopback etcd member per module (the bucket and big-apply tests)."""
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    with EtcdCluster(1) as c:  # stopped by pid, data dir removed, pass or fail
        yield c


@pytest.fixture
def etcd_store(etcd1: EtcdCluster) -> Iterator[EtcdStore]:
    s = EtcdStore(etcd1.url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture(scope="module")
def cluster3() -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    with EtcdCluster(3) as c:  # every member stopped by pid, data dirs removed, pass or fail
        yield c


@pytest.fixture
def cluster(cluster3: EtcdCluster) -> Iterator[EtcdCluster]:
    """The module's cluster; members a test killed are restarted afterwards so the next test starts whole."""
    try:
        yield cluster3
    finally:
        if not all(m.running for m in cluster3.members):
            cluster3.restart_all()


@pytest.fixture
def ns() -> str:
    return f"/faults/{secrets.token_hex(4)}/"


class Collector:
    """Iterates a watch on a thread; the test waits for events with a deadline."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self.done = False
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self.watch:
                with self._cond:
                    self.events.append(ev)
                    self._cond.notify_all()
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            with self._cond:
                self.error = exc
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[Event]], bool], timeout: float = 10.0) -> list[Event]:
        with self._cond:
            self._cond.wait_for(lambda: pred(self.events) or self.done, timeout)
            if not pred(self.events):
                raise AssertionError(f"timed out; events={self.events} error={self.error!r}")
            return list(self.events)

    def wait_done(self, timeout: float = 15.0) -> BaseException | None:
        with self._cond:
            self._cond.wait_for(lambda: self.done, timeout)
            assert self.done, "watch still running"
            return self.error

    def close(self) -> None:
        self.watch.close()
        self._thread.join(timeout=5)


@pytest.fixture
def collect() -> Iterator[Callable[[Watch], Collector]]:
    made: list[Collector] = []

    def make(w: Watch) -> Collector:
        c = Collector(w)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()
