"""The SQLite store's wake-up channel (store/notify.py): a poke reaches every waiter of the directory."""

from __future__ import annotations

import gc
import os
import resource
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.store import notify


def _waiter_thread(w: notify.Waiter) -> threading.Thread | None:
    dw = w._dw
    return dw.thread if dw is not None else None


def test_a_poke_wakes_a_waiter_and_the_last_close_ends_the_directory_thread(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    a, b = notify.Waiter(db), notify.Waiter(db)
    thread = _waiter_thread(a)
    assert thread is not None and thread is _waiter_thread(b)  # one inotify thread per directory
    before = a._current()
    poke = notify.Poke(db)
    try:
        poke()
        a.wait(timeout=30)
        assert a._current() > before
    finally:
        poke.close()
    a.close()
    assert thread.is_alive()  # b still uses it
    b.close()
    thread.join(timeout=5)
    assert not thread.is_alive()


@pytest.fixture
def many_descriptors() -> Iterator[None]:
    """Hold descriptors up past 1024, so the ones a new Waiter opens are numbered above select()'s limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 1200:
        pytest.skip(f"RLIMIT_NOFILE hard limit {hard} is below 1200")
    if soft != resource.RLIM_INFINITY and soft < 1200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1200, hard))
    held: list[int] = []
    try:
        while not held or held[-1] < 1030:
            held.append(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
        yield
    finally:
        for fd in held:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_waiters_are_woken_in_a_process_with_more_than_1024_descriptors(tmp_path: Path, many_descriptors: None) -> None:
    db = str(tmp_path / "state.db")
    w = notify.Waiter(db)
    try:
        dw = w._dw
        assert dw is not None and dw.ino.fileno() >= 1024
        before = w._current()
        poke = notify.Poke(db)
        try:
            poke()
            w.wait(timeout=30)
        finally:
            poke.close()
        assert dw.thread.is_alive(), "the directory thread died"
        assert w._current() > before, "the poke did not reach the waiter"
    finally:
        w.close()


def test_stopping_a_directory_watch_whose_thread_already_ended_is_quiet(tmp_path: Path) -> None:
    db = str(tmp_path / "state.db")
    w = notify.Waiter(db)
    dw = w._dw
    assert dw is not None
    dw._stopped = True  # stop() has begun: an inotify event now (any write to the WAL) ends the thread
    poke = notify.Poke(db)
    poke()
    poke.close()
    dw.thread.join(timeout=5)
    assert not dw.thread.is_alive()
    w.close()  # stop() writes into a pipe nobody reads any more: no BrokenPipeError


def _open_on(path: str) -> int:
    n = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            n += os.readlink(f"/proc/self/fd/{fd}") == path
        except OSError:
            pass
    return n


def test_a_store_dropped_without_close_leaves_no_descriptor_on_the_notify_file(tmp_path: Path) -> None:
    from podnet.store.sqlite import SqliteStore

    path = notify.notify_path(str(tmp_path / "state.db"))
    for _ in range(5):
        store = SqliteStore(f"sqlite://{tmp_path}/state.db")
        store.put("/pn-test/a", b"{}")  # pokes: opens the notify file
        assert _open_on(path) >= 1
        del store
    gc.collect()
    assert _open_on(path) == 0
