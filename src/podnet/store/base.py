"""The Store protocol every backend implements (sqlite.py, etcd.py), and its value types and errors.

Semantics follow etcd v3, because etcd is the strictest backend we must support and flannel's keys live
there: one global revision counter that every successful write moves by exactly one (a transaction is one
write), per-key create/mod revisions, leases with a TTL whose keys are deleted when the lease expires or
is revoked, and watches that replay ordered events from a revision. The contract suite in
tests/contract/ pins these semantics for every backend.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal, Protocol, runtime_checkable

from podnet.errors import PodnetError


class StoreError(PodnetError):
    """Base of every store error."""


class StoreUnavailable(StoreError):
    """The store cannot be reached (file not openable, etcd cluster down). CLI exit code 2."""

    exit_code = 2


# etcd refuses a request over --max-request-bytes, 1.5 MiB by default, counted on the whole encoded
# request; every backend holds each value to that less 1 KiB for the key and the request's framing, so
# what works on sqlite also works on etcd, and no daemon ever decodes a multi-MB object.
MAX_REQUEST_BYTES = 1536 * 1024
MAX_VALUE_BYTES = MAX_REQUEST_BYTES - 1024


class ValueTooLarge(StoreError):
    """A value over MAX_VALUE_BYTES: refused before anything of the write is done (CLI exit code 1)."""

    def __init__(self, key: str, size: int) -> None:
        super().__init__(f"{key}: value is {size} bytes, over the store's limit of {MAX_VALUE_BYTES} bytes "
                         "(etcd's 1.5 MiB request limit)")
        self.key = key
        self.size = size


def check_put(key: str, value: object) -> None:
    """The one check of a value about to be written, called by every backend for every put."""
    if not isinstance(value, bytes | bytearray | memoryview):
        raise TypeError(f"put {key}: value must be bytes, not {type(value).__name__}")
    size = value.nbytes if isinstance(value, memoryview) else len(value)
    if size > MAX_VALUE_BYTES:
        raise ValueTooLarge(key, size)


class ConflictError(StoreError):
    """A condition of a put/delete/commit did not hold (key exists, revision moved)."""

    def __init__(self, key: str, reason: str) -> None:
        super().__init__(f"{key}: {reason}")
        self.key = key
        self.reason = reason


class CompactedError(StoreError):
    """A watch asked for a revision older than the oldest one the store still keeps.

    The caller must re-list (which returns the current revision) and watch from there: the Informer does.
    """

    def __init__(self, requested: int, compact_revision: int) -> None:
        super().__init__(f"revision {requested} is compacted (oldest kept: {compact_revision})")
        self.requested = requested
        self.compact_revision = compact_revision


class LeaseNotFound(StoreError):
    """The lease expired or was revoked."""

    def __init__(self, lease_id: int) -> None:
        super().__init__(f"lease {lease_id:x} not found (expired or revoked)")
        self.lease_id = lease_id


@dataclass(frozen=True, slots=True)
class KeyValue:
    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    lease: int = 0  # 0 = no lease, as in etcd


@dataclass(frozen=True, slots=True)
class Event:
    type: Literal["put", "delete"]
    key: str
    value: bytes | None  # None for deletes
    revision: int  # the revision of the write that caused the event
    prev_value: bytes | None = None  # the value before this event, if there was one


# Operations of an atomic commit (etcd Txn with compares; sqlite: one transaction).
@dataclass(frozen=True, slots=True)
class Put:
    key: str
    value: bytes
    if_absent: bool = False
    if_revision: int | None = None  # mod_revision must equal this (0 also means "absent")
    lease: int = 0


@dataclass(frozen=True, slots=True)
class Delete:
    key: str
    if_revision: int | None = None
    must_exist: bool = False


Op = Put | Delete


@dataclass
class ListResult:
    items: list[KeyValue] = field(default_factory=list)
    revision: int = 0  # the store revision the list was taken at; watch from revision + 1


@runtime_checkable
class Watch(Protocol):
    """An ordered, blocking stream of events. Iterate it; close() ends the iteration from any thread.

    Raises CompactedError (at creation or while iterating) if from_revision is no longer kept,
    StoreUnavailable if the backend connection is lost (the caller re-lists and watches again).

    Both backends also keep `done_through`: when an event is yielded, every event under the prefix with a
    revision at or below it has been yielded too. One commit's events come one by one; a reader that must
    never see half a commit (controllers/writeindex.py) waits on this rather than on the last event's
    revision.
    """

    def __iter__(self) -> Iterator[Event]: ...

    def close(self) -> None: ...


@runtime_checkable
class Store(Protocol):
    url: str

    def get(self, key: str) -> KeyValue | None: ...

    def put(
        self, key: str, value: bytes, *, if_absent: bool = False, if_revision: int | None = None, lease: int = 0
    ) -> int:
        """Write key. Returns the new store revision. Raises ConflictError if a condition fails."""
        ...

    def delete(self, key: str, *, if_revision: int | None = None) -> bool:
        """Delete key. Returns False if it did not exist. Raises ConflictError if if_revision fails."""
        ...

    def commit(self, ops: list[Op]) -> int:
        """Apply every op or none (conditions checked first). One revision step. Raises ConflictError."""
        ...

    def list(self, prefix: str) -> ListResult: ...

    def revision(self) -> int: ...

    def watch(self, prefix: str, from_revision: int) -> Watch:
        """Events for keys under prefix with revision >= from_revision, in revision order."""
        ...

    def grant(self, ttl: float) -> int:
        """A new lease of ttl seconds; returns its id (> 0)."""
        ...

    def keepalive(self, lease_id: int) -> float:
        """Renew the lease to its full TTL; returns the TTL. Raises LeaseNotFound."""
        ...

    def revoke(self, lease_id: int) -> None:
        """End the lease now; its keys are deleted (with delete events). Unknown lease: no error."""
        ...

    def compact(self, revision: int) -> None:
        """Forget history older than revision (watches from before it raise CompactedError)."""
        ...

    def close(self) -> None: ...
