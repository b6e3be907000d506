"""`proxy run` / `overlay run` source flags: bad combinations are refused by name before anything starts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

PODNET = str(Path(sys.executable).with_name("podnet"))


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "HOME": str(tmp_path)}
    return subprocess.run([PODNET, "--store", f"sqlite:///{tmp_path}/s.db", *args], capture_output=True, text=True,
                          timeout=60, env=env)


@pytest.mark.parametrize(("args", "text"), [
    (("proxy", "run", "--node", "n1", "--source", "bogus"), "--source: 'bogus': must be one of store, kube"),
    (("proxy", "run", "--node", "n1", "--source", "store", "--master", "https://x:6443"), "--source: 'store'"),
    (("proxy", "run", "--node", "n1", "--kubeconfig", "/nonexistent/kc"), "--kubeconfig: '/nonexistent/kc': cannot read"),
    (("proxy", "run", "--node", "n1", "--source", "kube"), "KUBERNETES_SERVICE_HOST"),
    (("overlay", "run", "--node", "n1", "--kubeconfig", "/x"), "need --kube-subnet-mgr"),
    (("overlay", "run", "--node", "n1", "--kube-subnet-mgr", "--kube-annotation-prefix", "org"),
     "--kube-annotation-prefix: 'org'"),
])
def test_bad_source_flags_exit_1_naming_the_flag(tmp_path: Path, args: tuple[str, ...], text: str) -> None:
    r = run(tmp_path, *args)
    assert r.returncode == 1 and text in r.stderr, r.stderr
    assert "Traceback" not in r.stderr
