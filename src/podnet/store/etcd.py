"""etcd v3 backend of the Store protocol: the store for clusters that span hosts, shared with flanneld.

Client choice: aetcd 1.0's `Client` is asyncio-only, speaks plaintext to exactly one host:port (no TLS,
no failover) and would need a private event loop thread to serve our blocking protocol. We use only its
generated protobuf/gRPC stubs (`aetcd.rpc`) over grpcio's *synchronous* channels instead: thread-safe
blocking calls with per-call deadlines, TLS credentials, one channel per endpoint so we decide failover
ourselves, and server-streaming iterators for watch and keepalive. No event loop, no thread hop per call.

Mapping onto etcd:
- put/delete/commit with conditions -> one Txn whose compares are the conditions (so a commit is one
  revision); the failure branch reads every key, which tells which condition failed.
- leases -> etcd leases (TTL in whole seconds, rounded up); keepalive() sends one LeaseKeepAlive.
- watch -> a Watch stream with prev_kv from a revision; on a broken stream it re-creates the watch on any
  member from the last revision it delivered + 1, so events are neither lost nor repeated. Compaction
  -> CompactedError (the Informer re-lists, as flannel does since v0.28).
- Every request carries `hasleader=true`: a member cut off from the quorum answers "no leader" at once
  instead of hanging, and we move to the next member.

Failure handling (what clientv3 does, in short): an operation has a budget of `timeout` seconds (5 s)
over all members, enough to ride out a leader election (a write stalls ~2 s when the leader dies). But
when every member in turn is unreachable (connection refused, or no connection within 1 s) it raises
StoreUnavailable at once: CLI commands exit 2 in milliseconds when etcd is down. Reads are retried on any transient error. A write is retried
freely when it certainly did not reach a member; when the outcome is unknown (member died mid-request,
leader changed) it is retried too, and a conditional write that then "conflicts" with exactly the state
it wanted to produce counts as done (our first attempt was applied).
"""

from __future__ import annotations

import builtins
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
from aetcd import rpc

from podnet.errors import Problem, ValidationError
from podnet.store import etcd_buckets
from podnet.store.base import (
    CompactedError,
    ConflictError,
    Delete,
    Event,
    KeyValue,
    LeaseNotFound,
    ListResult,
    Op,
    Put,
    StoreError,
    StoreUnavailable,
    check_put,
)
from podnet.store.buckets import Bucket, indexed

log = logging.getLogger(__name__)

DEFAULT_PORT = 2379
DEFAULT_TIMEOUT = 5.0  # budget of one operation over every member: rides out a leader election
ATTEMPT_TIMEOUT = 2.0  # one request to one connected member
CONNECT_TIMEOUT = 1.0  # one request to a member we are not connected to (a silent host costs this)
RETRY_PAUSE = 0.1  # between rounds over all members (e.g. while they elect a leader)
LIST_PAGE = 1000  # keys per Range page; a list is still taken at one revision
_METADATA_LEADER = ("hasleader", "true")

_CHANNEL_OPTIONS = [
    # grpc's default reconnect backoff grows to 120 s: a member that comes back would stay unused for
    # minutes. Cap it at 1 s so failback and recovery happen within the 5 s we promise.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # grpc core also takes this as the least time one connection attempt gets (its MIN_CONNECT_TIMEOUT).
    # At 100 ms a member whose HTTP/2 SETTINGS came later (a loaded machine) counted as unreachable, and a
    # one-member store failed at once. A request still waits at most CONNECT_TIMEOUT for it.
    ("grpc.min_reconnect_backoff_ms", 2000),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
    ("grpc.max_send_message_length", 8 * 1024 * 1024),
    # detect a silently dead peer under a long-lived watch (a killed process resets at once anyway);
    # etcd refuses pings more often than every 5 s.
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.enable_retries", 0),
]

T = TypeVar("T")


# ---- URL and options ------------------------------------------------------------------------------


class EtcdConfigError(ValidationError, StoreError):
    """A bad etcd URL or option: input error (CLI exit 1), also a StoreError for open_store's callers."""

    def __init__(self, field: str, value: object, reason: str) -> None:
        super().__init__([Problem(field, value, reason)])


