"""SQLite backend of the Store protocol: one WAL file shared by every process on one host.

Why SQLite: a single machine (the lab, a laptop, CI) needs a store without running a server, yet several
processes (CLI, agents, CNI plugins) write it at once. WAL gives concurrent readers with one writer, and
`BEGIN IMMEDIATE` serialises writers across processes, so etcd's semantics (one global revision, compares,
leases, ordered watch) can be built from plain tables:

- `meta`: the global revision and the compaction point.
- `kv`: current value of every key with create/mod revision and lease.
- `events`: the write log that watches replay (revision, sequence inside the revision); trimmed by
  compaction, so a watch from before the oldest kept revision raises CompactedError.
- `leases`: id, ttl, absolute expiry (wall clock: all processes share the host's clock).

Checkpoints (copying the WAL back into the database file, with an fsync) run in a background thread on
its own connection, right after writes (at most every CHECKPOINT_INTERVAL). Left to SQLite's
auto-checkpoint (1,000 pages) they run inside the commit that crosses the threshold: one put of 2 KiB in
~130 then took ~20 ms instead of ~0.2 ms (benchmarks/store.py: p99 of 2 KiB puts 14-18 ms -> 0.5-0.9 ms,
puts over 5 ms 4-7x fewer). A writer that never pauses always finds frames the last checkpoint did not
cover, so the WAL restarts only at the writer's own auto-checkpoint, raised to 40 MiB as the backstop:
the rare stall there is longer than SQLite's default one (max ~75-110 ms vs ~60-80 ms), and the WAL
file can reach that size until the last connection closes.

Nobody owns lease expiry: whoever touches the store (a read, a write, a watch poll, or the sweeper thread
that grant() and watch() start) deletes the keys of expired leases in one write, with delete events, like
etcd's lessor does. Writers poke a file beside the database after each commit and watches sleep until
inotify reports it (store/notify.py): a change reaches a watcher in another process in about a millisecond,
and an idle watcher costs nothing but one revision read per notify.FALLBACK seconds.
"""

from __future__ import annotations

import builtins
import logging
import os
import secrets
import sqlite3
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from podnet.store import notify
from podnet.store.base import (
    CompactedError,
    ConflictError,
    Delete,
    Event,
    KeyValue,
    LeaseNotFound,
    ListResult,
    Op,
    Put,
    StoreError,
    StoreUnavailable,
    check_put,
)
from podnet.store.buckets import Bucket, buckets_of, encode, indexed

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Held by the background threads (checkpointer, lease sweeper) while they are inside SQLite, and taken by
# os.fork(): a child must not inherit a SQLite mutex another thread held mid-call, or its first store call
# would wait forever. A fork waits at most one checkpoint or sweep.
_BACKGROUND = threading.Lock()
os.register_at_fork(before=_BACKGROUND.acquire, after_in_parent=_BACKGROUND.release,
                    after_in_child=_BACKGROUND.release)

