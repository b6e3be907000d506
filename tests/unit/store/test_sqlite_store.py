"""SQLite-specific behaviour the contract suite cannot express: files, URLs, threads, automatic compaction."""

from __future__ import annotations

import gc
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from podnet.store import CompactedError, Put, StoreError, StoreUnavailable, open_store
from podnet.store import sqlite as sqlite_mod
from podnet.store.sqlite import SqliteStore, path_from_url, prefix_end


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(f"sqlite://{tmp_path}/state.db")
    try:
        yield s
    finally:
        s.close()


def test_url_to_path() -> None:
    assert path_from_url("sqlite:///var/lib/podnet/state.db") == "/var/lib/podnet/state.db"
    assert path_from_url("sqlite://rel/x.db") == os.path.join(os.getcwd(), "rel/x.db")
    with pytest.raises(StoreError, match="no file path"):
        path_from_url("sqlite://")
    with pytest.raises(StoreError, match="not a sqlite"):
        path_from_url("etcd://127.0.0.1:2379")


@given(st.text(max_size=6), st.text(max_size=8))
def test_prefix_end_bounds_exactly_the_keys_with_that_prefix(prefix: str, key: str) -> None:
    end = prefix_end(prefix)
    inside = key >= prefix and (end is None or key < end)
    assert inside == key.startswith(prefix)
    candidate = prefix + key
    assert candidate >= prefix and (end is None or candidate < end)


def test_open_creates_parent_directories_and_starts_at_revision_1(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/a/b/c/state.db"
    with open_store(url) as s:  # type: ignore[attr-defined]
        assert s.revision() == 1
        assert (tmp_path / "a/b/c/state.db").is_file()
        mode = sqlite3.connect(tmp_path / "a/b/c/state.db").execute("PRAGMA journal_mode").fetchone()[0]
        assert mode == "wal"


def test_a_directory_as_the_file_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "state.db").mkdir()
    with pytest.raises(StoreUnavailable, match="state.db"):
        open_store(f"sqlite://{tmp_path}/state.db")


def test_a_file_as_the_parent_directory_is_unavailable(tmp_path: Path) -> None:
    (tmp_path / "plain").write_text("not a directory")
    with pytest.raises(StoreUnavailable, match="plain"):
        open_store(f"sqlite://{tmp_path}/plain/state.db")


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores directory permissions")
def test_an_unwritable_directory_is_unavailable(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    d.mkdir(mode=0o500)
    try:
        with pytest.raises(StoreUnavailable):
            SqliteStore(f"sqlite://{d}/state.db").put("/k", b"v")
    finally:
        d.chmod(0o700)


def test_a_closed_store_is_unavailable(store: SqliteStore) -> None:
    store.close()
    with pytest.raises(StoreUnavailable, match="closed"):
        store.get("/k")
    store.close()  # twice is fine


def test_data_and_revision_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    with SqliteStore(url) as s:
        s.put("/k", b"v")
        rev = s.put("/k", b"w")
    with SqliteStore(url) as s:
        kv = s.get("/k")
        assert kv is not None and kv.value == b"w" and kv.mod_revision == rev
        assert s.revision() == rev


def test_bad_arguments_are_refused_before_writing(store: SqliteStore) -> None:
    r = store.revision()
    with pytest.raises(TypeError, match="/k"):
        store.put("/k", "text")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="twice"):
        store.commit([Put("/a", b"1"), Put("/a", b"2")])
    with pytest.raises(ValueError, match="future"):
        store.compact(r + 5)
    with pytest.raises(ValueError, match="ttl"):
        store.grant(0)
    assert store.revision() == r


def test_threads_writing_at_once_get_unique_contiguous_revisions(store: SqliteStore) -> None:
    r0 = store.revision()
    revs: list[int] = []
    lock = threading.Lock()

    def writer(t: int) -> None:
        for i in range(100):
            r = store.put(f"/t/{t}/{i}", b"x")
            with lock:
                revs.append(r)

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(6)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert sorted(revs) == list(range(r0 + 1, r0 + 601))
    assert len(store.list("/t/").items) == 600


