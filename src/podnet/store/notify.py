"""Wake SQLite watchers when another process commits, without polling.

A writer touches `<db>-notify` (one 1-byte pwrite) after each commit; watchers learn of it from inotify on the
database's directory. The write comes after COMMIT returns, so a watcher woken by it always finds the new
revision (a wake-up on the WAL file itself could come before the commit is visible). One inotify instance and
one thread per process and directory serve every watch there (the kernel allows 128 instances per user by
default; an API server holds a watch per client). Watchers still re-read the revision every FALLBACK seconds,
so a missed wake-up (a writer of an older podnet, inotify unavailable) costs latency, never an event.
"""

from __future__ import annotations

import io
import logging
import os
import select
import threading

log = logging.getLogger(__name__)

FALLBACK = 1.0  # seconds between revision reads of a watcher nobody wakes


def notify_path(db_path: str) -> str:
    return db_path + "-notify"


class Poke:
    """The writer's side: one open descriptor, one pwrite per commit. The descriptor is a FileIO, so a
    store dropped without close() (a one-shot reader, a test) does not leak it; a forked child opens its own."""

    def __init__(self, db_path: str) -> None:
        self.path = notify_path(db_path)
        self._file: io.FileIO | None = None
        self._pid = os.getpid()

    def __call__(self) -> None:
        try:
            if self._file is None or self._pid != os.getpid():
                self._file, self._pid = io.FileIO(os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o644),
                                                  "w"), os.getpid()
            os.pwrite(self._file.fileno(), b"\x01", 0)
        except (OSError, ValueError) as exc:  # watchers fall back to their periodic read
            log.debug("cannot poke %s: %s", self.path, exc)

    def close(self) -> None:
        f, self._file = self._file, None
        if f is not None and self._pid == os.getpid():
            f.close()


class _DirWatch:
    """inotify on one directory, fanned out to every waiter of this process."""

    def __init__(self, directory: str) -> None:
        from inotify_simple import INotify, flags

        self.directory = directory
        self.ino = INotify(nonblocking=True)
        self.ino.add_watch(directory, flags.MODIFY | flags.CREATE | flags.MOVED_TO | flags.ATTRIB)
        self.cond = threading.Condition()
        self.seq: dict[str, int] = {}  # file name -> wake-ups seen
        self.users = 0
        self._wake_r, self._wake_w = os.pipe2(os.O_CLOEXEC | os.O_NONBLOCK)
        self._stopped = False
        self.thread = threading.Thread(target=self._run, name=f"podnet-notify {directory}", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        # poll, not select: select() refuses descriptors >= 1024, which a busy process (an API server with
        # many clients, a long test run) reaches; the thread would then die and every watcher fall back.
        poller = select.poll()
        poller.register(self.ino.fileno(), select.POLLIN)
        poller.register(self._wake_r, select.POLLIN)
        try:
            while not self._stopped:
                ready = {fd for fd, _ in poller.poll()}
                if self._wake_r in ready:
                    return
                names = {e.name for e in self.ino.read(timeout=0)}
                with self.cond:
                    for n in names:
                        if n in self.seq:
                            self.seq[n] += 1
                    self.cond.notify_all()
        except (OSError, ValueError) as exc:
            log.warning("inotify on %s stopped: %s; its watchers re-read every %.0f s", self.directory, exc,
                        FALLBACK)
            with _LOCK:  # later waiters get a fresh one
                key = (os.getpid(), self.directory)
                if _DIRS.get(key) is self:
                    del _DIRS[key]
        finally:
            self.ino.close()
            os.close(self._wake_r)

    def stop(self) -> None:
        self._stopped = True
        try:
            os.write(self._wake_w, b"x")
        except OSError:  # the thread already ended (and closed the read end)
            pass
        os.close(self._wake_w)


_LOCK = threading.Lock()
_DIRS: dict[tuple[int, str], _DirWatch] = {}


class Waiter:
    """A watcher's side: wait() returns when the database may have changed, or after FALLBACK, or on close."""

    def __init__(self, db_path: str) -> None:
        self._dir, self._name = os.path.split(os.path.abspath(notify_path(db_path)))
        self._dw: _DirWatch | None = None
        self._closed = False
        key = (os.getpid(), self._dir)
        with _LOCK:
            dw = _DIRS.get(key)
            if dw is None:
                try:
                    dw = _DIRS[key] = _DirWatch(self._dir)
                except (OSError, ImportError) as exc:  # e.g. out of inotify instances: poll instead
                    log.debug("no inotify for %s (%s): watches poll every %.0f s", self._dir, exc, FALLBACK)
                    dw = None
            if dw is not None:
                dw.users += 1
                with dw.cond:
                    dw.seq.setdefault(self._name, 0)
                self._dw = dw
        self._seen = self._current()

    def _current(self) -> int:
        return self._dw.seq.get(self._name, 0) if self._dw is not None else 0

    def wait(self, timeout: float = FALLBACK) -> None:
        dw = self._dw
        if dw is None:
            with _POLL_COND:
                _POLL_COND.wait_for(lambda: self._closed, timeout=min(timeout, 0.025))
            return
        with dw.cond:
            dw.cond.wait_for(lambda: self._closed or dw.seq.get(self._name, 0) != self._seen, timeout=timeout)
            self._seen = dw.seq.get(self._name, 0)

    def close(self) -> None:
        """Idempotent, from any thread (a watch closes its waiter from both its iterating thread and its
        closer): only the first call gives up this waiter's share of the directory watch."""
        with _LOCK:
            self._closed = True
            dw, self._dw = self._dw, None
        if dw is None:
            with _POLL_COND:
                _POLL_COND.notify_all()
            return
        with dw.cond:
            dw.cond.notify_all()
        with _LOCK:
            dw.users -= 1
            if dw.users == 0:
                key = (os.getpid(), dw.directory)
                if _DIRS.get(key) is dw:
                    del _DIRS[key]
                dw.stop()


_POLL_COND = threading.Condition()  # wakes pollers on close
