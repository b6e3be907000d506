"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest


def _is_root() -> bool:
    return os.geteuid() == 0


@pytest.fixture
def netns_factory() -> Iterator[object]:
    """Create pn- namespaces for a test; every one is deleted by exact name afterwards, pass or fail.

    Call it with a short tag: ns = netns_factory("cl") -> "pn-cl-3f9a1c".
    """
    if not _is_root():
        pytest.skip("needs root for network namespaces")
    from podnet.net import netns

    made: list[str] = []

    def make(tag: str) -> str:
        name = f"pn-{tag}-{secrets.token_hex(3)}"
        netns.create(name)
        made.append(name)
        return name

    try:
        yield make
    finally:
        for name in reversed(made):
            try:
                netns.remove(name)
            except OSError:
                pass