def parse_endpoints(url: str) -> tuple[list[str], bool]:
    """etcd://h1:p1,h2:p2 -> (["h1:p1", "h2:p2"], tls?). etcds:// means TLS. Port defaults to 2379.

    Endpoints may also be written the flannel way (http://h:p, https://h:p), so a --etcd-endpoints
    value can be pasted after etcd://.
    """
    if url.startswith("etcds://"):
        rest, tls = url[len("etcds://"):], True
    elif url.startswith("etcd://"):
        rest, tls = url[len("etcd://"):], False
    else:
        raise EtcdConfigError("store", url, "not an etcd:// or etcds:// URL")
    rest = rest.split("?", 1)[0].rstrip("/")
    endpoints: list[str] = []
    for raw in rest.split(","):
        ep = raw.strip()
        if ep.startswith("https://"):
            ep, tls = ep[len("https://"):], True
        elif ep.startswith("http://"):
            ep = ep[len("http://"):]
        ep = ep.rstrip("/")
        if not ep:
            continue
        if ep.startswith("unix:"):
            # A unix socket (etcd's unix://NAME:PORT listener): crosses network namespaces, which the
            # lab needs, since nodes in their own namespaces cannot reach each other's loopback.
            path = ep[len("unix:"):].lstrip("/")
            if not path:
                raise EtcdConfigError("store", url, "unix: endpoint without a socket path")
            endpoints.append(f"unix:///{path}")
            continue
        host, port = _split_host_port(url, ep)
        endpoints.append(f"{host}:{port}")
    if not endpoints:
        raise EtcdConfigError("store", url, "no endpoints (use etcd://HOST:PORT[,HOST:PORT...])")
    return endpoints, tls


def _split_host_port(url: str, ep: str) -> tuple[str, int]:
    if ep.startswith("["):  # [v6]:port
        host, _, tail = ep[1:].partition("]")
        port_s = tail[1:] if tail.startswith(":") else ""
        host = f"[{host}]"
    elif ep.count(":") == 1:
        host, port_s = ep.split(":")
    elif ":" in ep:  # bare IPv6 without port
        host, port_s = f"[{ep}]", ""
    else:
        host, port_s = ep, ""
    if not host or host == "[]":
        raise EtcdConfigError("store", url, f"endpoint {ep!r} has no host")
    if not port_s:
        return host, DEFAULT_PORT
    if not port_s.isdigit() or not 0 < int(port_s) < 65536:
        raise EtcdConfigError("store", url, f"endpoint {ep!r}: port {port_s!r} is not 1-65535")
    return host, int(port_s)


def _read_pem(option: str, path: str | None) -> bytes | None:
    if not path:
        return None
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise EtcdConfigError(f"etcd.{option}", path, f"cannot read: {exc.strerror or exc}") from exc


def _prefix_end(prefix: bytes) -> bytes:
    """etcd's range_end for "every key starting with prefix" (b"\\0" = no upper bound)."""
    b = bytearray(prefix)
    while b:
        if b[-1] < 0xFF:
            b[-1] += 1
            return bytes(b)
        b.pop()
    return b"\0"


# ---- error classification ----------------------------------------------------------------------


_UNREACHABLE_HINTS = (
    "failed to connect",
    "connection refused",
    "connections to all backends failing",
    "dns resolution failed",
    "no route to host",
    "name resolution",
    "ssl_error",
    "handshake failed",
)


def _code(exc: grpc.RpcError) -> grpc.StatusCode | None:
    try:
        return exc.code()
    except Exception:  # noqa: BLE001 - not every RpcError is a Call
        return None


def _details(exc: grpc.RpcError) -> str:
    try:
        return str(exc.details() or "")
    except Exception:  # noqa: BLE001
        return str(exc)


def _classify(exc: grpc.RpcError) -> str:
    """One of: unreachable (request never got to a member), retry (member refused it, safe to resend),
    unknown (it may have been applied), auth (token expired), fatal (a real answer: raise)."""
    code, details = _code(exc), _details(exc)
    low = details.lower()
    if code == grpc.StatusCode.UNAVAILABLE:
        if low.startswith("etcdserver: no leader") or "too many requests" in low:
            return "retry"
        if low.startswith("etcdserver:"):
            return "unknown"  # leader changed, request timed out: maybe applied
        if any(h in low for h in _UNREACHABLE_HINTS):
            return "unreachable"
        return "unknown"  # connection reset or closed mid-request
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "unknown"
    if code == grpc.StatusCode.UNKNOWN and ("context deadline exceeded" in low or "context canceled" in low):
        return "unknown"  # etcd 3.4 passes a timed-out linearizable read's context error through as UNKNOWN
    if code == grpc.StatusCode.UNAUTHENTICATED and "invalid auth token" in low:
        return "auth"
    return "fatal"


