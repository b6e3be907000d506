"""Fixtures of the controller tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podnet.store import Store, open_store


class ListingStore:
    """A SQLite store that hides its bucket table, so the planner takes the path it takes on etcd without a
    write index: listing the namespaces a change touches."""

    keeps_buckets = False

    def __init__(self, inner: Store) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture(params=["bucket-table", "listing"])
def store(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh SQLite store, closed afterwards; every planner test runs on both of the planner's read paths
    without a write index (the store's own buckets, and listing)."""
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield s if request.param == "bucket-table" else ListingStore(s)  # type: ignore[misc]
    finally:
        s.close()
