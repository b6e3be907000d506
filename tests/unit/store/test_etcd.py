"""etcd backend without a server: URL parsing, options, error classification, failover and the
reconciliation of writes whose answer was lost. Fake stubs stand in for gRPC; real servers are in
tests/contract/ and tests/integration/store/."""

from __future__ import annotations

import time
from typing import Any

import grpc
import pytest
from aetcd import rpc

from podnet.errors import ValidationError
from podnet.store import ConflictError, Put, StoreUnavailable
from podnet.store.etcd import (
    EtcdConfigError,
    EtcdStore,
    _classify,
    _Endpoint,
    _prefix_end,
    _SyntheticRpcError,
    parse_endpoints,
)

REFUSED = "failed to connect to all addresses; last error: UNKNOWN: ipv4:127.0.0.1:1: Connection refused"


def err(code: grpc.StatusCode, details: str) -> grpc.RpcError:
    return _SyntheticRpcError(code, details)


# ---- URLs and options ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoints", "tls"),
    [
        ("etcd://127.0.0.1:2379", ["127.0.0.1:2379"], False),
        ("etcd://a:1,b:2,c:3", ["a:1", "b:2", "c:3"], False),
        ("etcd://etcd.example", ["etcd.example:2379"], False),
        ("etcds://a:1", ["a:1"], True),
        ("etcd://http://a:1,http://b:2/", ["a:1", "b:2"], False),  # flannel's --etcd-endpoints pasted
        ("etcd://https://a:1", ["a:1"], True),
        ("etcd://[::1]:2379", ["[::1]:2379"], False),
        ("etcd://[fd00::1]", ["[fd00::1]:2379"], False),
        ("etcd://a:1, b:2,", ["a:1", "b:2"], False),
        ("etcd://unix:///run/podnet/labs/x/etcd:2379", ["unix:///run/podnet/labs/x/etcd:2379"], False),
        ("etcd://unix:/tmp/e.sock", ["unix:///tmp/e.sock"], False),
    ],
)
def test_parse_endpoints(url: str, endpoints: list[str], tls: bool) -> None:
    assert parse_endpoints(url) == (endpoints, tls)


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("etcd://", "no endpoints"),
        ("etcd://a:0", "port '0' is not 1-65535"),
        ("etcd://a:http", "port 'http' is not 1-65535"),
        ("etcd://:2379", "has no host"),
        ("etcd://unix:", "without a socket path"),
        ("sqlite:///x.db", "not an etcd:// or etcds:// URL"),
    ],
)
def test_bad_urls_name_the_field_and_value(url: str, reason: str) -> None:
    with pytest.raises(EtcdConfigError) as ei:
        parse_endpoints(url)
    msg = str(ei.value)
    assert msg.startswith(f"store: {url!r}: ") and reason in msg
    assert isinstance(ei.value, ValidationError) and ei.value.exit_code == 1


def test_option_pairs_and_unreadable_files(tmp_path: Any) -> None:
    with pytest.raises(EtcdConfigError, match=r"etcd\.keyfile: missing"):
        EtcdStore("etcd://a:1", certfile=str(tmp_path / "c.pem"))
    with pytest.raises(EtcdConfigError, match=r"etcd\.password: missing"):
        EtcdStore("etcd://a:1", username="root")
    missing = str(tmp_path / "ca.pem")
    with pytest.raises(EtcdConfigError) as ei:
        EtcdStore("etcd://a:1", cafile=missing)
    assert str(ei.value) == f"etcd.cafile: {missing!r}: cannot read: No such file or directory"


def test_tls_is_on_for_etcds_or_a_ca(tmp_path: Any) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(b"-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n")
    assert EtcdStore("etcd://a:1").tls is False
    assert EtcdStore("etcds://a:1").tls is True
    assert EtcdStore("etcd://a:1", cafile=str(ca)).tls is True


@pytest.mark.parametrize(
    ("prefix", "end"),
    [(b"/a/", b"/a0"), (b"a\xff", b"b"), (b"a\xff\xff", b"b"), (b"\xff", b"\0"), (b"", b"\0")],
)
def test_prefix_end(prefix: bytes, end: bytes) -> None:
    assert _prefix_end(prefix) == end


