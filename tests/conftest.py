"""Fixtures shared by every test folder."""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator

import pytest

# Folders whose tests build namespaces, labs, etcd clusters or daemons and wait on them in real time ...
_SERIAL = ("tests/integration/", "tests/chaos/")
# ... except these, which only run CLI processes, loopback API servers and etcd on 127.0.0.1
_BESIDE = ("tests/integration/cli/", "tests/integration/apiserver/", "tests/integration/store/test_flannel_compat.py",
           "tests/integration/store/test_etcd_security.py", "tests/integration/store/test_etcd_buckets.py",
           "tests/integration/store/test_etcd_apply.py")
_STILL_SERIAL = ("tests/integration/apiserver/test_lab.py",)  # a lab of namespaces


def _serial(nodeid: str) -> bool:
    path = nodeid.split("::", 1)[0]
    if not path.startswith(_SERIAL):
        return False
    return path.startswith(_STILL_SERIAL) or not path.startswith(_BESIDE)


@pytest.hookimpl(optionalhook=True)  # a hook of pytest-xdist, absent without it
def pytest_xdist_make_scheduler(config: pytest.Config, log: object) -> object:
    """`make test` runs `-n 2`: every _serial test on one worker, in collection order, exactly as without
    xdist (they share the host's CPU, xtables lock and timing margins); the CPU-bound unit and contract
    tests and the light integration tests on the other worker meanwhile, module by module (a module-scoped
    fixture such as an etcd cluster starts once). (xdist's own loadgroup cannot do
    this on pytest 9: it renames node ids through an attribute pytest no longer reads.)"""
    from xdist.scheduler import LoadScopeScheduling

    class SerialFolders(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "serial" if _serial(nodeid) else nodeid.split("::", 1)[0]  # else by module, as loadscope

    return SerialFolders(config, log)


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
