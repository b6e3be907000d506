"""State shared by every command: the store URL and its options, opened lazily."""

from __future__ import annotations

from dataclasses import dataclass, field

from podnet.store import Store, open_store


@dataclass
class CliState:
    store_url: str | None = None
    etcd_options: dict[str, str] = field(default_factory=dict)
    _store: Store | None = None

    def store(self, *, create: bool = True) -> Store:
        """The store, opened on first use. create=False (read-only commands): a missing sqlite file is an
        error, not a new empty store."""
        if self._store is None:
            self._store = open_store(self.store_url, create=create, **self.etcd_options)
        return self._store
