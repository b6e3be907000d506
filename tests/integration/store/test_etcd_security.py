"""etcd with TLS client certificates and with username/password auth, as flanneld's --etcd-* flags allow."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from podnet.store import StoreError, StoreUnavailable
from podnet.store.etcd import EtcdConfigError, EtcdStore
from tests.contract.etcd_cluster import EtcdCluster, etcd_available, make_tls_files

pytestmark = pytest.mark.integration

SRC = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..", "..", "src"))


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd server binary not installed")
    tls = make_tls_files(tmp_path_factory.mktemp("etcd-pki"))
    with EtcdCluster(1, tls=tls) as c:
        yield c


@pytest.fixture(scope="module")
def auth_cluster() -> Iterator[EtcdCluster]:
    if not etcd_available():
        pytest.skip("etcd server binary not installed")
    # tokens live 1 s, so a test outlives its first token and the store must log in again
    with EtcdCluster(1, extra_args=["--auth-token-ttl=1"]) as c:
        c.etcdctl("user", "add", "root:s3cret")
        c.etcdctl("user", "grant-role", "root", "root")
        c.etcdctl("auth", "enable")
        yield c


def test_tls_with_client_certificate(tls_cluster: EtcdCluster) -> None:
    tls = tls_cluster.tls
    assert tls is not None
    store = EtcdStore(tls_cluster.url, cafile=tls.cafile, certfile=tls.client_cert, keyfile=tls.client_key)
    try:
        assert store.tls
        rev = store.put("/tls/k", b"v")
        kv = store.get("/tls/k")
        assert kv is not None and kv.value == b"v" and kv.mod_revision == rev
        w = store.watch("/tls/", rev)
        assert next(iter(w)).value == b"v"
        w.close()
    finally:
        store.close()


@pytest.mark.parametrize("how", ["plaintext", "no client cert"])
def test_tls_cluster_refuses_clients_without_the_right_credentials(tls_cluster: EtcdCluster, how: str) -> None:
    tls = tls_cluster.tls
    assert tls is not None
    opts: dict[str, Any] = {} if how == "plaintext" else {"cafile": tls.cafile}
    store = EtcdStore(tls_cluster.url, **opts)
    try:
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailable):
            store.get("/tls/k")
        assert time.monotonic() - t0 < 3
    finally:
        store.close()


def test_cli_passes_tls_options_to_the_store(tls_cluster: EtcdCluster) -> None:
    tls = tls_cluster.tls
    assert tls is not None
    base = [sys.executable, "-m", "podnet.cli.main", "--store", tls_cluster.url]
    env = {**os.environ, "PYTHONPATH": SRC}
    ok = subprocess.run(
        [*base, "--etcd-cafile", tls.cafile, "--etcd-certfile", tls.client_cert, "--etcd-keyfile", tls.client_key,
         "get", "services"],
        capture_output=True, text=True, env=env, timeout=60,
    )
    assert ok.returncode == 0, ok.stderr
    bad = subprocess.run([*base, "--etcd-cafile", "/nonexistent/ca.pem", "get", "services"],
                         capture_output=True, text=True, env=env, timeout=60)
    assert bad.returncode == 1
    assert "etcd.cafile: '/nonexistent/ca.pem': cannot read: No such file or directory" in bad.stderr


def test_username_password_and_token_renewal(auth_cluster: EtcdCluster) -> None:
    store = EtcdStore(auth_cluster.url, username="root", password="s3cret")
    logins = 0
    real = store._authenticate

    def counting(*args: Any) -> None:
        nonlocal logins
        logins += 1
        real(*args)

    store._authenticate = counting  # type: ignore[method-assign]
    try:
        lease = store.grant(30)
        store.put("/auth/k", b"1", lease=lease)
        assert logins >= 1
        before = logins
        time.sleep(2.5)  # the 1 s token has expired by now
        store.put("/auth/k", b"2", lease=lease)
        # The expired token was renewed by logging in again. With a 1 s TTL a loaded machine can let it
        # expire again between the RPCs of one write, so renewals are counted as "at least one".
        assert logins > before
        kv = store.get("/auth/k")
        assert kv is not None and kv.value == b"2"
        assert store.keepalive(lease) == 30
    finally:
        store.close()


def test_auth_errors_are_clear(auth_cluster: EtcdCluster) -> None:
    wrong = EtcdStore(auth_cluster.url, username="root", password="nope")
    with pytest.raises(EtcdConfigError, match=r"etcd\.username: 'root': rejected by etcd"):
        wrong.get("/auth/k")
    anonymous = EtcdStore(auth_cluster.url)
    with pytest.raises(StoreError, match="user name is empty") as ei:
        anonymous.get("/auth/k")
    assert not isinstance(ei.value, StoreUnavailable)  # reachable, just not allowed
    wrong.close()
    anonymous.close()
