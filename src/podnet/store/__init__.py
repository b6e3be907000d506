"""State store: one protocol (base.Store), backends sqlite and etcd, one owner of key names (keys.py)."""

from typing import TypedDict, Unpack

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
    Store,
    StoreError,
    StoreUnavailable,
    ValueTooLarge,
    Watch,
)

DEFAULT_STORE_URL = "sqlite:///var/lib/podnet/state.db"


class EtcdOptions(TypedDict, total=False):
    """open_store's backend options: EtcdStore's keyword arguments (the sqlite backend takes none)."""

    cafile: str | None
    certfile: str | None
    keyfile: str | None
    username: str | None
    password: str | None


def open_store(url: str | None = None, *, create: bool = True, **options: Unpack[EtcdOptions]) -> Store:
    """Open a store by URL: sqlite:///path/to/file.db or etcd://host:port[,host:port...].

    create=False: a sqlite file that does not exist is StoreUnavailable instead of a new empty store
    (for commands that only read). options are backend-specific (etcd: cafile, certfile, keyfile,
    username, password).
    """
    import os

    url = url or os.environ.get("PODNET_STORE") or DEFAULT_STORE_URL
    if url.startswith("sqlite://"):
        from podnet.store.sqlite import SqliteStore

        return SqliteStore(url, create=create)
    if url.startswith("etcd://") or url.startswith("etcds://"):
        from podnet.store.etcd import EtcdStore

        return EtcdStore(url, **options)
    raise StoreError(f"store URL {url!r}: unknown scheme (use sqlite:///PATH or etcd://HOST:PORT)")


__all__ = [
    "DEFAULT_STORE_URL",
    "CompactedError",
    "ConflictError",
    "Delete",
    "Event",
    "KeyValue",
    "LeaseNotFound",
    "ListResult",
    "Op",
    "Put",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "ValueTooLarge",
    "Watch",
    "open_store",
]
