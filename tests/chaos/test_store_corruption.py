"""Store corruption in every key family: the daemons' own decode paths and the CLI keep working, and the bad
key is named.

Each case starts from a small cluster's store (Services, their EndpointSlices, a Pod, a Node, a Deployment,
the net-conf and a subnet lease), spoils one key in one way (bad JSON, wrong JSON types, a value holding a
wrong-typed field, binary, empty, a 1.4 MiB junk value, a TEXT cell written behind the store's back), and
then runs, against that one store:
- the proxy's decoders (services, EndpointSlices, nodes) and the lab controller's (pods, deployments,
  nodes) behind real Informers: they sync, log the bad key, and hold every other object;
- the overlay's lease and net-conf decoders: a bad lease is skipped, a bad net-conf is a ValidationError;
- the CLI in-process (get, describe, apply, delete, overlay config get): exit 0 or 1, never a traceback.
A value over the store's limit is refused by the store itself (contract test) and so is never read back.
"""

from __future__ import annotations

import io
import json
import logging
import sqlite3
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from podnet.store import Store, keys, open_store

MANIFEST = """
apiVersion: v1
kind: Node
metadata: {name: node1}
spec: {podCIDR: 10.244.1.0/24}
---
apiVersion: v1
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
  selector: {app: other}
  ports: [{port: 81}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec: {containers: [{name: web}]}
---
apiVersion: v1
kind: Pod
metadata: {name: p1, labels: {app: web}}
spec: {nodeName: node1, containers: [{name: c}]}
"""
NETCONF = b'{"Network": "10.244.0.0/16", "Backend": {"Type": "vxlan"}}'
LEASE_KEY = keys.subnet_lease("10.244.1.0/24")
LEASE = b'{"PublicIP":"192.168.77.11","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,' \
        b'"VtepMAC":"c6:d2:32:6f:8f:44"}}'

FAMILIES = {
    "services": keys.resource("Service", "default", "web"),
    "endpointslices": None,  # the derived slice of web (its name has a hash: found at run time)
    "pods": keys.resource("Pod", "default", "p1"),
    "nodes": keys.resource("Node", None, "node1"),
    "deployments": keys.resource("Deployment", "default", "web"),
    "net-conf": keys.NETWORK_CONFIG,
    "leases": LEASE_KEY,
}
CORRUPTIONS: dict[str, Any] = {
    "bad-json": b'{"kind": "Service", "metadata": ',
    "json-array": b"[1, 2, 3]",
    "json-number": b"42",
    "json-string": b'"a string"',
    "json-null": b"null",
    "wrong-field-types": "wrong-types",  # built per family below
    "binary": b"\x00\xff\xfe garbage \x80",
    "empty": b"",
    "huge-junk": b"{" + b"x" * (1400 * 1024),
    "text-garbage": ("TEXT", "garbage"),
    "text-json": ("TEXT", None),  # the valid value, as TEXT: must still decode
}
KIND_OF = {"services": "Service", "endpointslices": "EndpointSlice", "pods": "Pod", "nodes": "Node",
           "deployments": "Deployment"}
CLI_KIND = {"services": "service", "endpointslices": "endpointslices", "pods": "pod", "nodes": "node",
            "deployments": "deployment"}


def wrong_types(family: str, valid: bytes) -> bytes:
    if family == "net-conf":
        return b'{"Network": 10, "SubnetLen": "x", "Backend": []}'
    if family == "leases":
        return b'{"PublicIP": 5, "BackendType": ["vxlan"], "BackendData": "x"}'
    d = json.loads(valid)
    d["metadata"]["name"] = 7
    d["metadata"]["labels"] = ["not", "a", "map"]
    if "spec" in d:
        d["spec"] = {"ports": "eighty", "selector": 3, "replicas": "x", "containers": {}}
    d["endpoints"] = "none"
    return json.dumps(d).encode()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[Path, Store]]:
    from podnet.api import load_objects
    from podnet.controllers.apply import apply_objects

    db = tmp_path / "s.db"
    store = open_store(f"sqlite://{db}")
    apply_objects(store, load_objects(MANIFEST))
    store.put(keys.NETWORK_CONFIG, NETCONF)
    store.put(LEASE_KEY, LEASE)
    (tmp_path / "m.yaml").write_text(MANIFEST)
    try:
        yield db, store
    finally:
        store.close()


def spoil(db: Path, store: Store, family: str, how: str) -> tuple[str, bytes]:
    key = FAMILIES[family]
    if key is None:
        key = next(kv.key for kv in store.list(keys.kind_prefix("EndpointSlice")).items if "/web-" in kv.key)
    valid = store.get(key).value
    c = CORRUPTIONS[how]
    if isinstance(c, tuple):
        with sqlite3.connect(db) as conn:
            conn.execute("UPDATE kv SET value=? WHERE key=?", (c[1] if c[1] is not None else valid.decode(), key))
    else:
        store.put(key, wrong_types(family, valid) if c == "wrong-types" else c)
    return key, valid