@pytest.mark.parametrize(
    ("code", "details", "kind"),
    [
        (grpc.StatusCode.UNAVAILABLE, REFUSED, "unreachable"),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader", "retry"),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed", "unknown"),
        (grpc.StatusCode.UNAVAILABLE, "etcdserver: request timed out", "unknown"),
        (grpc.StatusCode.UNAVAILABLE, "Socket closed", "unknown"),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", "unknown"),
        (grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token", "auth"),
        (grpc.StatusCode.NOT_FOUND, "etcdserver: requested lease not found", "fatal"),
        (grpc.StatusCode.OUT_OF_RANGE, "etcdserver: mvcc: required revision has been compacted", "fatal"),
    ],
)
def test_classify(code: grpc.StatusCode, details: str, kind: str) -> None:
    assert _classify(err(code, details)) == kind


# ---- failover with fake members -------------------------------------------------------------------


class FakeKV:
    """Answers from a script: each entry is an exception to raise or a function of the request."""

    def __init__(self, name: str, log: list[str], script: list[Any]) -> None:
        self.name, self.log, self.script = name, log, script

    def _next(self, method: str, req: Any) -> Any:
        self.log.append(f"{self.name}.{method}")
        item = self.script.pop(0) if self.script else err(grpc.StatusCode.UNAVAILABLE, REFUSED)
        if isinstance(item, BaseException):
            raise item
        return item(req)

    def Range(self, req: Any, timeout: float, metadata: Any) -> Any:  # noqa: N802 - gRPC method name
        return self._next("Range", req)

    def Txn(self, req: Any, timeout: float, metadata: Any) -> Any:  # noqa: N802
        return self._next("Txn", req)


class FakeAuth:
    def __init__(self) -> None:
        self.calls = 0

    def Authenticate(self, req: Any, timeout: float) -> Any:  # noqa: N802
        self.calls += 1
        return rpc.AuthenticateResponse(token=f"t{self.calls}")


class FakeChannel:
    def close(self) -> None:
        pass


def fake_store(scripts: list[list[Any]], **kw: Any) -> tuple[EtcdStore, list[str], FakeAuth]:
    s = EtcdStore(",".join(f"etcd://m{i}:1" if i == 0 else f"m{i}:1" for i in range(len(scripts))), **kw)
    log: list[str] = []
    auth = FakeAuth()
    s._endpoints = [
        _Endpoint(f"m{i}:1", FakeChannel(), FakeKV(f"m{i}", log, sc), None, None, None, auth)  # type: ignore[arg-type]
        for i, sc in enumerate(scripts)
    ]
    return s, log, auth


def range_resp(rev: int, *kvs: tuple[str, bytes, int]) -> Any:
    r = rpc.RangeResponse(count=len(kvs))
    r.header.revision = rev
    for key, value, mod in kvs:
        r.kvs.append(rpc.KeyValue(key=key.encode(), value=value, mod_revision=mod, create_revision=mod))
    return r


def test_no_member_listening_fails_at_once_after_one_try_each() -> None:
    s, log, _ = fake_store([[], [], []], timeout=30)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no etcd member answered"):
        s.get("/k")
    assert log == ["m0.Range", "m1.Range", "m2.Range"]
    assert time.monotonic() - t0 < 5  # not the 30 s budget: refused everywhere means down


def test_fails_over_and_stays_on_the_member_that_answered() -> None:
    ok = lambda req: range_resp(7, ("/k", b"v", 5))  # noqa: E731
    s, log, _ = fake_store([[err(grpc.StatusCode.UNAVAILABLE, REFUSED)], [ok, ok], []])
    kv = s.get("/k")
    assert kv is not None and kv.value == b"v" and kv.mod_revision == 5
    assert s.get("/k") is not None
    assert log == ["m0.Range", "m1.Range", "m1.Range"]


