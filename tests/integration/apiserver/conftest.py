"""Fixtures for API server tests: a server over a throw-away store (no root needed), a lab with its API
server (root), and helpers to run the real kubectl against either."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PODNET = str(Path(sys.executable).with_name("podnet"))
KUBECTL = shutil.which("kubectl")


@dataclass
class Api:
    url: str
    kubeconfig: Path
    pki: Path
    store_url: str

    def kubectl(self, *args: str, check: bool = True, input: str | None = None,
                timeout: float = 60) -> subprocess.CompletedProcess[str]:
        if KUBECTL is None:
            pytest.skip("kubectl is not installed")
        r = subprocess.run([KUBECTL, "--kubeconfig", str(self.kubeconfig), *args], capture_output=True, text=True,
                           input=input, timeout=timeout)
        if check and r.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} -> {r.returncode}\n{r.stdout}\n{r.stderr}")
        return r

    def ssl_context(self, *, client_cert: bool = True) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        if client_cert:
            ctx.load_cert_chain(str(self.pki / "admin.crt"), str(self.pki / "admin.key"))
        return ctx

    def token(self) -> str:
        return (self.pki / "token").read_text().strip()

    def revision(self) -> int:
        from podnet.store import open_store

        s = open_store(self.store_url)
        try:
            return s.revision()
        finally:
            s.close()


def _wait_port(port_file: Path, proc: subprocess.Popen[bytes], log: Path) -> int:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        if proc.poll() is not None:
            raise AssertionError(f"podnet apiserver exited {proc.returncode}:\n{log.read_text()}")
        time.sleep(0.05)
    raise AssertionError(f"podnet apiserver did not start:\n{log.read_text()}")


@contextlib.contextmanager
def _serving(store_url: str, d: Path, *extra: str) -> Iterator[Api]:
    """`podnet apiserver` over store_url on a free loopback port, stopped by pid afterwards."""
    log = d / "apiserver.log"
    env = {k: v for k, v in os.environ.items() if k != "PODNET_SERVICE_CIDR"}
    with log.open("wb") as out:
        proc = subprocess.Popen([PODNET, "--store", store_url, "apiserver", "--listen", "127.0.0.1:0",
                                 "--cert-dir", str(d / "pki"), "--port-file", str(d / "port"), *extra],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    try:
        port = _wait_port(d / "port", proc, log)
        from podnet.apiserver import certs

        kc = d / "kubeconfig"
        kc.write_text(certs.kubeconfig(certs.CertDir(d / "pki"), f"https://127.0.0.1:{port}"))
        yield Api(f"https://127.0.0.1:{port}", kc, d / "pki", store_url)
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """`podnet apiserver` over a fresh SQLite store on a free loopback port."""
    d = tmp_path_factory.mktemp("apiserver")
    with _serving(f"sqlite:///{d}/state.db", d) as a:
        yield a


@pytest.fixture(scope="module")
def api_dual(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """`podnet apiserver` of a dual-stack cluster: an IPv4 and an IPv6 service CIDR, IPv4 the default."""
    d = tmp_path_factory.mktemp("apiserver-dual")
    with _serving(f"sqlite:///{d}/state.db", d, "--service-cidr", DUAL_SERVICE_CIDR) as a:
        yield a


DUAL_SERVICE_CIDR = "10.96.0.0/16,fd00:10:96::/112"


@pytest.fixture(scope="module")
def api_etcd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    """`podnet apiserver` over a one-member etcd (tests/contract/etcd_cluster.py, stopped by pid)."""
    from tests.contract.etcd_cluster import EtcdCluster, etcd_available

    if not etcd_available():
        pytest.skip("etcd server binary not installed (Debian package etcd-server)")
    d = tmp_path_factory.mktemp("apiserver-etcd")
    with EtcdCluster(1) as cluster, _serving(cluster.url, d) as a:
        yield a


@dataclass
class LabApi(Api):
    name: str = ""

    def exec(self, target: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        from podnet.lab.cluster import resolve_target

        ns = resolve_target(self.name, target)
        return subprocess.run(["ip", "netns", "exec", ns, *argv], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def lab_api() -> Iterator[LabApi]:
    """A 2-node lab (its own store in its directory) and its API server."""
    if os.geteuid() != 0:
        pytest.skip("needs root")
    name = f"a{secrets.token_hex(3)}"
    store_url = f"sqlite:////run/podnet/labs/{name}/state.db"
    try:
        r = subprocess.run([PODNET, "--store", store_url, "lab", "up", "--name", name], capture_output=True,
                           text=True, timeout=120)
        assert r.returncode == 0, r.stdout + r.stderr
        kc = subprocess.run([PODNET, "lab", "kubeconfig", "--name", name], capture_output=True, text=True,
                            check=True).stdout.strip()
        from podnet.lab import apiserver
        from podnet.lab.state import LabState

        st = LabState.load(name)
        assert st is not None
        yield LabApi(f"https://127.0.0.1:{apiserver.port(st)}", Path(kc), apiserver.pki_dir(st), store_url, name)
    finally:
        subprocess.run([PODNET, "--store", store_url, "lab", "down", "--name", name], capture_output=True,
                       timeout=120)