WRITER = """
import sys
from podnet.store.sqlite import SqliteStore
s = SqliteStore(sys.argv[1])
for i in range(300):
    s.put(f"/p/{sys.argv[2]}/{i}", b"x")
s.close()
"""


def test_processes_writing_at_once_lose_nothing(store: SqliteStore) -> None:
    r0 = store.revision()
    src = str(Path(__file__).resolve().parents[3] / "src")
    env = dict(os.environ, PYTHONPATH=src)
    children = [
        subprocess.Popen([sys.executable, "-c", WRITER, store.url, str(i)], env=env, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    try:
        for p in children:
            _, err = p.communicate(timeout=60)
            assert p.returncode == 0, err
    finally:
        for p in children:
            if p.poll() is None:
                p.kill()
                p.communicate()
    assert store.revision() == r0 + 1200
    assert len(store.list("/p/").items) == 1200


def test_history_is_bounded_by_automatic_compaction(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_mod, "AUTO_COMPACT_EVERY", 10)
    with SqliteStore(f"sqlite://{tmp_path}/state.db", history=50) as s:
        w = s.watch("/k/", 2)  # created before the writes, never iterated in time
        for i in range(200):
            s.put(f"/k/{i % 7}", str(i).encode())
        rows = sqlite3.connect(tmp_path / "state.db").execute("SELECT COUNT(*) FROM events").fetchone()[0]
        assert rows <= 60
        oldest = s.compact_revision()
        assert oldest > 2
        with pytest.raises(CompactedError) as ei:
            s.watch("/k/", 2)
        assert (ei.value.requested, ei.value.compact_revision) == (2, oldest)
        # a watch that fell behind compaction fails while iterating, naming the oldest kept revision
        with pytest.raises(CompactedError) as ei:
            next(iter(w))
        w.close()  # no watcher thread may outlive the test: a later test forks this process
        assert ei.value.compact_revision == oldest
        # values are untouched by compaction
        assert len(s.list("/k/").items) == 7


def test_watch_from_zero_means_from_now(store: SqliteStore) -> None:
    store.put("/k", b"old")
    w = store.watch("/", 0)
    store.put("/k", b"new")
    ev = next(iter(w))
    w.close()
    assert (ev.key, ev.value, ev.prev_value) == ("/k", b"new", b"old")


def test_expired_leases_are_swept_by_a_reader_without_a_sweeper(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/state.db"
    with SqliteStore(url) as owner:
        lease = owner.grant(0.2)
        owner.put("/l/k", b"v", lease=lease)
        assert 0 < owner.lease_ttl(lease) <= 0.2
    time.sleep(0.3)
    with SqliteStore(url) as reader:  # never granted or watched: no sweeper thread of its own
        assert reader._sweeper is None
        assert reader.get("/l/k") is None
        events = sqlite3.connect(tmp_path / "state.db").execute(
            "SELECT type, key, prev_value FROM events ORDER BY rev DESC LIMIT 1"
        ).fetchall()
        assert events == [("delete", "/l/k", b"v")]


def test_sweeper_thread_expires_leases_while_nobody_calls(store: SqliteStore, tmp_path: Path) -> None:
    lease = store.grant(0.3)
    store.put("/l/k", b"v", lease=lease)
    deadline = time.monotonic() + 0.3 + sqlite_mod.SWEEP_INTERVAL + 1.0
    db = sqlite3.connect(tmp_path / "state.db")  # look from outside, so no store call can sweep
    while time.monotonic() < deadline:
        if db.execute("SELECT COUNT(*) FROM kv WHERE key='/l/k'").fetchone()[0] == 0:
            break
        time.sleep(0.05)
    assert db.execute("SELECT COUNT(*) FROM kv WHERE key='/l/k'").fetchone()[0] == 0
    assert db.execute("SELECT COUNT(*) FROM leases").fetchone()[0] == 0


def _put_from_child(store: SqliteStore, key: str) -> None:
    store.put(key, str(os.getpid()).encode())


def test_a_forked_child_gets_its_own_connection(store: SqliteStore) -> None:
    import multiprocessing

    store.put("/before-fork", b"x")
    ctx = multiprocessing.get_context("fork")
    children = [ctx.Process(target=_put_from_child, args=(store, f"/f/{i}")) for i in range(3)]
    for p in children:
        p.start()
    try:
        for p in children:
            p.join(30)
            assert p.exitcode == 0
    finally:
        for p in children:
            if p.is_alive():  # a child stuck on a lock another thread held at fork time: fail, don't hang
                p.kill()
                p.join()
    assert [kv.key for kv in store.list("/f/").items] == ["/f/0", "/f/1", "/f/2"]
    store.put("/after-fork", b"y")  # the parent's own connection is unharmed
    assert store.get("/after-fork") is not None


OPENER = """
import sys, time
from podnet.store.sqlite import SqliteStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))
s = SqliteStore(sys.argv[1])
s.put("/o/" + sys.argv[3], b"1")
s.close()
"""


def test_processes_opening_a_fresh_file_at_once_all_succeed(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path}/fresh/state.db"
    src = str(Path(__file__).resolve().parents[3] / "src")
    env = dict(os.environ, PYTHONPATH=src)
    start = time.time() + 1.0  # all interpreters are up before anyone touches the file
    children = [
        subprocess.Popen([sys.executable, "-c", OPENER, url, str(start), str(i)], env=env,
                         stderr=subprocess.PIPE, text=True)
        for i in range(6)
    ]
    try:
        errors = [p.communicate(timeout=60)[1] for p in children]
        assert [p.returncode for p in children] == [0] * 6, errors
    finally:
        for p in children:
            if p.poll() is None:
                p.kill()
                p.communicate()
    with SqliteStore(url) as s:
        assert len(s.list("/o/").items) == 6
        assert s.revision() == 7


def _wait_for(cond, seconds: float = 3.0) -> bool:  # noqa: ANN001 - a zero-argument predicate
    deadline = time.monotonic() + seconds
    while not cond():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


@pytest.mark.parametrize("background", [True, False], ids=["background", "in-commit"])
def test_checkpoints_run_in_the_background_after_writes(tmp_path: Path, background: bool) -> None:
    """The database file only grows when a checkpoint copies WAL pages into it. With the background
    checkpointer that happens shortly after a burst of writes, far below SQLite's 1,000-page
    auto-checkpoint; without it (SQLite's default) the pages stay in the WAL until that threshold."""
    path = tmp_path / "state.db"
    s = SqliteStore(f"sqlite://{path}", background_checkpoint=background)
    try:
        s.put("/seed", b"x")
        time.sleep(0.3)  # any checkpoint of the schema is over
        before = path.stat().st_size
        for i in range(50):  # ~100 KiB: ~25 pages of values, nowhere near 1,000
            s.put(f"/k/{i}", os.urandom(2000))
        grew = _wait_for(lambda: path.stat().st_size > before + 50_000, 2.0 if background else 0.5)
        assert grew is background
        thread = s._checkpointer
        assert (thread is not None and thread.is_alive()) is background
        assert {kv.key for kv in s.list("/k/").items} == {f"/k/{i}" for i in range(50)}
    finally:
        s.close()
    assert thread is None or not thread.is_alive()  # close() joined it


def test_a_store_dropped_without_close_ends_its_checkpointer(tmp_path: Path) -> None:
    s = SqliteStore(f"sqlite://{tmp_path}/state.db")
    s.put("/k", b"v")
    thread = s._checkpointer
    assert thread is not None and thread.is_alive()
    del s
    gc.collect()
    assert _wait_for(lambda: not thread.is_alive())