def cli(capsys: pytest.CaptureFixture[str], db: Path, *args: str) -> tuple[int, str, str]:
    """The real `podnet` entry point, in-process: anything but SystemExit escaping it is a crash."""
    from podnet.cli.main import main

    argv, stdin = sys.argv, sys.stdin
    sys.argv = ["podnet", "--store", f"sqlite://{db}", *args]
    sys.stdin = io.TextIOWrapper(io.BytesIO(b""))
    code = 0
    try:
        main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    finally:
        sys.argv, sys.stdin = argv, stdin
    out = capsys.readouterr()
    return code, out.out, out.err


def informer_snapshot(store: Store, prefix: str, **kw: Any) -> dict[str, Any]:
    from podnet.store.informer import Informer

    inf = Informer(store, prefix, name=f"chaos {prefix}", **kw)
    inf.start()
    try:
        assert inf.wait_synced(10), f"informer on {prefix} never synced"
    finally:
        inf.stop()
    return inf.snapshot()


def proxy_decoders() -> Any:
    from prometheus_client import CollectorRegistry

    from podnet.proxy.healthcheck import ProxyHealth
    from podnet.proxy.informers import ProxyInformers
    from podnet.proxy.metrics import ProxyMetrics
    from podnet.proxy.tracker import ChangeTracker

    # the proxy's informer handlers and decoders, on a tracker nothing syncs from
    return ProxyInformers(None, "node1", ChangeTracker("node1"), ProxyMetrics(CollectorRegistry()), ProxyHealth(30),
                          lambda: None)


@pytest.mark.parametrize("how", list(CORRUPTIONS))
def test_readers_survive_and_name_the_key(cluster: tuple[Path, Store], capsys: pytest.CaptureFixture[str],
                                          caplog: pytest.LogCaptureFixture, how: str) -> None:
    """One key of every family spoiled the same way at once (so readers also meet several bad objects)."""
    from podnet.api.loader import from_json
    from podnet.errors import PodnetError, ValidationError
    from podnet.lab.controller import _decode as lab_decode
    from podnet.overlay.netconf import load_netconf
    from podnet.overlay.storesubnet import lease_from_kv

    db, store = cluster
    spoilt = {family: spoil(db, store, family, how)[0] for family in FAMILIES}
    still_valid = how == "text-json"
    bad: set[str] = set()
    for family, key in spoilt.items():
        if family in KIND_OF:
            try:
                from_json(store.get(key).value)
            except PodnetError:
                bad.add(key)
    assert bool(bad) != still_valid
    caplog.set_level(logging.WARNING)

    # proxy and lab-controller decode paths, behind real informers
    p = proxy_decoders()
    # the proxy's decoders take a document: the store source parses the JSON first (podnet.source.store)
    readers = [(keys.kind_prefix("Service"), {"decode_kv": lambda _k, v: p.decode_service(json.loads(v))}),
               (keys.kind_prefix("EndpointSlice"), {"decode_kv": lambda _k, v: p.decode_slice(json.loads(v))}),
               (keys.kind_prefix("Node"), {"decode": json.loads, "on_change": p.on_node}),
               (keys.kind_prefix("Pod"), {"decode": lab_decode}),
               (keys.kind_prefix("Deployment"), {"decode": lab_decode}),
               (keys.kind_prefix("Node"), {"decode": lab_decode})]
    for prefix, kw in readers:
        snap = informer_snapshot(store, prefix, **kw)
        others = {kv.key for kv in store.list(prefix).items if kv.key not in spoilt.values()}
        assert others <= set(snap), (prefix, others - set(snap))
        if still_valid:
            assert {k for k in spoilt.values() if k.startswith(prefix)} <= set(snap)
    for key in bad:
        assert any(key in r.getMessage() for r in caplog.records), f"{key} was not logged"

    # overlay decode paths
    (lease,) = [lease_from_kv(kv) for kv in store.list(keys.SUBNETS_PREFIX).items]
    assert (lease is not None) == still_valid
    if still_valid:
        load_netconf(store)
    else:
        with pytest.raises(ValidationError):
            load_netconf(store)

    # the CLI
    for args in (("get", "services"), ("get", "pods"), ("get", "nodes"), ("get", "deployments"),
                 ("get", "endpointslices"), ("describe", "service", "other"), ("describe", "service", "web"),
                 ("overlay", "config", "get"), ("apply", "-f", str(db.parent / "m.yaml"))):
        code, out, err = cli(capsys, db, *args)
        assert code in (0, 1) and "Traceback" not in err, (args, code, err[-500:])
        if args[0] == "get" and args[1] != "endpointslices":
            assert code == 0, (args, err)
            for key in bad:
                if f"/{args[1]}/" in key:
                    assert key in err, (args, key, err)
    for family in ("services", "pods", "nodes", "deployments"):
        key = spoilt[family]
        code, out, err = cli(capsys, db, "delete", CLI_KIND[family], key.rsplit("/", 1)[1])
        assert code == 0 and "deleted" in out, (family, code, out, err)
        assert store.get(key) is None


def test_store_refuses_what_it_could_not_serve(cluster: tuple[Path, Store]) -> None:
    from podnet.store import ValueTooLarge
    from podnet.store.base import MAX_VALUE_BYTES

    _, store = cluster
    with pytest.raises(ValueTooLarge, match=keys.resource("Service", "default", "web")):
        store.put(keys.resource("Service", "default", "web"), b"{" + b"x" * MAX_VALUE_BYTES)
