"""Fixtures for lab tests: each lab has a unique name and its own store inside its state dir, and is torn
down by name whatever happens in the test."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

PODNET = str(Path(sys.executable).with_name("podnet"))


def root_snapshot() -> dict[str, str]:
    """What of the root namespace a lab must never change: links, routes, rules."""
    def out(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True).stdout

    return {
        "links": out("ip", "-o", "link", "show").replace("\\", ""),
        "routes": out("ip", "route", "show", "table", "all"),
        "iptables": "\n".join(
            line for line in out("iptables-save").splitlines() if not line.startswith("#") and not line.startswith(":")
        ),
        "nft": out("nft", "list", "tables"),
    }


@pytest.fixture
def root_state() -> Callable[[], dict[str, str]]:
    return root_snapshot


class Lab:
    def __init__(self, name: str) -> None:
        self.name = name
        self.store = f"sqlite:////run/podnet/labs/{name}/state.db"

    def podnet(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        # as piped output reads it: pytest's COLUMNS would fold tables at its terminal's width
        env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
        r = subprocess.run([PODNET, "--store", self.store, *args], capture_output=True, text=True, input=input,
                           timeout=120, env=env)
        if check and r.returncode != 0:
            raise AssertionError(f"podnet {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def up(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return self.podnet("lab", "up", "--name", self.name, *args, check=check)

    def down(self) -> subprocess.CompletedProcess[str]:
        return self.podnet("lab", "down", "--name", self.name, check=False)

    def exec(self, target: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """`podnet lab exec` resolved in-process (same resolver), skipping one interpreter start per call."""
        from podnet.lab.cluster import LabError, resolve_target

        try:
            ns = resolve_target(self.name, target)
        except LabError as e:
            return subprocess.CompletedProcess([], 1, "", str(e))
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def lab_factory() -> Iterator[Callable[[], Lab]]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    made: list[Lab] = []

    def make() -> Lab:
        lab = Lab(f"t{secrets.token_hex(3)}")
        made.append(lab)
        return lab

    try:
        yield make
    finally:
        from podnet.lab import cluster

        for lab in made:
            cluster.down(lab.name)