def _fatal(exc: grpc.RpcError, what: str) -> StoreError:
    code, details = _code(exc), _details(exc)
    if code == grpc.StatusCode.CANCELLED:
        return StoreUnavailable(f"{what}: cancelled (store closed?)")
    return StoreError(f"{what}: etcd answered {code.name if code else '?'}: {details}")


@dataclass
class _Endpoint:
    target: str
    channel: grpc.Channel
    kv: Any
    lease: Any
    watch: Any
    maintenance: Any
    auth: Any
    state: grpc.ChannelConnectivity = grpc.ChannelConnectivity.IDLE

    def on_state(self, state: grpc.ChannelConnectivity) -> None:
        self.state = state

    @property
    def ready(self) -> bool:
        return self.state == grpc.ChannelConnectivity.READY


# ---- the store -------------------------------------------------------------------------------------


class EtcdStore:
    """Store protocol over etcd v3. Thread safe; one gRPC channel per endpoint, opened lazily."""

    def __init__(
        self,
        url: str,
        *,
        cafile: str | None = None,
        certfile: str | None = None,
        keyfile: str | None = None,
        username: str | None = None,
        password: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        self.url = url
        targets, tls = parse_endpoints(url)
        if bool(certfile) != bool(keyfile):
            field_ = "keyfile" if certfile else "certfile"
            raise EtcdConfigError(f"etcd.{field_}", None, "missing (certfile and keyfile go together)")
        if bool(username) != bool(password):
            field_ = "password" if username else "username"
            raise EtcdConfigError(f"etcd.{field_}", None, "missing (username and password go together)")
        if timeout <= 0:
            raise EtcdConfigError("etcd.timeout", timeout, "must be > 0 seconds")
        ca, cert, key = _read_pem("cafile", cafile), _read_pem("certfile", certfile), _read_pem("keyfile", keyfile)
        self.tls = tls or bool(ca or cert)
        self._creds = (
            grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)
            if self.tls
            else None
        )
        self._username = username
        self._password = password
        self.timeout = float(timeout)
        self._targets = targets
        self._endpoints: list[_Endpoint | None] = [None] * len(targets)
        self._current = 0
        self._lock = threading.Lock()
        self._token: str | None = None
        self._closed = False
        self._watches: set[EtcdWatch] = set()
        self._buckets_ready = False

    # ---- connections --------------------------------------------------------------------------

    def _endpoint(self, i: int) -> _Endpoint:
        with self._lock:
            if self._closed:
                raise StoreUnavailable(f"{self.url}: store closed")
            ep = self._endpoints[i]
            if ep is None:
                target = self._targets[i]
                if self._creds is not None:
                    ch = grpc.secure_channel(target, self._creds, options=_CHANNEL_OPTIONS)
                else:
                    ch = grpc.insecure_channel(target, options=_CHANNEL_OPTIONS)
                ep = _Endpoint(
                    target, ch, rpc.KVStub(ch), rpc.LeaseStub(ch), rpc.WatchStub(ch), rpc.MaintenanceStub(ch),
                    rpc.AuthStub(ch),
                )
                ch.subscribe(ep.on_state, try_to_connect=False)
                self._endpoints[i] = ep
            return ep

    def metadata(self) -> list[tuple[str, str]]:
        md = [_METADATA_LEADER]
        if self._token:
            md.append(("token", self._token))
        return md

    def _authenticate(self, ep: _Endpoint, timeout: float) -> None:
        resp = ep.auth.Authenticate(
            rpc.AuthenticateRequest(name=self._username, password=self._password), timeout=timeout
        )
        self._token = resp.token

    def _call(self, what: str, fn: Callable[[_Endpoint, float], T], *, mutating: bool) -> tuple[T, bool]:
        """Run fn(endpoint, attempt_timeout) on the current member, failing over to the others.

        Returns (result, ambiguous): ambiguous is True if an earlier attempt of this write may have
        been applied. Raises StoreUnavailable as soon as every member in turn was unreachable (refused,
        or silent for CONNECT_TIMEOUT), else when the budget runs out (members up but no quorum).
        """
        n = len(self._targets)
        deadline = time.monotonic() + self.timeout
        ambiguous = False
        refused_in_a_row = 0
        tried_in_round = 0
        reauthed = False
        last = "no attempt"
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            i = self._current
            ep = self._endpoint(i)
            was_ready = ep.ready
            attempt = min(remaining, ATTEMPT_TIMEOUT if was_ready else CONNECT_TIMEOUT)
            try:
                if self._username and self._token is None:
                    self._authenticate(ep, attempt)
                return fn(ep, attempt), ambiguous
            except grpc.RpcError as exc:
                kind = _classify(exc)
                if kind == "unknown" and _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED and not (was_ready or ep.ready):
                    kind = "unreachable"  # never connected (a silent host): the request did not leave
                last = f"{ep.target}: {_details(exc) or _code(exc)}"
                if kind == "fatal":
                    if _code(exc) == grpc.StatusCode.INVALID_ARGUMENT and "authentication failed" in last:
                        raise EtcdConfigError("etcd.username", self._username, f"rejected by etcd ({last})") from exc
                    raise _FatalRpc(exc) from exc
                if kind == "auth" and not reauthed:
                    self._token = None
                    reauthed = True
                    continue
                if kind == "unknown" and mutating:
                    ambiguous = True
                refused_in_a_row = refused_in_a_row + 1 if kind == "unreachable" else 0
                log.debug("%s on %s failed (%s): %s", what, ep.target, kind, last)
                if refused_in_a_row >= n:
                    break  # nobody listens: say so now, not after the budget
                with self._lock:
                    if self._current == i:
                        self._current = (i + 1) % n
                tried_in_round += 1
                if tried_in_round >= n:
                    tried_in_round = 0
                    time.sleep(min(RETRY_PAUSE, max(0.0, deadline - time.monotonic())))
        raise StoreUnavailable(f"{self.url}: {what}: no etcd member answered (last: {last})")

    def _run(self, what: str, fn: Callable[[_Endpoint, float], T], *, mutating: bool = False) -> tuple[T, bool]:
        try:
            return self._call(what, fn, mutating=mutating)
        except _FatalRpc as f:
            raise _fatal(f.exc, what) from f.exc

    # ---- reads --------------------------------------------------------------------------------

    def get(self, key: str) -> KeyValue | None:
        req = rpc.RangeRequest(key=key.encode())
        resp, _ = self._run(f"get {key}", lambda ep, t: ep.kv.Range(req, timeout=t, metadata=self.metadata()))
        return _kv(resp.kvs[0]) if resp.kvs else None

    def list(self, prefix: str) -> ListResult:
        """All keys under prefix, in pages of LIST_PAGE, every page read at the first page's revision."""
        for _ in range(3):
            try:
                return self._list_once(prefix)
            except StoreError as exc:
                if "has been compacted" not in str(exc):
                    raise
                log.info("list %s: its revision was compacted between pages; listing again", prefix)
        return self._list_once(prefix)

    def _list_once(self, prefix: str) -> ListResult:
        start = prefix.encode() or b"\0"
        end = _prefix_end(prefix.encode())
        items: list[KeyValue] = []
        revision = 0
        while True:
            req = rpc.RangeRequest(key=start, range_end=end, limit=LIST_PAGE, revision=revision)

            def page(ep: _Endpoint, t: float, r: Any = req) -> Any:  # r: this page's request, bound now
                return ep.kv.Range(r, timeout=t, metadata=self.metadata())

            resp, _ = self._run(f"list {prefix}", page)
            if revision == 0:
                revision = resp.header.revision
            items.extend(_kv(kv) for kv in resp.kvs)
            if not resp.more or not resp.kvs:
                return ListResult(items=items, revision=revision)
            start = resp.kvs[-1].key + b"\0"

    def revision(self) -> int:
        req = rpc.RangeRequest(key=b"\0", limit=1, count_only=True)
        resp, _ = self._run("revision", lambda ep, t: ep.kv.Range(req, timeout=t, metadata=self.metadata()))
        return int(resp.header.revision)

    # ---- writes -------------------------------------------------------------------------------

    def put(
        self, key: str, value: bytes, *, if_absent: bool = False, if_revision: int | None = None, lease: int = 0
    ) -> int:
        if not if_absent and if_revision is None and not indexed(key):
            _check_value(key, value)
            req = rpc.PutRequest(key=key.encode(), value=bytes(value), lease=lease)
            try:
                resp, _ = self._run(
                    f"put {key}", lambda ep, t: ep.kv.Put(req, timeout=t, metadata=self.metadata()), mutating=True
                )
            except StoreError as exc:
                if lease and "lease not found" in str(exc):
                    raise LeaseNotFound(lease) from exc
                raise
            return int(resp.header.revision)
        return self.commit([Put(key, value, if_absent=if_absent, if_revision=if_revision, lease=lease)])

    def delete(self, key: str, *, if_revision: int | None = None) -> bool:
        if if_revision is None and not indexed(key):
            req = rpc.DeleteRangeRequest(key=key.encode())
            resp, _ = self._run(
                f"delete {key}", lambda ep, t: ep.kv.DeleteRange(req, timeout=t, metadata=self.metadata()),
                mutating=True,
            )
            return bool(resp.deleted)
        result = self._txn([Delete(key, if_revision=if_revision)])
        return bool(result.responses[0].response_delete_range.deleted)

    def commit(self, ops: builtins.list[Op]) -> int:
        if not ops:
            return self.revision()
        return int(self._txn(ops).header.revision)

    def _txn(self, ops: builtins.list[Op]) -> Any:
        keys = [op.key for op in ops]
        if len(set(keys)) != len(keys):
            raise ValueError(f"commit: a key appears twice in one commit: {keys}")
        compares: list[Any] = []
        success: list[Any] = []
        failure: list[Any] = []
        buckets: list[Any] = []  # the puts' bucket members (etcd_buckets.py), in the same Txn when they fit
        for op in ops:
            k = op.key.encode()
            if isinstance(op, Put):
                _check_value(op.key, op.value)
                if op.if_absent:
                    compares.append(rpc.Compare(key=k, target=rpc.Compare.VERSION, result=rpc.Compare.EQUAL, version=0))
                success.append(rpc.RequestOp(request_put=rpc.PutRequest(
                    key=k, value=bytes(op.value), lease=op.lease, prev_kv=indexed(op.key))))
                buckets.extend(etcd_buckets.member_puts(op.key, bytes(op.value), op.lease))
            else:
                if op.must_exist:
                    compares.append(
                        rpc.Compare(key=k, target=rpc.Compare.VERSION, result=rpc.Compare.GREATER, version=0)
                    )
                success.append(rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(
                    key=k, prev_kv=indexed(op.key))))
            if op.if_revision is not None:
                compares.append(
                    rpc.Compare(key=k, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=op.if_revision)
                )
            failure.append(rpc.RequestOp(request_range=rpc.RangeRequest(key=k)))
        if len(success) + len(buckets) > etcd_buckets.MAX_TXN_OPS:
            etcd_buckets.write_ahead(self, buckets)
            buckets = []
        req = rpc.TxnRequest(compare=compares, success=success + buckets, failure=failure)
        what = f"commit {', '.join(keys)}" if len(keys) > 1 else f"write {keys[0]}"
        try:
            resp, ambiguous = self._run(
                what, lambda ep, t: ep.kv.Txn(req, timeout=t, metadata=self.metadata()), mutating=True
            )
        except StoreError as exc:
            if "lease not found" in str(exc):
                lease = next((op.lease for op in ops if isinstance(op, Put) and op.lease), 0)
                raise LeaseNotFound(lease) from exc
            raise
        if resp.succeeded:
            self._prune_buckets(ops, resp)
            return resp
        current = {
            op.key: (r.response_range.kvs[0] if r.response_range.kvs else None)
            for op, r in zip(ops, resp.responses, strict=True)
        }
        if ambiguous and _state_matches(ops, current):
            # our earlier attempt went through before its answer was lost; report what it wrote
            log.info("%s: earlier attempt was applied (answer lost in failover)", what)
            return _synthetic_success(ops, current, resp.header.revision)
        raise _conflict(ops, current)

    def _prune_buckets(self, ops: builtins.list[Op], resp: Any) -> None:
        """Remove the buckets the written objects left (their prev_kv's, not the new value's)."""
        rev = int(resp.header.revision)
        for op, r in zip(ops, resp.responses, strict=False):  # the bucket puts come after the ops
            if not indexed(op.key):
                continue
            if isinstance(op, Put):
                prev = r.response_put.prev_kv if r.response_put.HasField("prev_kv") else None
                gone, mod = etcd_buckets.left(op.key, prev, bytes(op.value)), rev
            else:
                prevs = r.response_delete_range.prev_kvs
                gone, mod = etcd_buckets.left(op.key, prevs[0] if prevs else None, None), 0
            if gone:
                try:
                    etcd_buckets.prune(self, op.key, gone, mod)
                except StoreError as exc:  # the write stands; stale members are filtered on read
                    log.warning("buckets of %s not pruned: %s", op.key, exc)

    max_commit_ops = etcd_buckets.MAX_TXN_OPS  # what one Txn holds: the planner commits more in parts

    # ---- buckets (store/buckets.py; controllers/writeindex.StoreIndex reads them) -------------------

    @property
    def keeps_buckets(self) -> bool:
        """Whether the buckets are complete (filled in once for data written before they existed)."""
        if not self._buckets_ready:
            self._buckets_ready = etcd_buckets.ready(self)
        return self._buckets_ready

    def bucket_members(self, buckets: builtins.list[Bucket]) -> builtins.list[KeyValue]:
        """The objects in any of these buckets, each once, in key order, at one revision."""
        return etcd_buckets.members(self, buckets)

    def bucket_sizes(self, buckets: builtins.list[Bucket]) -> dict[Bucket, int]:
        """How many members each of these buckets has (absent: none)."""
        return etcd_buckets.sizes(self, buckets)

    # ---- leases -------------------------------------------------------------------------------

    def grant(self, ttl: float) -> int:
        """etcd counts whole seconds (we round up) and raises TTLs below its minimum (1.5 x the election
        timeout, 1.5 s by default) to that minimum; keepalive() reports the TTL etcd actually uses."""
        if ttl <= 0:
            raise ValueError(f"lease ttl must be > 0, got {ttl}")
        req = rpc.LeaseGrantRequest(TTL=max(1, math.ceil(ttl)), ID=0)
        resp, _ = self._run(
            "grant lease", lambda ep, t: ep.lease.LeaseGrant(req, timeout=t, metadata=self.metadata()), mutating=True
        )
        if resp.error:
            raise StoreError(f"grant lease: etcd: {resp.error}")
        return int(resp.ID)

    def keepalive(self, lease_id: int) -> float:
        req = rpc.LeaseKeepAliveRequest(ID=lease_id)

        def once(ep: _Endpoint, t: float) -> Any:
            # one request on a fresh stream: etcd answers it before it reads the end of our stream
            stream = ep.lease.LeaseKeepAlive(iter([req]), timeout=t, metadata=self.metadata())
            try:
                for resp in stream:
                    return resp
                return None
            finally:
                stream.cancel()

        resp, _ = self._run(f"keepalive lease {lease_id:x}", once)
        if resp is None or resp.TTL <= 0:
            raise LeaseNotFound(lease_id)
        return float(resp.TTL)

    def revoke(self, lease_id: int) -> None:
        req = rpc.LeaseRevokeRequest(ID=lease_id)
        try:
            self._run(
                f"revoke lease {lease_id:x}",
                lambda ep, t: ep.lease.LeaseRevoke(req, timeout=t, metadata=self.metadata()),
                mutating=True,
            )
        except StoreError as exc:
            if "lease not found" not in str(exc):
                raise

    def lease_ttl(self, lease_id: int) -> float:
        """Seconds left on a lease (LeaseNotFound if gone). Not in the protocol; for tests and tools."""
        req = rpc.LeaseTimeToLiveRequest(ID=lease_id)
        resp, _ = self._run(
            f"lease ttl {lease_id:x}", lambda ep, t: ep.lease.LeaseTimeToLive(req, timeout=t, metadata=self.metadata())
        )
        if resp.TTL < 0:
            raise LeaseNotFound(lease_id)
        return float(resp.TTL)

    # ---- history ------------------------------------------------------------------------------

    def compact(self, revision: int) -> None:
        req = rpc.CompactionRequest(revision=revision, physical=True)
        try:
            self._run(
                f"compact {revision}",
                lambda ep, t: ep.kv.Compact(req, timeout=t, metadata=self.metadata()),
                mutating=True,
            )
        except StoreError as exc:
            msg = str(exc)
            if "future revision" in msg:
                raise ValueError(f"compact: revision {revision} is in the future") from exc
            if "has been compacted" in msg:
                return  # already compacted at or past it: nothing to do, as on sqlite
            raise

    def watch(self, prefix: str, from_revision: int) -> EtcdWatch:
        w = EtcdWatch(self, prefix, from_revision)
        with self._lock:
            self._watches.add(w)
        return w

    def _forget(self, w: EtcdWatch) -> None:
        with self._lock:
            self._watches.discard(w)

    def close(self) -> None:
        with self._lock:
            if self._closed:
                return
            self._closed = True
            watches = list(self._watches)
            endpoints = [e for e in self._endpoints if e is not None]
            self._endpoints = [None] * len(self._targets)
        for w in watches:
            w.close()
        for ep in endpoints:
            ep.channel.close()

    def __enter__(self) -> EtcdStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"EtcdStore({self.url!r})"


