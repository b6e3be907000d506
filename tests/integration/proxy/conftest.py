"""Fixtures of the proxy integration tests: one namespace cluster per module, per proxy mode (pxcluster.py)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.proxy.pxcluster import OBJECTS, PROXY_MODES, Env


@pytest.fixture(scope="module", params=PROXY_MODES)
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    if os.geteuid() != 0:
        pytest.skip("needs root for network namespaces")
    e = Env(request.param, tmp_path_factory.mktemp(f"proxy-{request.param}"))
    try:
        e.build()
        for obj in OBJECTS:
            e.put(obj)
        e.start_proxy()
        yield e
    finally:
        e.teardown()
