"""Fixtures for cluster DNS tests: one 2-node lab per module (its store inside its state dir, torn down by
name whatever happens), and helpers that run real resolvers (glibc's getent, curl, dig) inside pods."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

PODNET = str(Path(sys.executable).with_name("podnet"))
REPO = Path(__file__).resolve().parents[3]


def wait_for(cond: Callable[[], Any], timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = cond()
        if last:
            return last
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class DnsLab:
    def __init__(self, name: str) -> None:
        self.name = name
        self.store = f"sqlite:////run/podnet/labs/{name}/state.db"

    def podnet(self, *args: str, input: str | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
        r = subprocess.run([PODNET, "--store", self.store, *args], capture_output=True, text=True, input=input,
                           timeout=120)
        if check and r.returncode != 0:
            raise AssertionError(f"podnet {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def apply(self, text: str) -> None:
        self.podnet("apply", "-f", "-", input=text)

    def netns(self, pod: str, namespace: str = "default") -> str:
        from podnet.lab.state import LabState

        st = LabState.load(self.name)
        assert st is not None
        return st.spec.pod_netns(namespace, pod)

    def in_pod(self, pod: str, *argv: str, namespace: str = "default",
               timeout: float = 30) -> subprocess.CompletedProcess[str]:
        """argv in the pod's namespace, started the way the pod's own processes are (ip netns exec), so it
        sees the pod's /etc/resolv.conf."""
        return subprocess.run(["ip", "netns", "exec", self.netns(pod, namespace), *argv], capture_output=True,
                              text=True, timeout=timeout)

    def dig(self, pod: str, *args: str) -> subprocess.CompletedProcess[str]:
        return self.in_pod(pod, "dig", "+tries=2", "+time=1", *args)

    def pods(self, namespace: str = "default") -> list[dict[str, Any]]:
        return json.loads(self.podnet("get", "pods", "-n", namespace, "-o", "json").stdout)["items"]

    def ready_pods(self, prefix: str, n: int, namespace: str = "default", timeout: float = 60) -> list[dict[str, Any]]:
        def ready() -> list[dict[str, Any]] | None:
            ps = [p for p in self.pods(namespace) if p["metadata"]["name"].startswith(prefix)]
            ok = [p for p in ps if any(c.get("type") == "Ready" and c.get("status") == "True"
                                       for c in (p.get("status") or {}).get("conditions") or [])]
            return ok if len(ok) == n and len(ps) == n else None
        return wait_for(ready, timeout, f"{n} ready pods {prefix}*")

    def service_ip(self, name: str, namespace: str = "default") -> str:
        svc = json.loads(self.podnet("get", "service", name, "-n", namespace, "-o", "json").stdout)
        return str(svc["spec"]["clusterIP"])


@pytest.fixture(scope="module")
def dns_lab() -> Iterator[DnsLab]:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    lab = DnsLab(f"td{secrets.token_hex(3)}")
    try:
        lab.podnet("lab", "up", "--name", lab.name, "--nodes", "2")
        yield lab
    finally:
        from podnet.lab import cluster

        cluster.down(lab.name)