class _SyntheticRpcError(grpc.RpcError):
    """A failure we detect ourselves, shaped like grpc's so _call classifies it the same way."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        super().__init__(details)
        self._c, self._d = code, details

    def code(self) -> grpc.StatusCode:
        return self._c

    def details(self) -> str:
        return self._d


class _FatalRpc(Exception):
    def __init__(self, exc: grpc.RpcError) -> None:
        super().__init__(str(exc))
        self.exc = exc


# ---- conversions -------------------------------------------------------------------------------


def _kv(kv: Any) -> KeyValue:
    return KeyValue(
        key=kv.key.decode(),
        value=bytes(kv.value),
        create_revision=int(kv.create_revision),
        mod_revision=int(kv.mod_revision),
        lease=int(kv.lease),
    )


def _check_value(key: str, value: object) -> None:
    check_put(key, value)


def _conflict(ops: list[Op], current: dict[str, Any]) -> ConflictError:
    """Which condition failed, worded as the sqlite backend words it."""
    for op in ops:
        cur = current[op.key]
        mod = int(cur.mod_revision) if cur is not None else 0
        if isinstance(op, Put) and op.if_absent and cur is not None:
            return ConflictError(op.key, f"already exists (mod_revision {mod})")
        if isinstance(op, Delete) and op.must_exist and cur is None:
            return ConflictError(op.key, "does not exist")
        if op.if_revision is not None and mod != op.if_revision:
            return ConflictError(op.key, f"mod_revision is {mod}, expected {op.if_revision}")
    # the state changed again between the compare and the read of the failure branch: cannot happen
    # inside one Txn, but never claim success on a failed compare
    return ConflictError(ops[0].key, "condition failed")


def _state_matches(ops: list[Op], current: dict[str, Any]) -> bool:
    for op in ops:
        cur = current[op.key]
        if isinstance(op, Put):
            if cur is None or bytes(cur.value) != bytes(op.value) or int(cur.lease) != op.lease:
                return False
        elif cur is not None:
            return False
    return True


def _synthetic_success(ops: list[Op], current: dict[str, Any], header_rev: int) -> Any:
    mods = [int(current[op.key].mod_revision) for op in ops if isinstance(op, Put)]
    resp = rpc.TxnResponse(succeeded=True)
    resp.header.revision = max(mods) if mods else header_rev
    for op in ops:
        if isinstance(op, Put):
            resp.responses.append(rpc.ResponseOp(response_put=rpc.PutResponse()))
        else:
            resp.responses.append(rpc.ResponseOp(response_delete_range=rpc.DeleteRangeResponse(deleted=1)))
    return resp


def _event(ev: Any) -> Event:
    kv = ev.kv
    if ev.type == rpc.Event.PUT:
        return Event(
            type="put",
            key=kv.key.decode(),
            value=bytes(kv.value),
            revision=int(kv.mod_revision),
            prev_value=bytes(ev.prev_kv.value) if ev.HasField("prev_kv") else None,
        )
    return Event(
        type="delete",
        key=kv.key.decode(),
        value=None,
        revision=int(kv.mod_revision),
        prev_value=bytes(ev.prev_kv.value) if ev.HasField("prev_kv") else None,
    )


# ---- watch --------------------------------------------------------------------------------------


def _requests(create: Any, stop: threading.Event) -> Iterator[Any]:
    yield rpc.WatchRequest(create_request=create)
    # keep our half of the stream open: etcd ends a watch stream when the client half-closes
    stop.wait()


@dataclass
class _Stream:
    call: Any
    stop: threading.Event

    def cancel(self) -> None:
        self.stop.set()
        self.call.cancel()


class EtcdWatch:
    """One etcd watch, re-created on another member from the next undelivered revision when its stream
    breaks. Iterate from one thread; close() from any thread ends the iteration."""

    def __init__(self, store: EtcdStore, prefix: str, from_revision: int) -> None:
        self._store = store
        self.prefix = prefix
        self._key = prefix.encode() or b"\0"
        self._end = _prefix_end(prefix.encode())
        self._closed = threading.Event()
        self._call: _Stream | None = None
        self._lock = threading.Lock()
        if from_revision <= 0:  # etcd: 0 means "from now on"; pin it so a resume knows where it was
            from_revision = store.revision() + 1
        self.next_revision = from_revision
        self.done_through = from_revision - 1  # every event at or below it has been yielded (base.Watch)
        self._check_compacted()
        self._open()

    def _check_compacted(self) -> None:
        """Raise CompactedError now, not at the first next(): a Range at the start revision tells.

        Serializable: any member answers from its own state, also mid-election (a member that has not
        applied a compaction yet lets the watch itself report it).
        """
        req = rpc.RangeRequest(
            key=self._key, range_end=self._end, count_only=True, revision=self.next_revision, serializable=True
        )
        try:
            self._store._run(
                f"watch {self.prefix}", lambda ep, t: ep.kv.Range(req, timeout=t, metadata=self._store.metadata())
            )
        except StoreUnavailable:
            raise
        except StoreError as exc:
            msg = str(exc)
            if "future revision" in msg:
                return
            if "has been compacted" in msg:
                raise CompactedError(self.next_revision, self._compact_revision()) from exc
            raise

    def _compact_revision(self) -> int:
        """etcd reports the compaction point only to a watch: open one at this revision and read it."""
        try:
            stream = self._start_stream(self._store._endpoint(self._store._current), ATTEMPT_TIMEOUT)
        except (grpc.RpcError, StoreError):
            return 0
        timer = threading.Timer(ATTEMPT_TIMEOUT, stream.cancel)
        timer.start()
        try:
            for resp in stream.call:
                if resp.compact_revision:
                    return int(resp.compact_revision)
                if resp.events:
                    return 0
        except grpc.RpcError:
            pass
        finally:
            timer.cancel()
            stream.cancel()
        return 0

    def _start_stream(self, ep: _Endpoint, timeout: float) -> _Stream:
        """Open a Watch stream on ep from next_revision and wait (at most timeout) until etcd created it."""
        create = rpc.WatchCreateRequest(
            key=self._key, range_end=self._end, start_revision=self.next_revision, prev_kv=True
        )
        stop = threading.Event()
        call = ep.watch.Watch(_requests(create, stop), metadata=self._store.metadata())
        stream = _Stream(call, stop)
        timer = threading.Timer(timeout, stream.cancel)
        timer.start()
        try:
            first = next(call)
        except StopIteration as exc:
            stream.cancel()
            raise _SyntheticRpcError(grpc.StatusCode.UNAVAILABLE, "closed the watch stream") from exc
        except grpc.RpcError as exc:
            stream.cancel()
            if _code(exc) == grpc.StatusCode.CANCELLED and not self._closed.is_set():
                raise _SyntheticRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "watch not created in time") from exc
            raise
        finally:
            timer.cancel()
        if not first.created:
            stream.cancel()
            raise StoreError(f"watch {self.prefix}: {ep.target}: unexpected first response {first}")
        if first.canceled:
            stream.cancel()
            # e.g. "etcdserver: no leader": classified like the same error on a unary call
            reason = first.cancel_reason or "watch refused"
            code = grpc.StatusCode.UNAVAILABLE
            if "permission denied" in reason:
                code = grpc.StatusCode.PERMISSION_DENIED
            elif "invalid auth token" in reason:
                code = grpc.StatusCode.UNAUTHENTICATED  # log in again, as for unary calls
            raise _SyntheticRpcError(code, reason)
        return stream

    def _open(self) -> None:
        def start(ep: _Endpoint, t: float) -> _Stream:
            return self._start_stream(ep, t)

        call, _ = self._store._run(f"watch {self.prefix}", start)
        with self._lock:
            if self._closed.is_set():
                call.cancel()
                return
            self._call = call

    def __iter__(self) -> Iterator[Event]:
        try:
            while not self._closed.is_set():
                if self._call is None:
                    self._check_compacted()  # a lost stream may resume into a compacted past
                    self._open()
                    continue
                try:
                    for resp in self._call.call:
                        if resp.compact_revision:
                            raise CompactedError(self.next_revision, int(resp.compact_revision))
                        if resp.canceled:
                            log.info("watch %s cancelled by etcd (%s); resuming", self.prefix, resp.cancel_reason)
                            break
                        for i, ev in enumerate(resp.events):
                            if self._closed.is_set():
                                return
                            e = _event(ev)
                            self.next_revision = e.revision + 1
                            # etcd never splits one revision's events over two responses
                            self.done_through = e.revision if i == len(resp.events) - 1 else e.revision - 1
                            yield e
                except grpc.RpcError as exc:
                    if self._closed.is_set():
                        return
                    kind = _classify(exc)
                    if kind == "fatal" and _code(exc) != grpc.StatusCode.CANCELLED:
                        raise _fatal(exc, f"watch {self.prefix}") from exc
                    log.info("watch %s lost (%s); resuming from %d", self.prefix, _details(exc), self.next_revision)
                with self._lock:
                    old, self._call = self._call, None
                if old is not None:
                    old.cancel()
        finally:
            self.close()

    def close(self) -> None:
        self._closed.set()
        with self._lock:
            call, self._call = self._call, None
        if call is not None:
            call.cancel()
        self._store._forget(self)

    def __enter__(self) -> EtcdWatch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
