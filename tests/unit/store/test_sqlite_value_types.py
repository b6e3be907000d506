"""SQLite types per value, not per column: a TEXT, INTEGER or REAL in the value column (written by hand,
with the sqlite3 shell or another tool) must read as bytes, so every reader reports a bad object by key and
skips it, as it does a bad BLOB, instead of failing with a TypeError."""

from __future__ import annotations

import json
import logging
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from podnet.store import keys
from podnet.store.sqlite import SqliteStore

SVC = """apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: NodePort
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: other}
spec:
  selector: {app: o}
  ports: [{port: 80}]
"""
WEB = keys.resource("Service", "default", "web")


def podnet(db: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "podnet.cli.main", "--store", f"sqlite://{db}", *args],
                          input=stdin, capture_output=True, text=True, timeout=60, check=False)


def set_raw(db: Path, key: str, value: object) -> None:
    with sqlite3.connect(db) as c:
        c.execute("UPDATE kv SET value=? WHERE key=?", (value, key))
        assert c.execute("SELECT typeof(value) FROM kv WHERE key=?", (key,)).fetchone()[0] != "blob"


@pytest.mark.parametrize("value,expected", [("garbage", b"garbage"), ('{"a": 1}', b'{"a": 1}'), (42, b"42"),
                                            (1.5, b"1.5"), ("caf\u00e9", "caf\u00e9".encode())])
def test_every_read_path_gives_bytes(tmp_path: Path, value: object, expected: bytes) -> None:
    db = tmp_path / "s.db"
    s = SqliteStore(f"sqlite://{db}")
    try:
        s.put("/k/a", b"x")
        s.put("/k/b", b"y")
        set_raw(db, "/k/a", value)
        assert s.get("/k/a").value == expected
        assert [kv.value for kv in s.list("/k/").items] == [expected, b"y"]
        w = s.watch("/k/", s.revision() + 1)
        s.commit([])  # nothing
        s.put("/k/a", b"new")  # the commit reads the TEXT value as prev_value
        ev = next(iter(w))
        w.close()
        assert (ev.value, ev.prev_value) == (b"new", expected)  # the TEXT, read as bytes, is the prev_value
        set_raw(db, "/k/a", value)
        assert s.delete("/k/a")
    finally:
        s.close()


def test_cli_readers_report_the_key_and_go_on(tmp_path: Path) -> None:
    db = tmp_path / "s.db"
    (tmp_path / "svc.yaml").write_text(SVC)
    assert podnet(db, "apply", "-f", str(tmp_path / "svc.yaml")).returncode == 0
    conf = '{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
    assert podnet(db, "overlay", "config", "set", "-f", "-", stdin=conf).returncode == 0
    set_raw(db, WEB, "garbage")
    set_raw(db, keys.NETWORK_CONFIG, "garbage")
    for args in (("get", "services"), ("get", "svc", "web"), ("describe", "svc", "other"),
                 ("get", "endpointslices"), ("overlay", "config", "get")):
        r = podnet(db, *args)
        assert "Traceback" not in r.stderr and "TypeError" not in r.stderr, (args, r.stderr)
    r = podnet(db, "get", "services")
    assert r.returncode == 0 and "other" in r.stdout and WEB in r.stderr
    r = podnet(db, "overlay", "config", "get")
    assert r.returncode == 1 and "net-conf" in r.stderr
    r = podnet(db, "apply", "-f", str(tmp_path / "svc.yaml"))
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr


def test_proxy_decode_path_skips_the_text_value_by_key(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The proxy's own decoders behind the store source: the TEXT service is logged by key, the rest decoded."""
    from prometheus_client import CollectorRegistry

    from podnet.proxy.healthcheck import ProxyHealth
    from podnet.proxy.informers import ProxyInformers
    from podnet.proxy.metrics import ProxyMetrics
    from podnet.proxy.tracker import ChangeTracker

    db = tmp_path / "s.db"
    (tmp_path / "svc.yaml").write_text(SVC)
    assert podnet(db, "apply", "-f", str(tmp_path / "svc.yaml")).returncode == 0
    set_raw(db, WEB, "garbage")
    s = SqliteStore(f"sqlite://{db}")
    try:
        from podnet.source.store import StoreSource

        src = StoreSource(s)
        p = ProxyInformers(src, "n1", ChangeTracker("n1"), ProxyMetrics(CollectorRegistry()), ProxyHealth(30),
                           lambda: None)
        inf = src.informer("Service", p.decode_service, name="t")
        with caplog.at_level(logging.ERROR):
            inf.start()
            assert inf.wait_synced(10)
        inf.stop()
        assert [k for k in inf.snapshot()] == [keys.resource("Service", "default", "other")]
        assert any(WEB in r.getMessage() for r in caplog.records)
    finally:
        s.close()


def test_json_text_value_is_read_as_its_bytes(tmp_path: Path) -> None:
    """A TEXT holding valid JSON is the same object as the BLOB would be: the type of the cell is no error."""
    db = tmp_path / "s.db"
    (tmp_path / "svc.yaml").write_text(SVC)
    assert podnet(db, "apply", "-f", str(tmp_path / "svc.yaml")).returncode == 0
    with sqlite3.connect(db) as c:
        c.execute("UPDATE kv SET value=CAST(value AS TEXT) WHERE key=?", (WEB,))
    r = podnet(db, "get", "svc", "web", "-o", "json")
    assert r.returncode == 0 and json.loads(r.stdout)["metadata"]["name"] == "web"
