"""The Kubernetes source under faults, against a real `podnet apiserver`: a watch answered 410 Gone
re-lists; refused credentials give a clear error and retries until they are fixed; an object the proxy
cannot use is logged by name and skipped while the rest is followed."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest

from podnet.source import kube as kube_mod
from podnet.source.kube import KubeSource
from podnet.source.kubeconfig import KubeOptions
from podnet.store import keys, open_store

from .conftest import Api


def until(what: str, fn: Any, timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if (v := fn()):
            return v
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def _svc(name: str, cluster_ip: str = "10.96.7.7") -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "faults"},
                       "spec": {"clusterIP": cluster_ip, "ports": [{"port": 80, "protocol": "TCP"}]}}).encode()


def test_watch_answered_410_relists_and_sees_what_happened(api: Api, monkeypatch: pytest.MonkeyPatch,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(kube_mod, "WATCH_TIMEOUT", 1)  # the server ends each watch after 1 s; lightkube re-opens it
    caplog.set_level(logging.INFO, logger="podnet.source.kube")
    store = open_store(api.store_url)
    src = KubeSource(KubeOptions(kubeconfig=str(api.kubeconfig)))
    inf = src.informer("Service", lambda d: d["metadata"]["name"], name="faults services")
    try:
        store.put(keys.resource("Service", "faults", "before"), _svc("before"))
        inf.start()
        assert inf.wait_synced(20)
        # History moves on in other kinds only (no Service event moves this informer's version), then is
        # compacted past the version it holds: the re-opened watch is answered 410 Gone.
        for i in range(3):
            store.put(keys.resource("ConfigMap", "faults", f"cm{i}"), json.dumps(
                {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"cm{i}", "namespace": "faults"}}).encode())
        store.compact(store.revision())
        until("a watch answered 410 Gone", lambda: any("answered 410 Gone" in r.getMessage() for r in caplog.records))
        until("a re-list after it", lambda: inf.relists >= 1 and inf.last_error is None)
        # after the re-list the informer follows again: a change and a delete both arrive
        store.put(keys.resource("Service", "faults", "after"), _svc("after"))
        store.delete(keys.resource("Service", "faults", "before"))
        until("the changes after the re-list", lambda: set(inf.snapshot().values()) >= {"after"}
              and "before" not in inf.snapshot().values())
    finally:
        inf.stop()
        src.close()
        store.close()


def test_refused_credentials_are_named_retried_and_recovered(api: Api, tmp_path: Path,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    def kubeconfig(token: str) -> str:
        return (f"apiVersion: v1\nkind: Config\ncurrent-context: c\nclusters:\n- name: c\n  cluster:\n"
                f"    server: {api.url}\n    certificate-authority: {api.pki / 'ca.crt'}\ncontexts:\n- name: c\n"
                f"  context: {{cluster: c, user: u}}\nusers:\n- name: u\n  user: {{token: {token}}}\n")

    kc = tmp_path / "kubeconfig"
    kc.write_text(kubeconfig("expired-or-wrong"))
    src = KubeSource(KubeOptions(kubeconfig=str(kc)))
    inf = src.informer("Node", lambda d: d["metadata"]["name"], name="faults nodes")
    caplog.set_level(logging.ERROR, logger="podnet.source.kube")
    try:
        inf.start()
        until("a 401 reported", lambda: inf.last_error and "401" in inf.last_error)
        assert not inf.synced and inf._thread is not None and inf._thread.is_alive()  # no crash, retrying
        assert any("refused our credentials (401" in r.getMessage() and str(kc) in r.getMessage()
                   for r in caplog.records)
        kc.write_text(kubeconfig(api.token()))  # the operator fixes the credentials: picked up on the next retry
        assert inf.wait_synced(20)
        assert inf.last_error is None
    finally:
        inf.stop()
        src.close()


def test_a_service_the_proxy_cannot_use_is_logged_by_name_and_skipped(api: Api,
                                                                       caplog: pytest.LogCaptureFixture) -> None:
    from prometheus_client import CollectorRegistry

    from podnet.proxy.healthcheck import ProxyHealth
    from podnet.proxy.informers import ProxyInformers
    from podnet.proxy.metrics import ProxyMetrics
    from podnet.proxy.tracker import ChangeTracker

    store = open_store(api.store_url)
    src = KubeSource(KubeOptions(kubeconfig=str(api.kubeconfig)))
    p = ProxyInformers(src, "n1", ChangeTracker("n1"), ProxyMetrics(CollectorRegistry()), ProxyHealth(30), lambda: None)
    inf = src.informer("Service", p.decode_service, name="proxy services")
    try:
        store.put(keys.resource("Service", "faults", "badip"), _svc("badip", "10.96.0.999"))
        store.put(keys.resource("Service", "faults", "good"), _svc("good"))
        caplog.set_level(logging.ERROR)
        inf.start()
        assert inf.wait_synced(20)
        names = {svc.name for _, svc in inf.snapshot().values()}
        assert "good" in names and "badip" not in names
        assert any("faults/badip" in r.getMessage() and "10.96.0.999" in r.getMessage() for r in caplog.records)
    finally:
        inf.stop()
        src.close()
        store.close()
