"""Fixtures of the controller tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.store import Store, open_store


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A fresh SQLite store, closed afterwards."""
    s = open_store(f"sqlite:///{tmp_path}/state.db")
    try:
        yield s
    finally:
        s.close()
