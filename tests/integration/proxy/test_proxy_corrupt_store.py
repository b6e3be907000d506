"""A real `podnet proxy run`, restarted on a store with corrupt values (a TEXT cell written behind the
store's back, bad JSON, wrong types, an EndpointSlice that is a JSON array): it starts, names every bad key
in its log, keeps running, and programs the rest, so a ClusterIP still reaches its endpoints."""

from __future__ import annotations

import sqlite3

import pytest

from podnet.store import keys
from tests.integration.proxy.pxcluster import Env

pytestmark = pytest.mark.integration


def test_restarted_proxy_skips_corrupt_values_by_key_and_serves_the_rest(env: Env) -> None:
    env.stop_proxy()
    bad = {
        keys.resource("Service", "default", "sticky"): "TEXT",
        keys.resource("Service", "default", "empty"): b'{"apiVersion": "v1", "kind": "Service", "spec": ',
        keys.resource("Service", "default", "self"): b'{"apiVersion": "v1", "kind": "Service", "metadata": 5}',
        keys.resource("EndpointSlice", "default", "dns-1"): b"[1, 2, 3]",
    }
    for key, value in bad.items():
        if value != "TEXT":
            env.store.put(key, value)
    with sqlite3.connect(env.db) as c:
        c.execute("UPDATE kv SET value='garbage' WHERE key=?", (keys.resource("Service", "default", "sticky"),))
    env.start_proxy()  # waits for its first full sync
    res = env.probe(env.client, "connect", "10.96.0.10", "80")
    assert res["result"] == "ok", res
    log = env.log_text()
    for key in bad:
        assert key in log, (key, log[-2000:])
    assert "Traceback" not in log and env.proxy is not None and env.proxy.poll() is None