def test_waits_out_a_leader_election_within_the_budget() -> None:
    no_leader = err(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
    ok = lambda req: range_resp(3)  # noqa: E731
    s, log, _ = fake_store([[no_leader, no_leader, ok], [no_leader, no_leader]], timeout=5)
    assert s.revision() == 3
    assert log == ["m0.Range", "m1.Range", "m0.Range", "m1.Range", "m0.Range"]


def test_budget_bounds_an_operation_that_never_succeeds() -> None:
    no_leader = err(grpc.StatusCode.UNAVAILABLE, "etcdserver: no leader")
    s, _, _ = fake_store([[no_leader] * 100, [no_leader] * 100], timeout=0.5)
    t0 = time.monotonic()
    with pytest.raises(StoreUnavailable, match="no leader"):
        s.get("/k")
    assert time.monotonic() - t0 < 3


def txn_failed(rev: int, *current: tuple[str, bytes, int] | None) -> Any:
    r = rpc.TxnResponse(succeeded=False)
    r.header.revision = rev
    for c in current:
        rr = rpc.RangeResponse()
        if c is not None:
            rr.kvs.append(rpc.KeyValue(key=c[0].encode(), value=c[1], mod_revision=c[2], create_revision=c[2]))
        r.responses.append(rpc.ResponseOp(response_range=rr))
    return r


def test_conditional_write_whose_answer_was_lost_is_recognised_as_applied() -> None:
    # m0 applies our put then dies before answering; the retry on m1 finds the key "already there":
    # exactly the value we wrote, so the put succeeded (at the revision it was applied).
    lost = err(grpc.StatusCode.UNAVAILABLE, "etcdserver: leader changed")
    s, log, _ = fake_store([[lost], [lambda req: txn_failed(12, ("/k", b"mine", 11))]])
    assert s.put("/k", b"mine", if_absent=True) == 11
    assert log == ["m0.Txn", "m1.Txn"]


def test_lost_answer_but_someone_else_won_is_a_conflict() -> None:
    lost = err(grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded")
    s, _, _ = fake_store([[lost], [lambda req: txn_failed(12, ("/k", b"theirs", 11))]])
    with pytest.raises(ConflictError) as ei:
        s.put("/k", b"mine", if_absent=True)
    assert (ei.value.key, ei.value.reason) == ("/k", "already exists (mod_revision 11)")


def test_failed_compare_names_the_key_and_condition() -> None:
    s, _, _ = fake_store([[lambda req: txn_failed(9, ("/a", b"1", 4), ("/b", b"2", 8))]])
    with pytest.raises(ConflictError) as ei:
        s.commit([Put("/a", b"x", if_revision=4), Put("/b", b"y", if_revision=5)])
    assert (ei.value.key, ei.value.reason) == ("/b", "mod_revision is 8, expected 5")


def test_commit_builds_one_txn_with_the_conditions() -> None:
    seen: list[Any] = []

    def ok(req: Any) -> Any:
        seen.append(req)
        r = rpc.TxnResponse(succeeded=True)
        r.header.revision = 20
        return r

    s, _, _ = fake_store([[ok]])
    assert s.commit([Put("/a", b"1", if_absent=True, lease=7), Put("/b", b"2", if_revision=3)]) == 20
    (req,) = seen
    assert [(c.key, c.target, c.result) for c in req.compare] == [
        (b"/a", rpc.Compare.VERSION, rpc.Compare.EQUAL),
        (b"/b", rpc.Compare.MOD, rpc.Compare.EQUAL),
    ]
    assert req.compare[1].mod_revision == 3
    assert [(op.request_put.key, op.request_put.lease) for op in req.success] == [(b"/a", 7), (b"/b", 0)]
    assert [op.request_range.key for op in req.failure] == [b"/a", b"/b"]


def test_duplicate_keys_in_a_commit_are_refused_before_sending() -> None:
    s, log, _ = fake_store([[]])
    with pytest.raises(ValueError, match="appears twice"):
        s.commit([Put("/a", b"1"), Put("/a", b"2")])
    assert log == []


def test_expired_auth_token_is_renewed_once() -> None:
    expired = err(grpc.StatusCode.UNAUTHENTICATED, "etcdserver: invalid auth token")
    s, log, auth = fake_store([[expired, lambda req: range_resp(4)]], username="u", password="p")
    assert s.revision() == 4
    assert auth.calls == 2 and s._token == "t2"
    assert log == ["m0.Range", "m0.Range"]


def test_list_pages_at_one_revision() -> None:
    seen: list[Any] = []

    def page(keys: list[str], more: bool, rev: int = 40) -> Any:
        def answer(req: Any) -> Any:
            seen.append((req.key, req.range_end, req.revision, req.limit))
            r = range_resp(rev, *((k, b"v", 5) for k in keys))
            r.more = more
            return r

        return answer

    s, _, _ = fake_store([[page(["/p/a", "/p/b"], True), page(["/p/c"], False, rev=41)]])
    res = s.list("/p/")
    assert [kv.key for kv in res.items] == ["/p/a", "/p/b", "/p/c"]
    assert res.revision == 40  # the first page's: a later page is read at it, not at the newer head
    assert seen[0][:3] == (b"/p/", b"/p0", 0) and seen[1][:3] == (b"/p/b\0", b"/p0", 40)
