"""The contract suite runs unchanged against every store backend registered here.

Adding a backend is adding one factory: a function decorated with @backend("name") that takes pytest's
TempPathFactory and is a context manager yielding a store URL (open_store(url) must accept it, also in
another process). The factory runs once per session per backend, so a server is started once; every
test works under its own key prefix (the `ns` fixture) and asserts revisions relative to what it saw,
so tests don't see each other's keys. A factory may pytest.skip() when its server binary is missing.
Select backends with `-k sqlite` or `-k etcd` (the backend name is part of every test id).
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import sys
import textwrap
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from podnet.store import Event, Store, Watch, open_store

BackendFactory = Callable[[pytest.TempPathFactory], contextlib.AbstractContextManager[str]]
BACKENDS: dict[str, BackendFactory] = {}


def backend(name: str) -> Callable[[Any], BackendFactory]:
    """Register a context-manager factory `fn(tmp_path_factory) -> URL` under name."""

    def register(fn: Callable[[pytest.TempPathFactory], Iterator[str]]) -> BackendFactory:
        factory = contextlib.contextmanager(fn)
        BACKENDS[name] = factory
        return factory

    return register


# ---- backends (add new factories here, above the fixtures) ------------------------------------------


@backend("sqlite")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield f"sqlite://{tmp_path_factory.mktemp('sqlite-store')}/state.db"


def _etcd_cluster(size: int) -> Iterator[str]:
    from tests.contract.etcd_cluster import EtcdCluster, etcd_available  # tests/contract/etcd_cluster.py

    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    with EtcdCluster(size) as cluster:  # stopped by pid and its data dirs removed, pass or fail
        yield cluster.url


@backend("etcd-1")
def etcd1_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _etcd_cluster(1)


@backend("etcd-3")
def etcd3_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    yield from _etcd_cluster(3)


# ---- fixtures -----------------------------------------------------------------------------------------


@pytest.fixture(scope="session", params=sorted(BACKENDS))
def store_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with BACKENDS[request.param](tmp_path_factory) as url:
        yield url


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ns() -> str:
    """A key prefix nobody else uses: every test keeps its keys under it."""
    return f"/contract/{secrets.token_hex(4)}/"


class Collector:
    """Iterates a watch in a thread so tests can wait for events with a deadline instead of blocking."""

    def __init__(self, watch: Watch) -> None:
        self.watch = watch
        self.events: list[Event] = []
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._done = False
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            for ev in self.watch:
                with self._cond:
                    self.events.append(ev)
                    self._cond.notify_all()
        except BaseException as exc:  # handed to the test thread
            with self._cond:
                self.error = exc
        finally:
            with self._cond:
                self._done = True
                self._cond.notify_all()

    def wait_for(self, pred: Callable[[list[Event]], bool], timeout: float = 5.0) -> list[Event]:
        """Block until pred(events) holds; raise the watch's error, or AssertionError on timeout."""
        with self._cond:
            ok = self._cond.wait_for(lambda: pred(self.events) or self.error is not None or self._done, timeout)
            if self.error is not None:
                raise self.error
            assert ok and pred(self.events), f"timed out after {timeout}s; events so far: {self.events}"
            return list(self.events)

    def wait_count(self, n: int, timeout: float = 5.0) -> list[Event]:
        return self.wait_for(lambda evs: len(evs) >= n, timeout)

    def close(self) -> None:
        self.watch.close()
        self._thread.join(timeout=5)


@pytest.fixture
def collect() -> Iterator[Callable[[Watch], Collector]]:
    made: list[Collector] = []

    def make(watch: Watch) -> Collector:
        c = Collector(watch)
        made.append(c)
        return c

    try:
        yield make
    finally:
        for c in made:
            c.close()


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "src"))
    env["PYTHONPATH"] = src + os.pathsep + env.get("PYTHONPATH", "")
    return env


class Procs:
    """Python code in fresh interpreters: real second processes, each with its own store connection."""

    def __init__(self) -> None:
        self.spawned: list[subprocess.Popen[str]] = []

    def spawn(self, code: str, *args: str) -> subprocess.Popen[str]:
        p = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(code), *args],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=_child_env(),
        )
        self.spawned.append(p)
        return p

    def start_together(self, code: str, argvs: list[list[str]]) -> list[subprocess.Popen[str]]:
        """Spawn one child per argv and release them at once, so they really race.

        code must print "ready" (flushed) once it is connected, then wait for a line on stdin.
        Without this, interpreter start-up (~100 ms) would serialise the children.
        """
        children = [self.spawn(code, *argv) for argv in argvs]
        for p in children:
            assert p.stdout is not None and p.stdin is not None
            line = p.stdout.readline()
            if line.strip() != "ready":
                p.kill()
                _, err = p.communicate()
                raise AssertionError(f"child did not get ready: {line!r} {err}")
        for p in children:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        return children

    def run(self, code: str, *args: str, timeout: float = 30.0) -> str:
        """Run to completion; returns stdout, fails the test with stderr on a non-zero exit."""
        p = self.spawn(code, *args)
        out, err = p.communicate(timeout=timeout)
        assert p.returncode == 0, f"child failed ({p.returncode}): {err}"
        return out

    def cleanup(self) -> None:
        for p in self.spawned:
            if p.poll() is None:
                p.kill()
            p.communicate()


@pytest.fixture
def procs() -> Iterator[Procs]:
    ps = Procs()
    try:
        yield ps
    finally:
        ps.cleanup()