SWEEP_INTERVAL = 0.25  # expired leases vanish within this of their expiry while a sweeper runs
CHECKPOINT_INTERVAL = 0.02  # at most one background checkpoint per this; a burst of writes shares one
WRITER_AUTOCHECKPOINT = 10_000  # pages (40 MiB): the writer's own checkpoint, a backstop only
BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another process's write lock
DEFAULT_HISTORY = 10_000  # revisions of events kept; older ones are compacted automatically
AUTO_COMPACT_EVERY = 1_000  # check the history bound every this many revisions

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS kv (
    key TEXT PRIMARY KEY,
    value BLOB NOT NULL,
    create_rev INTEGER NOT NULL,
    mod_rev INTEGER NOT NULL,
    lease INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS kv_lease ON kv (lease) WHERE lease != 0;
CREATE TABLE IF NOT EXISTS events (
    rev INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    type TEXT NOT NULL,
    key TEXT NOT NULL,
    value BLOB,
    prev_value BLOB,
    PRIMARY KEY (rev, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS leases (id INTEGER PRIMARY KEY, ttl REAL NOT NULL, expiry REAL NOT NULL);
CREATE INDEX IF NOT EXISTS leases_expiry ON leases (expiry);
INSERT OR IGNORE INTO meta (name, value) VALUES ('schema', 1), ('revision', 1), ('compact', 0);
"""

# Schema 2: the planner's buckets (store/buckets.py), written in the transaction of every object write,
# so a one-shot `podnet apply` finds the objects one change touches without listing namespaces.
SCHEMA_VERSION = 2
_SCHEMA_2 = """
CREATE TABLE IF NOT EXISTS buckets (bucket TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (bucket, key)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS buckets_by_key ON buckets (key);
"""

# Every read of a value goes through this: SQLite types per value, not per column, so a row written by
# hand (the sqlite3 shell, another tool) may hold TEXT, INTEGER or REAL in the BLOB column. CAST gives
# the value's bytes whatever its type (TEXT: its UTF-8 bytes; numbers: their decimal text), so readers
# always get bytes, and a value that is not a valid object is reported by key by its decoder and
# skipped, like any bad BLOB, instead of a TypeError in every reader.
_VALUE = "CAST(value AS BLOB)"


def _set_buckets(conn: sqlite3.Connection, key: str, value: bytes) -> None:
    if indexed(key):
        conn.executemany("INSERT OR IGNORE INTO buckets (bucket, key) VALUES (?, ?)",
                         [(encode(b), key) for b in buckets_of(key, value)])


def _drop_buckets(conn: sqlite3.Connection, key: str) -> None:
    if indexed(key):
        conn.execute("DELETE FROM buckets WHERE key=?", (key,))


def path_from_url(url: str) -> str:
    """sqlite:///abs/path.db -> /abs/path.db (sqlite://rel.db is relative to the working directory)."""
    if not url.startswith("sqlite://"):
        raise StoreError(f"store URL {url!r}: not a sqlite:// URL")
    path = url[len("sqlite://"):].split("?", 1)[0]
    if not path:
        raise StoreError(f"store URL {url!r}: no file path (use sqlite:///PATH)")
    return os.path.abspath(path)


def prefix_end(prefix: str) -> str | None:
    """Smallest string greater than every string starting with prefix (None: no upper bound).

    SQLite compares TEXT bytewise (UTF-8), which orders like code points, so `key >= p AND key < end`
    is an index range scan for a prefix.
    """
    chars = list(prefix)
    while chars:
        last = ord(chars[-1])
        if last < 0x10FFFF:
            nxt = last + 1
            if 0xD800 <= nxt <= 0xDFFF:  # surrogates can't be encoded; skip them
                nxt = 0xE000
            chars[-1] = chr(nxt)
            return "".join(chars)
        chars.pop()
    return None


def _is_busy(exc: sqlite3.Error) -> bool:
    msg = str(exc).lower()
    return "locked" in msg or "busy" in msg


def _retry_busy(what: str, path: str, fn: Any) -> Any:
    """Run fn() again while SQLite reports a lock it does not wait for by itself.

    The busy timeout covers ordinary writes, but switching a fresh file to WAL and creating the schema
    while other processes do the same can fail at once with "database is locked"; those steps are
    idempotent, so they are simply repeated until the deadline.
    """
    deadline = time.monotonic() + BUSY_TIMEOUT_MS / 1000
    delay = 0.005
    while True:
        try:
            return fn()
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc) or time.monotonic() > deadline:
                raise StoreUnavailable(f"sqlite store {path}: {what}: {exc}") from exc
        time.sleep(delay * (1 + secrets.randbelow(1000) / 1000))  # jitter: racers spread out
        delay = min(delay * 2, 0.1)


def _connect(path: str) -> sqlite3.Connection:
    try:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        if os.path.isdir(path):
            raise StoreUnavailable(f"sqlite store {path}: is a directory")
        conn = sqlite3.connect(path, timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                               check_same_thread=False)
    except (sqlite3.Error, OSError) as exc:
        raise StoreUnavailable(f"sqlite store {path}: {exc}") from exc

    def setup() -> None:
        conn.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
        mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        if str(mode).lower() != "wal":
            mode = conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreUnavailable(f"sqlite store {path}: cannot switch to WAL (journal_mode={mode})")
        conn.execute("PRAGMA synchronous=NORMAL")

    try:
        _retry_busy("opening", path, setup)
    except StoreUnavailable:
        conn.close()
        raise
    except sqlite3.Error as exc:
        conn.close()
        raise StoreUnavailable(f"sqlite store {path}: {exc}") from exc
    return conn


def _checkpoint_loop(path: str, dirty: threading.Event, stop: threading.Event) -> None:
    """PASSIVE checkpoints on a connection of its own, so they never hold the store's lock: writers and
    readers go on while pages are copied and the database file is synced. Holds no reference to the
    store, so a store dropped without close() is still collected (a finalizer sets `stop`)."""
    conn: sqlite3.Connection | None = None
    try:
        while True:
            dirty.wait()
            if stop.is_set():
                return
            dirty.clear()
            try:
                with _BACKGROUND:
                    if conn is None:
                        conn = _connect(path)
                    conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()  # all rows: ends the statement
            except (sqlite3.Error, StoreError) as exc:  # the writer's auto-checkpoint is the backstop
                log.debug("background checkpoint of %s failed: %s", path, exc)
            if stop.wait(CHECKPOINT_INTERVAL):
                return
    finally:
        if conn is not None:
            conn.close()


def _wake_to_stop(stop: threading.Event, dirty: threading.Event) -> None:
    stop.set()
    dirty.set()


class SqliteStore:
    """Store protocol on one SQLite file. Thread safe: one connection behind a lock (watches own theirs)."""

    def __init__(self, url: str, *, history: int = DEFAULT_HISTORY, background_checkpoint: bool = True,
                 create: bool = True) -> None:
        self.url = url
        self.background_checkpoint = background_checkpoint  # False: SQLite's default, in the commit
        self.path = path_from_url(url)
        if not create and not os.path.exists(self.path):
            # A reader (podnet get) must not leave an empty store behind: a typo in --store would
            # otherwise silently show an empty cluster, and create the file and its directories.
            raise StoreUnavailable(f"sqlite store {self.path} does not exist (nothing was applied to it yet; "
                                   "check --store or PODNET_STORE)")
        self.history = history
        self._lock = threading.RLock()
        self._closed = False
        self._conn = _connect(self.path)
        self._pid = os.getpid()
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()
        self._checkpointer: threading.Thread | None = None
        self._dirty = threading.Event()  # set after each commit; the checkpointer waits on it
        self._watches: set[SqliteWatch] = set()
        self._poke = notify.Poke(self.path)
        try:
            _retry_busy("creating schema", self.path, self._create_schema_once)
        except BaseException:
            self._conn.close()
            raise

    def _create_schema_once(self) -> None:
        conn = self._conn
        if self._schema(conn) >= SCHEMA_VERSION:
            return
        conn.execute("BEGIN IMMEDIATE")
        try:
            if self._schema(conn) < SCHEMA_VERSION:  # another process may have done it meanwhile
                self._create_schema(conn)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    @staticmethod
    def _schema(conn: sqlite3.Connection) -> int:
        if conn.execute("SELECT 1 FROM sqlite_master WHERE name='meta'").fetchone() is None:
            return 0
        row = conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()
        return int(row[0]) if row else 0

    @staticmethod
    def _create_schema(conn: sqlite3.Connection) -> None:
        """Create what is missing, up to SCHEMA_VERSION; a schema-1 file gets its buckets filled in from kv."""
        for stmt in (_SCHEMA + _SCHEMA_2).split(";"):
            if stmt.strip():
                conn.execute(stmt)
        if conn.execute("SELECT value FROM meta WHERE name='schema'").fetchone()[0] < 2:
            conn.execute("DELETE FROM buckets")
            for key, value in conn.execute(f"SELECT key, {_VALUE} FROM kv").fetchall():
                _set_buckets(conn, key, bytes(value))
        conn.execute("UPDATE meta SET value=? WHERE name='schema'", (SCHEMA_VERSION,))

    # ---- plumbing -------------------------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        """The connection for this process (call with the lock held).

        SQLite connections must not cross fork(): a child that inherited this object gets its own
        connection on first use, and a fresh sweeper if it needs one (threads don't survive fork).
        """
        if self._closed:
            raise StoreUnavailable(f"sqlite store {self.path}: closed")
        if self._pid != os.getpid():
            self._conn = _connect(self.path)
            self._pid = os.getpid()
            self._sweeper = None
            self._checkpointer = None
            self._dirty = threading.Event()
            self._watches = set()
        return self._conn

    def _write(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run fn(conn) inside one BEGIN IMMEDIATE transaction (the cross-process write lock)."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc
            self._poke()  # after the commit: whoever it wakes sees the new revision
            if self.background_checkpoint:
                if self._checkpointer is None:
                    self._start_checkpointer(conn)
                self._dirty.set()
            return result

    def _start_checkpointer(self, conn: sqlite3.Connection) -> None:
        """With the lock held: raise this connection's own checkpoint to a backstop, start the thread."""
        conn.execute(f"PRAGMA wal_autocheckpoint={WRITER_AUTOCHECKPOINT}")
        self._checkpointer = threading.Thread(target=_checkpoint_loop, name="podnet-sqlite-checkpoint",
                                              args=(self.path, self._dirty, self._stop), daemon=True)
        self._checkpointer.start()
        weakref.finalize(self, _wake_to_stop, self._stop, self._dirty)

    def _read(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        """Run fn(conn) in one read transaction: a consistent snapshot across several SELECTs."""
        with self._lock:
            conn = self._connection()
            try:
                conn.execute("BEGIN")
                try:
                    return fn(conn)
                finally:
                    conn.execute("COMMIT")
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

    @staticmethod
    def _rev(conn: sqlite3.Connection) -> int:
        return int(conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0])

    def _bump(self, conn: sqlite3.Connection, rev: int) -> None:
        conn.execute("UPDATE meta SET value=? WHERE name='revision'", (rev,))
        if self.history > 0 and rev % AUTO_COMPACT_EVERY == 0 and rev > self.history:
            self._compact_in(conn, rev - self.history)

    @staticmethod
    def _compact_in(conn: sqlite3.Connection, revision: int) -> None:
        current = int(conn.execute("SELECT value FROM meta WHERE name='compact'").fetchone()[0])
        if revision <= current:
            return
        conn.execute("DELETE FROM events WHERE rev < ?", (revision,))
        conn.execute("UPDATE meta SET value=? WHERE name='compact'", (revision,))

    def _expired_pending(self, conn: sqlite3.Connection) -> bool:
        return conn.execute("SELECT 1 FROM leases WHERE expiry <= ? LIMIT 1", (time.time(),)).fetchone() is not None

    def _sweep_if_needed(self) -> None:
        """Delete expired leases and their keys if there are any (cheap indexed check otherwise)."""
        with self._lock:
            if self._closed:
                return
            try:
                pending = self._expired_pending(self._connection())
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc
            if pending:
                self._write(self._sweep_in)

    def _sweep_in(self, conn: sqlite3.Connection) -> int:
        """Inside a write: drop every expired lease; all their keys go in one revision, like a revoke."""
        ids = [r[0] for r in conn.execute("SELECT id FROM leases WHERE expiry <= ?", (time.time(),))]
        if not ids:
            return 0
        rev = self._rev(conn)
        new_rev = rev + 1
        seq = 0
        for lease_id in ids:
            seq = self._drop_lease_keys(conn, lease_id, new_rev, seq)
            conn.execute("DELETE FROM leases WHERE id=?", (lease_id,))
        if seq:
            self._bump(conn, new_rev)
            log.debug("swept %d expired lease(s), %d key(s) at revision %d", len(ids), seq, new_rev)
        return len(ids)

    @staticmethod
    def _drop_lease_keys(conn: sqlite3.Connection, lease_id: int, rev: int, seq: int) -> int:
        rows = conn.execute(f"SELECT key, {_VALUE} FROM kv WHERE lease=? ORDER BY key", (lease_id,)).fetchall()
        for key, value in rows:
            conn.execute("DELETE FROM kv WHERE key=?", (key,))
            _drop_buckets(conn, key)
            conn.execute(
                "INSERT INTO events (rev, seq, type, key, value, prev_value) VALUES (?, ?, 'delete', ?, NULL, ?)",
                (rev, seq, key, value),
            )
            seq += 1
        return seq

    def _ensure_sweeper(self) -> None:
        with self._lock:
            if self._sweeper is None and not self._closed:
                self._sweeper = threading.Thread(target=self._sweep_loop, name="podnet-sqlite-sweeper", daemon=True)
                self._sweeper.start()

    def _sweep_loop(self) -> None:
        while not self._stop.wait(SWEEP_INTERVAL):
            try:
                with _BACKGROUND:
                    self._sweep_if_needed()
            except StoreError as exc:  # keep sweeping; a locked file now is fine next time
                log.warning("lease sweep failed: %s", exc)

    # ---- reads ----------------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        self._sweep_if_needed()

        def run(conn: sqlite3.Connection) -> KeyValue | None:
            row = conn.execute(
                f"SELECT key, {_VALUE}, create_rev, mod_rev, lease FROM kv WHERE key=?", (key,)
            ).fetchone()
            return KeyValue(row[0], bytes(row[1]), row[2], row[3], row[4]) if row else None

        with self._lock:  # a single SELECT is already a consistent snapshot
            try:
                return run(self._connection())
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"sqlite store {self.path}: {exc}") from exc

    def list(self, prefix: str) -> ListResult:
        self._sweep_if_needed()
        end = prefix_end(prefix)

        def run(conn: sqlite3.Connection) -> ListResult:
            if end is None:
                rows = conn.execute(
                    f"SELECT key, {_VALUE}, create_rev, mod_rev, lease FROM kv WHERE key >= ? ORDER BY key", (prefix,)
                )
            else:
                rows = conn.execute(
                    f"SELECT key, {_VALUE}, create_rev, mod_rev, lease FROM kv WHERE key >= ? AND key < ? ORDER BY key",
                    (prefix, end),
                )
            items = [KeyValue(r[0], bytes(r[1]), r[2], r[3], r[4]) for r in rows]
            return ListResult(items=items, revision=self._rev(conn))

        return self._read(run)

    def revision(self) -> int:
        self._sweep_if_needed()
        return self._read(self._rev)

    # ---- buckets (store/buckets.py; controllers/writeindex.StoreIndex reads them) -----------------

    keeps_buckets = True

    def bucket_members(self, buckets: builtins.list[Bucket]) -> builtins.list[KeyValue]:
        """The objects in any of these buckets, each once, in key order, from one snapshot."""
        self._sweep_if_needed()
        names = [encode(b) for b in buckets]

        def run(conn: sqlite3.Connection) -> builtins.list[KeyValue]:
            out: dict[str, KeyValue] = {}
            for i in range(0, len(names), 500):  # SQLite binds at most 32766 parameters
                chunk = names[i:i + 500]
                rows = conn.execute(
                    f"SELECT kv.key, CAST(kv.value AS BLOB), kv.create_rev, kv.mod_rev, kv.lease FROM buckets "
                    f"JOIN kv ON kv.key = buckets.key WHERE buckets.bucket IN ({','.join('?' * len(chunk))})",
                    chunk,
                )
                for r in rows:
                    out[r[0]] = KeyValue(r[0], bytes(r[1]), r[2], r[3], r[4])
            return [out[k] for k in sorted(out)]

        return self._read(run)

    def bucket_sizes(self, buckets: builtins.list[Bucket]) -> dict[Bucket, int]:
        """How many objects each of these buckets holds (absent: none)."""
        self._sweep_if_needed()
        by_name = {encode(b): b for b in buckets}

        def run(conn: sqlite3.Connection) -> dict[Bucket, int]:
            names = list(by_name)
            sizes: dict[Bucket, int] = {}
            for i in range(0, len(names), 500):
                chunk = names[i:i + 500]
                for name, n in conn.execute(
                    f"SELECT bucket, count(*) FROM buckets WHERE bucket IN ({','.join('?' * len(chunk))}) "
                    "GROUP BY bucket", chunk,
                ):
                    sizes[by_name[name]] = n
            return sizes

        return self._read(run)

    # ---- writes ---------------------------------------------------------------------------------

    def put(
        self, key: str, value: bytes, *, if_absent: bool = False, if_revision: int | None = None, lease: int = 0
    ) -> int:
        return self.commit([Put(key, value, if_absent=if_absent, if_revision=if_revision, lease=lease)])

    def delete(self, key: str, *, if_revision: int | None = None) -> bool:
        deleted: list[bool] = []
        self._commit([Delete(key, if_revision=if_revision)], deleted)
        return deleted[0]

    def commit(self, ops: builtins.list[Op]) -> int:
        return self._commit(ops, [])

    def _commit(self, ops: builtins.list[Op], deleted: builtins.list[bool]) -> int:
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            raise ValueError(f"commit: a key appears twice in one commit: {keys}")
        for op in ops:
            if isinstance(op, Put):
                check_put(op.key, op.value)
        self._sweep_if_needed()

        def run(conn: sqlite3.Connection) -> int:
            rev = self._rev(conn)
            current: dict[str, tuple[bytes, int, int] | None] = {}
            for op in ops:
                row = conn.execute(f"SELECT {_VALUE}, create_rev, mod_rev FROM kv WHERE key=?", (op.key,)).fetchone()
                current[op.key] = (bytes(row[0]), row[1], row[2]) if row else None
            # every condition first: all or nothing
            for op in ops:
                cur = current[op.key]
                mod = cur[2] if cur else 0
                if isinstance(op, Put):
                    if op.if_absent and cur is not None:
                        raise ConflictError(op.key, f"already exists (mod_revision {mod})")
                    if op.lease:
                        row = conn.execute("SELECT expiry FROM leases WHERE id=?", (op.lease,)).fetchone()
                        if row is None or row[0] <= time.time():
                            raise LeaseNotFound(op.lease)
                else:
                    if op.must_exist and cur is None:
                        raise ConflictError(op.key, "does not exist")
                if op.if_revision is not None and mod != op.if_revision:
                    raise ConflictError(op.key, f"mod_revision is {mod}, expected {op.if_revision}")
            new_rev = rev + 1
            seq = 0
            for op in ops:
                cur = current[op.key]
                if isinstance(op, Put):
                    value = bytes(op.value)
                    create = cur[1] if cur else new_rev
                    conn.execute(
                        "INSERT OR REPLACE INTO kv (key, value, create_rev, mod_rev, lease) VALUES (?, ?, ?, ?, ?)",
                        (op.key, value, create, new_rev, op.lease),
                    )
                    if cur is not None:
                        _drop_buckets(conn, op.key)
                    _set_buckets(conn, op.key, value)
                    conn.execute(
                        "INSERT INTO events (rev, seq, type, key, value, prev_value) VALUES (?, ?, 'put', ?, ?, ?)",
                        (new_rev, seq, op.key, value, cur[0] if cur else None),
                    )
                    seq += 1
                elif cur is not None:
                    conn.execute("DELETE FROM kv WHERE key=?", (op.key,))
                    _drop_buckets(conn, op.key)
                    conn.execute(
                        "INSERT INTO events (rev, seq, type, key, value, prev_value) "
                        "VALUES (?, ?, 'delete', ?, NULL, ?)",
                        (new_rev, seq, op.key, cur[0]),
                    )
                    seq += 1
                    deleted.append(True)
                else:
                    deleted.append(False)
            if seq == 0:  # nothing changed (deletes of absent keys): the revision stays, as in etcd
                return rev
            self._bump(conn, new_rev)
            return new_rev

        return self._write(run)

    # ---- leases ---------------------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        if ttl <= 0:
            raise ValueError(f"lease ttl must be > 0, got {ttl}")
        self._ensure_sweeper()

        def run(conn: sqlite3.Connection) -> int:
            while True:
                lease_id = secrets.randbits(62) + 1
                if conn.execute("SELECT 1 FROM leases WHERE id=?", (lease_id,)).fetchone() is None:
                    conn.execute(
                        "INSERT INTO leases (id, ttl, expiry) VALUES (?, ?, ?)", (lease_id, ttl, time.time() + ttl)
                    )
                    return lease_id

        return self._write(run)

    def keepalive(self, lease_id: int) -> float:
        def run(conn: sqlite3.Connection) -> float:
            row = conn.execute("SELECT ttl, expiry FROM leases WHERE id=?", (lease_id,)).fetchone()
            if row is None or row[1] <= time.time():
                raise LeaseNotFound(lease_id)
            conn.execute("UPDATE leases SET expiry=? WHERE id=?", (time.time() + row[0], lease_id))
            return float(row[0])

        try:
            return self._write(run)
        except LeaseNotFound:
            self._sweep_if_needed()  # an expired lease found here: remove its keys now
            raise

    def revoke(self, lease_id: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            if conn.execute("SELECT 1 FROM leases WHERE id=?", (lease_id,)).fetchone() is None:
                return
            rev = self._rev(conn)
            seq = self._drop_lease_keys(conn, lease_id, rev + 1, 0)
            conn.execute("DELETE FROM leases WHERE id=?", (lease_id,))
            if seq:
                self._bump(conn, rev + 1)

        self._write(run)

    def lease_ttl(self, lease_id: int) -> float:
        """Seconds left on a lease (LeaseNotFound if gone). Not in the protocol; handy for tests and tools."""
        row = self._read(lambda c: c.execute("SELECT expiry FROM leases WHERE id=?", (lease_id,)).fetchone())
        if row is None or row[0] <= time.time():
            raise LeaseNotFound(lease_id)
        return float(row[0] - time.time())

    # ---- history --------------------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        def run(conn: sqlite3.Connection) -> None:
            rev = self._rev(conn)
            if revision > rev:
                raise ValueError(f"compact: revision {revision} is in the future (current {rev})")
            self._compact_in(conn, revision)

        self._write(run)

    def compact_revision(self) -> int:
        """Oldest revision a watch may start from (0: nothing compacted yet)."""
        return self._read(
            lambda c: int(c.execute("SELECT value FROM meta WHERE name='compact'").fetchone()[0])
        )

    def watch(self, prefix: str, from_revision: int) -> SqliteWatch:
        self._ensure_sweeper()
        w = SqliteWatch(self, prefix, from_revision)
        with self._lock:
            self._watches.add(w)
        return w

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watches = list(self._watches)
        self._stop.set()
        self._dirty.set()  # wakes the checkpointer, which sees _stop
        for w in watches:
            w.close()
        for t in (self._sweeper, self._checkpointer):
            if t is not None and t is not threading.current_thread():
                t.join(timeout=2)
        with self._lock:
            self._conn.close()
            self._poke.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"SqliteStore({self.url!r})"


class SqliteWatch:
    """Reads the events table from its own connection when woken (notify.py); iterate from one thread,
    close() from any."""

    def __init__(self, store: SqliteStore, prefix: str, from_revision: int) -> None:
        self._store = store
        self.prefix = prefix
        self._end = prefix_end(prefix)
        self._closed = threading.Event()
        self._conn = _connect(store.path)
        self._conn_lock = threading.Lock()
        self._started = False
        self._waiter = notify.Waiter(store.path)  # before the first read: no commit falls between
        rev, compact = self._heads()
        if from_revision <= 0:  # etcd: 0 means "from now on"
            from_revision = rev + 1
        if from_revision < compact:
            self._close_conn()
            self._waiter.close()
            raise CompactedError(from_revision, compact)
        self.next_revision = from_revision
        self.done_through = from_revision - 1  # every event at or below it has been yielded (base.Watch)

    def _heads(self) -> tuple[int, int]:
        rows = dict(self._conn.execute("SELECT name, value FROM meta WHERE name IN ('revision', 'compact')"))
        return int(rows["revision"]), int(rows["compact"])

    def _fetch(self) -> list[Event]:
        """Every event in [next_revision, current revision] under the prefix, from one snapshot."""
        conn = self._conn
        with self._conn_lock:
            # idle path: one point read of the revision row, no transaction
            head = conn.execute("SELECT value FROM meta WHERE name='revision'").fetchone()[0]
            if int(head) < self.next_revision:
                return []
            conn.execute("BEGIN")
            try:
                rev, compact = self._heads()
                if rev < self.next_revision:
                    return []
                if self.next_revision < compact:  # we lagged behind auto-compaction
                    raise CompactedError(self.next_revision, compact)
                sql = f"SELECT rev, type, key, {_VALUE}, CAST(prev_value AS BLOB) FROM events WHERE rev >= ? AND rev <= ? AND key >= ?"
                args: tuple[Any, ...] = (self.next_revision, rev, self.prefix)
                if self._end is not None:
                    sql += " AND key < ?"
                    args += (self._end,)
                rows = conn.execute(sql + " ORDER BY rev, seq", args).fetchall()
            finally:
                conn.execute("COMMIT")
        self.next_revision = rev + 1
        return [
            Event(
                type=r[1],
                key=r[2],
                value=bytes(r[3]) if r[3] is not None else None,
                revision=r[0],
                prev_value=bytes(r[4]) if r[4] is not None else None,
            )
            for r in rows
        ]

    def __iter__(self) -> Iterator[Event]:
        self._started = True
        try:
            while not self._closed.is_set():
                try:
                    events = self._fetch()
                except sqlite3.Error as exc:
                    if self._closed.is_set():
                        return
                    raise StoreUnavailable(f"sqlite store {self._store.path}: watch: {exc}") from exc
                for i, ev in enumerate(events):
                    if self._closed.is_set():
                        return
                    # the last event of a fetch completes every revision the fetch read up to
                    self.done_through = self.next_revision - 1 if i == len(events) - 1 else ev.revision - 1
                    yield ev
                if not events:
                    self._waiter.wait()
        finally:
            self._close_conn()
            self._waiter.close()

    def _close_conn(self) -> None:
        with self._conn_lock:
            try:
                self._conn.close()
            except sqlite3.Error:
                pass

    def close(self) -> None:
        self._closed.set()
        self._waiter.close()  # wakes the iterating thread
        if not self._started:  # nobody iterates: nobody else will close the connection
            self._close_conn()
        with self._store._lock:
            self._store._watches.discard(self)

    def __enter__(self) -> SqliteWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
