"""Informer against a real SQLite store, with a second writer process and real compaction gaps."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from podnet.store import CompactedError, Store, StoreUnavailable, Watch
from podnet.store.informer import Informer
from podnet.store.sqlite import SqliteStore

P = "/podnet/test/things/"


class Thing(BaseModel):
    name: str
    n: int


def enc(name: str, n: int) -> bytes:
    return Thing(name=name, n=n).model_dump_json().encode()


class Recorder:
    def __init__(self) -> None:
        self.changes: list[tuple[str, Thing | None, Thing | None]] = []
        self._cond = threading.Condition()

    def __call__(self, kind: str, old: Thing | None, new: Thing | None) -> None:
        with self._cond:
            self.changes.append((kind, old, new))
            self._cond.notify_all()

    def wait_count(self, n: int, timeout: float = 5.0) -> list[tuple[str, Thing | None, Thing | None]]:
        with self._cond:
            assert self._cond.wait_for(lambda: len(self.changes) >= n, timeout), f"got only {self.changes}"
            return list(self.changes)

    def brief(self) -> list[tuple[str, tuple[str, int] | None, tuple[str, int] | None]]:
        with self._cond:
            return [(k, (o.name, o.n) if o else None, (n.name, n.n) if n else None) for k, o, n in self.changes]


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(f"sqlite://{tmp_path}/state.db")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def informers() -> Iterator[Callable[..., Informer[Thing]]]:
    made: list[Informer[Thing]] = []

    def make(store: Store, **kw: Any) -> Informer[Thing]:
        inf: Informer[Thing] = Informer(store, P, Thing.model_validate_json, **kw)
        made.append(inf)
        return inf

    try:
        yield make
    finally:
        for inf in made:
            inf.stop()


def run_writer(url: str, code: str) -> None:
    """Run code in another interpreter with `s` bound to the store: a real second writer."""
    src = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "src"))
    env = dict(os.environ, PYTHONPATH=src + os.pathsep + os.environ.get("PYTHONPATH", ""))
    prog = f"from podnet.store import open_store\ns = open_store({url!r})\nP = {P!r}\n" + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", prog], capture_output=True, text=True, env=env, timeout=30,
                          check=False)
    assert done.returncode == 0, done.stderr


def test_initial_list_is_delivered_as_adds_and_bad_values_are_skipped(
    store: SqliteStore, informers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store.put(P + "a", enc("a", 1))
    store.put(P + "bad", b"{not json")
    store.put(P + "b", enc("b", 2))
    store.put("/podnet/test/other/x", enc("x", 9))  # outside the prefix
    rec = Recorder()
    with caplog.at_level(logging.ERROR, logger="podnet.store.informer"):
        inf = informers(store, on_change=rec).start()
        assert inf.wait_synced(5)
    assert rec.brief() == [("add", None, ("a", 1)), ("add", None, ("b", 2))]
    assert {k: v.n for k, v in inf.snapshot().items()} == {P + "a": 1, P + "b": 2}
    assert inf.revision == store.revision()
    assert any(P + "bad" in r.getMessage() for r in caplog.records), caplog.text


def test_changes_by_another_process_arrive_typed_and_in_order(store: SqliteStore, informers: Any) -> None:
    store.put(P + "a", enc("a", 1))
    rec = Recorder()
    inf = informers(store, on_change=rec).start()
    assert inf.wait_synced(5)
    run_writer(store.url, """
        s.put(P + "b", b'{"name": "b", "n": 2}')
        s.put(P + "a", b'{"name": "a", "n": 10}')
        s.delete(P + "b")
        s.put(P + "c", b'{"name": "c", "n": 3}')
        s.close()
    """)
    rec.wait_count(5)
    assert rec.brief() == [
        ("add", None, ("a", 1)),
        ("add", None, ("b", 2)),
        ("update", ("a", 1), ("a", 10)),
        ("delete", ("b", 2), None),
        ("add", None, ("c", 3)),
    ]
    assert all(isinstance(new, Thing) for kind, _, new in rec.changes if kind != "delete")
    deadline = time.monotonic() + 2
    while inf.revision != store.revision() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert inf.revision == store.revision()
    assert {k: v.n for k, v in inf.snapshot().items()} == {P + "a": 10, P + "c": 3}


def test_bad_update_keeps_last_good_object_and_names_the_key(
    store: SqliteStore, informers: Any, caplog: pytest.LogCaptureFixture
) -> None:
    store.put(P + "a", enc("a", 1))
    rec = Recorder()
    inf = informers(store, on_change=rec).start()
    assert inf.wait_synced(5)
    with caplog.at_level(logging.ERROR, logger="podnet.store.informer"):
        store.put(P + "a", b'{"name": "a"}')  # n missing
        store.put(P + "z", enc("z", 26))  # the stream goes on after a bad object
        rec.wait_count(2)
    assert rec.brief() == [("add", None, ("a", 1)), ("add", None, ("z", 26))]
    assert inf.get(P + "a") == Thing(name="a", n=1)
    assert any(P + "a" in r.getMessage() for r in caplog.records), caplog.text
    store.put(P + "a", enc("a", 2))
    rec.wait_count(3)
    assert rec.brief()[2] == ("update", ("a", 1), ("a", 2))


class GappyStore:
    """Delegates to a real store; its first watch blocks until released, then hands out the real watch
    (which fails for real if the history was compacted meanwhile) or raises StoreUnavailable."""

    def __init__(self, inner: SqliteStore, fail_with: str) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail_with = fail_with
        self.release = threading.Event()
        self.watch_calls = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def watch(self, prefix: str, from_revision: int) -> Watch:
        self.watch_calls += 1
        if self.watch_calls == 1:
            assert self.release.wait(10)
            if self.fail_with == "unavailable":
                raise StoreUnavailable("simulated: connection lost")
        return self.inner.watch(prefix, from_revision)


@pytest.mark.parametrize("gap", ["compacted", "unavailable"])
def test_gap_relists_and_delivers_the_difference(store: SqliteStore, informers: Any, gap: str) -> None:
    store.put(P + "keep", enc("keep", 1))
    store.put(P + "change", enc("change", 1))
    store.put(P + "gone", enc("gone", 1))
    gappy = GappyStore(store, "compacted" if gap == "compacted" else "unavailable")
    rec = Recorder()
    inf = informers(gappy, on_change=rec, retry_interval=0.05).start()
    assert inf.wait_synced(5)
    synced_rev = inf.revision
    # while the informer is cut off, another process changes things and history is compacted
    run_writer(store.url, """
        s.put(P + "change", b'{"name": "change", "n": 2}')
        s.delete(P + "gone")
        s.put(P + "new", b'{"name": "new", "n": 1}')
        s.put(P + "new", b'{"name": "new", "n": 2}')
        s.compact(s.revision())
        s.close()
    """)
    if gap == "compacted":
        with pytest.raises(CompactedError):
            store.watch(P, synced_rev + 1)  # proves the gap is real: those events are gone
    gappy.release.set()
    rec.wait_count(6)
    assert sorted(rec.brief()[3:]) == sorted([
        ("update", ("change", 1), ("change", 2)),
        ("delete", ("gone", 1), None),
        ("add", None, ("new", 2)),
    ])
    assert inf.relists == 1
    assert {k: v.n for k, v in inf.snapshot().items()} == {P + "keep": 1, P + "change": 2, P + "new": 2}
    # after the re-list the informer follows live changes again
    store.put(P + "keep", enc("keep", 5))
    rec.wait_count(7)
    assert rec.brief()[6] == ("update", ("keep", 1), ("keep", 5))


def test_a_failing_handler_does_not_stop_the_others(store: SqliteStore, informers: Any) -> None:
    def boom(kind: str, old: Any, new: Any) -> None:
        raise RuntimeError("handler bug")

    rec = Recorder()
    inf = informers(store, on_change=boom)
    inf.add_handler(rec)
    inf.start()
    assert inf.wait_synced(5)
    store.put(P + "a", enc("a", 1))
    store.put(P + "b", enc("b", 2))
    rec.wait_count(2)
    assert rec.brief() == [("add", None, ("a", 1)), ("add", None, ("b", 2))]


def test_stop_ends_the_thread_and_wait_synced_times_out_before_start(store: SqliteStore) -> None:
    inf: Informer[Thing] = Informer(store, P, Thing.model_validate_json)
    assert inf.wait_synced(0.01) is False
    inf.start()
    assert inf.wait_synced(5)
    inf.stop()
    assert inf._thread is not None and not inf._thread.is_alive()
    store.put(P + "late", enc("late", 1))
    time.sleep(0.1)
    assert inf.snapshot() == {}


def test_decode_kv_gets_the_key_and_exactly_one_decoder_is_required(store: SqliteStore) -> None:
    store.put(P + "x", b"7")
    inf: Informer[tuple[str, int]] = Informer(store, P, decode_kv=lambda k, v: (k.rsplit("/", 1)[1], int(v)))
    with inf:
        assert inf.wait_synced(5)
        assert inf.snapshot() == {P + "x": ("x", 7)}
    with pytest.raises(TypeError, match="exactly one"):
        Informer(store, P)
    with pytest.raises(TypeError, match="exactly one"):
        Informer(store, P, int, decode_kv=lambda k, v: 1)


def test_get_with_revision_is_the_revision_the_object_was_decoded_from(store: SqliteStore, informers: Any) -> None:
    """A writer conditions its write on this revision: after a bad update it must stay that of the last
    good object (a write conditional on it then fails instead of overwriting what it never saw)."""
    rev_a = store.put(P + "a", enc("a", 1))
    rec = Recorder()
    inf = informers(store, on_change=rec).start()
    assert inf.wait_synced(5)
    assert inf.get_with_revision(P + "a") == (Thing(name="a", n=1), rev_a)  # from the list
    rev_a2 = store.put(P + "a", enc("a", 2))
    rec.wait_count(2)
    assert inf.get_with_revision(P + "a") == (Thing(name="a", n=2), rev_a2)  # from a watch event
    store.put(P + "a", b"{not json")
    store.put(P + "z", enc("z", 26))
    rec.wait_count(3)
    assert inf.get_with_revision(P + "a") == (Thing(name="a", n=2), rev_a2)
    store.delete(P + "z")
    rec.wait_count(4)
    assert inf.get_with_revision(P + "z") is None


class DownStore:
    """Unavailable for the first `down` lists (a store restarting), then the real one."""

    def __init__(self, inner: SqliteStore, down: int) -> None:
        self.inner, self.down, self.lists = inner, down, 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def list(self, prefix: str) -> Any:
        self.lists += 1
        if self.lists <= self.down:
            raise StoreUnavailable("simulated: restarting")
        return self.inner.list(prefix)


class PauseLog(threading.Event):
    def __init__(self) -> None:
        super().__init__()
        self.pauses: list[float] = []

    def wait(self, timeout: float | None = None) -> bool:
        if timeout is not None:
            self.pauses.append(timeout)
        return super().wait(0 if timeout is not None else None)


def test_after_a_failure_it_retries_soon_then_backs_off_and_starts_over(store: SqliteStore, informers: Any) -> None:
    """A store that restarts in a few tenths of a second is followed again at once; one that stays away
    is asked at most once per retry_interval."""
    store.put(P + "a", enc("a", 1))
    down = DownStore(store, down=5)
    inf = informers(down, retry_interval=0.8, first_retry=0.1)
    inf._stop = pauses = PauseLog()
    inf.start()
    assert inf.wait_synced(5)
    assert pauses.pauses == [0.1, 0.2, 0.4, 0.8, 0.8]
    assert inf._pause == 0.1  # a good list starts the backoff over
