"""The list path's caches (decoded objects and Table rows per stored version) never serve a stale or bad object."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from podnet.apiserver import objects, tables
from podnet.store import KeyValue

KEY = "/podnet/resources/services/default/web"


def svc(port: int, created: str = "2026-01-01T00:00:00Z") -> bytes:
    return json.dumps({"apiVersion": "v1", "kind": "Service",
                       "metadata": {"name": "web", "namespace": "default", "uid": "u1", "creationTimestamp": created},
                       "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.5", "selector": {"app": "web"},
                                "ports": [{"port": port, "protocol": "TCP"}]}}).encode()


def test_a_new_version_is_decoded_again() -> None:
    a = objects._decode_shared(KeyValue(KEY, svc(80), 1, 5))
    b = objects._decode_shared(KeyValue(KEY, svc(81), 1, 6))
    assert a is not None and b is not None
    assert a["spec"]["ports"][0]["port"] == 80 and b["spec"]["ports"][0]["port"] == 81
    assert b["metadata"]["resourceVersion"] == "6"


def test_same_revision_other_bytes_are_validated_again() -> None:
    """A value changed behind the store's back (same revision) is not trusted because of the first one."""
    assert objects._decode_shared(KeyValue(KEY, svc(82), 1, 7)) is not None
    bad = svc(82).replace(b'"port": 82', b'"port": "eighty-two"')
    assert objects._decode_shared(KeyValue(KEY, bad, 1, 7)) is None
    assert objects.decode(KeyValue(KEY, bad, 1, 7)) is None


def test_cached_rows_follow_versions_and_age() -> None:
    now = datetime.now(UTC)
    created = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%SZ")
    o1 = objects._decode_shared(KeyValue(KEY, svc(80, created), 1, 8))
    t1 = tables.table("Service", [o1])["rows"][0]["cells"]
    again = tables.table("Service", [o1])["rows"][0]["cells"]
    assert t1 == again and t1[4] == "80/TCP" and t1[5] in ("5m", "5m1s")
    o2 = objects._decode_shared(KeyValue(KEY, svc(90, created), 1, 9))
    t2 = tables.table("Service", [o2])["rows"][0]["cells"]
    assert t2[4] == "90/TCP"
    older = (now - timedelta(hours=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    o3 = json.loads(svc(90, older))
    o3["metadata"]["resourceVersion"] = "9"  # same version key as o2's row, other timestamp: Age is per answer
    assert tables.table("Service", [o3])["rows"][0]["cells"][5] == "3h"


def test_age_of_bad_timestamps() -> None:
    for ts in ["", "yesterday", "2026-13-01T00:00:00Z", "2026-01-01 00:00:00", 5, None]:
        assert tables.age({"metadata": {"creationTimestamp": ts}}) == "<unknown>"
