"""Kubernetes' protobuf request bodies, decoded into the JSON object the client meant.

client-go's typed clients (`kubectl create configmap`, `kubectl run`, `kubectl create deployment`, a
controller's UpdateStatus) send `application/vnd.kubernetes.protobuf` and do not fall back to JSON when the
server answers 415, so a server that speaks only JSON cannot serve them. The encoding is the 4-byte magic
`k8s\\0`, then a runtime.Unknown message (typeMeta, raw object bytes). The object's messages are decoded by the
field table in pbschema (generated from k8s.io/api), and a few well-known messages become their JSON forms
(Time as RFC 3339, Quantity and IntOrString as scalars, RawExtension and FieldsV1 as embedded JSON).

The result then takes the same road as a JSON body: one decoding path per kind. Only requests are decoded;
answers stay JSON, which every client also accepts.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import struct
from typing import Any

from podnet.errors import PodnetError

from .pbschema import SCHEMA

MAGIC = b"k8s\x00"
MAX_DEPTH = 64  # PodSpec nests about 12 deep; this bounds a hostile body's recursion
_GO_ZERO_SECONDS = -62135596800  # Go's zero time.Time (year 1), what a zero metav1.Time encodes as
_GROUPS = {"v1": "core.v1", "apps/v1": "apps.v1", "discovery.k8s.io/v1": "discovery.v1"}
_META_KINDS = {"DeleteOptions": "apis.meta.v1.DeleteOptions"}


class ProtobufError(PodnetError):
    """A protobuf body that is malformed or holds a message this server does not know."""


def message_name(api_version: str, kind: str) -> str:
    """The schema name of a top-level kind, e.g. ("apps/v1", "Deployment") -> "apps.v1.Deployment"."""
    if kind in _META_KINDS:
        return _META_KINDS[kind]
    name = f"{_GROUPS.get(api_version, '?')}.{kind}"
    if name not in SCHEMA:
        raise ProtobufError(f"protobuf bodies of {kind!r} ({api_version or 'no apiVersion'}) are not decoded "
                            "here; send application/json")
    return name


def decode_body(raw: bytes) -> dict[str, Any]:
    """A whole request body: magic, runtime.Unknown envelope, then the object."""
    if not raw.startswith(MAGIC):
        raise ProtobufError("the protobuf body does not start with the Kubernetes magic 'k8s\\x00'")
    env = _fields(raw[len(MAGIC):], "body")
    type_meta = _fields(_one(env, 1, b"", "typeMeta"), "typeMeta")
    api_version = _string(_one(type_meta, 1, b"", "typeMeta.apiVersion"), "typeMeta.apiVersion")
    kind = _string(_one(type_meta, 2, b"", "typeMeta.kind"), "typeMeta.kind")
    encoding = _string(_one(env, 3, b"", "contentEncoding"), "contentEncoding")
    if encoding:
        raise ProtobufError(f"contentEncoding: {encoding!r}: compressed protobuf bodies are not supported")
    obj = decode_message(_one(env, 2, b"", "raw"), message_name(api_version, kind))
    head: dict[str, Any] = {}
    if api_version:
        head["apiVersion"] = api_version
    if kind:
        head["kind"] = kind
    return {**head, **obj}


def decode_message(data: bytes, name: str, path: str = "", depth: int = 0) -> dict[str, Any]:
    if depth > MAX_DEPTH:
        raise ProtobufError(f"{path or name}: messages nested deeper than {MAX_DEPTH}")
    table = SCHEMA[name]
    out: dict[str, Any] = {}
    for num, values in _fields(data, path or name).items():
        spec = table.get(num)
        if spec is None:
            raise ProtobufError(f"{path or name}: field number {num} of {name} is not known to this server")
        field, typ, repeated, omit_zero = spec
        where = f"{path}.{field}" if path else field
        if typ.startswith("map:"):
            ktype, vtype = typ[4:].split(",")
            m: dict[str, Any] = {}
            for entry in values:
                e = _fields(_bytes(entry, where), where)
                key = _value(_one(e, 1, _zero(ktype), where), ktype, where, depth)
                m[str(key)] = _value(_one(e, 2, _zero(vtype), f"{where}[{key}]"), vtype, f"{where}[{key}]", depth)
            if m or not omit_zero:
                out[field] = m
            continue
        if typ in SCALARS_WIRE:
            decoded = [x for v in values for x in _scalars(v, typ, where)]
        else:
            decoded = [_value(v, typ, where, depth) for v in values]
        if repeated:
            out[field] = decoded
            continue
        value = decoded[-1]  # protobuf: the last occurrence of a singular field wins
        if value is None or omit_zero and typ in SCALARS_WIRE and value in ("", 0, False):
            continue
        out[field] = value
    return out


# wire type each scalar is written with (repeated numeric scalars may also come packed, as wire type 2)
SCALARS_WIRE = {"string": 2, "bytes": 2, "bool": 0, "int32": 0, "int64": 0, "uint32": 0, "uint64": 0,
                "double": 1, "fixed64": 1, "float": 5}


def _zero(typ: str) -> Any:
    return {"string": b"", "bytes": b""}.get(typ, 0 if typ in SCALARS_WIRE else b"")


def _value(v: Any, typ: str, where: str, depth: int) -> Any:
    if typ in SPECIAL:
        return SPECIAL[typ](_fields(_bytes(v, where), where), where)
    if typ in SCALARS_WIRE:
        (x,) = _scalars(v, typ, where)
        return x
    return decode_message(_bytes(v, where), typ, where, depth + 1)


def _scalars(v: Any, typ: str, where: str) -> list[Any]:
    want = SCALARS_WIRE[typ]
    if isinstance(v, bytes) and want != 2:  # packed repeated numbers
        return list(_unpack(v, typ, where))
    if typ == "string":
        return [_string(_bytes(v, where), where)]
    if typ == "bytes":
        return [base64.b64encode(_bytes(v, where)).decode()]
    if want == 0:
        if not isinstance(v, int):
            raise ProtobufError(f"{where}: expected a varint for {typ}")
        return [_int(v, typ)]
    if want == 1:
        if not isinstance(v, _Fixed64):
            raise ProtobufError(f"{where}: expected a 64-bit value for {typ}")
        return [struct.unpack("<d", v.raw)[0]]
    if not isinstance(v, _Fixed32):
        raise ProtobufError(f"{where}: expected a 32-bit value for {typ}")
    return [struct.unpack("<f", v.raw)[0]]


def _unpack(data: bytes, typ: str, where: str) -> list[Any]:
    out: list[Any] = []
    pos = 0
    wire = SCALARS_WIRE[typ]
    while pos < len(data):
        if wire == 0:
            x, pos = _varint(data, pos, where)
            out.append(_int(x, typ))
        else:
            size = 8 if wire == 1 else 4
            if pos + size > len(data):
                raise ProtobufError(f"{where}: packed values cut short")
            out.append(struct.unpack("<d" if size == 8 else "<f", data[pos:pos + size])[0])
            pos += size
    return out


def _int(x: int, typ: str) -> Any:
    if typ == "bool":
        return x != 0
    if typ in ("int32", "int64") and x >= 1 << 63:
        x -= 1 << 64  # negative numbers are ten-byte two's complement varints
    if typ == "int32":
        x = (x + (1 << 31)) % (1 << 32) - (1 << 31)
    elif typ == "uint32":
        x &= 0xFFFFFFFF
    return x


class _Fixed64:
    __slots__ = ("raw",)

    def __init__(self, raw: bytes) -> None:
        self.raw = raw


class _Fixed32(_Fixed64):
    __slots__ = ()


def _varint(data: bytes, pos: int, where: str) -> tuple[int, int]:
    x = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError(f"{where}: a varint is cut short")
        b = data[pos]
        pos += 1
        x |= (b & 0x7F) << shift
        if not b & 0x80:
            return x, pos
        shift += 7
        if shift >= 70:
            raise ProtobufError(f"{where}: a varint is longer than ten bytes")


def _fields(data: bytes, where: str) -> dict[int, list[Any]]:
    """One message's fields by number, each with its occurrences in order (raw: int, bytes or fixed)."""
    out: dict[int, list[Any]] = {}
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos, where)
        num, wire = key >> 3, key & 7
        if num == 0:
            raise ProtobufError(f"{where}: field number 0")
        value: Any
        if wire == 0:
            value, pos = _varint(data, pos, where)
        elif wire == 2:
            size, pos = _varint(data, pos, where)
            if pos + size > len(data):
                raise ProtobufError(f"{where}: field {num} runs past the end of its message")
            value, pos = data[pos:pos + size], pos + size
        elif wire in (1, 5):
            size = 8 if wire == 1 else 4
            if pos + size > len(data):
                raise ProtobufError(f"{where}: field {num} runs past the end of its message")
            value = (_Fixed64 if wire == 1 else _Fixed32)(data[pos:pos + size])
            pos += size
        else:
            raise ProtobufError(f"{where}: field {num} has wire type {wire}, which Kubernetes never writes")
        out.setdefault(num, []).append(value)
    return out


def _one(fields: dict[int, list[Any]], num: int, default: Any, where: str) -> Any:
    values = fields.get(num)
    if not values:
        return default
    return values[-1]


def _bytes(v: Any, where: str) -> bytes:
    if not isinstance(v, bytes):
        raise ProtobufError(f"{where}: expected a length-delimited field")
    return v


def _string(b: bytes, where: str) -> str:
    try:
        return _bytes(b, where).decode()
    except UnicodeDecodeError:
        raise ProtobufError(f"{where}: not valid UTF-8") from None


def _timestamp(f: dict[int, list[Any]], where: str, micro: bool) -> str | None:
    seconds = _int(_one(f, 1, 0, where), "int64")
    nanos = _int(_one(f, 2, 0, where), "int32")
    if not f or seconds == _GO_ZERO_SECONDS and nanos == 0:
        return None  # a zero time, which JSON writes as null
    try:
        t = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds, microseconds=nanos // 1000)
    except OverflowError:
        raise ProtobufError(f"{where}: time {seconds}s is out of range") from None
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ" if micro else "%Y-%m-%dT%H:%M:%SZ")


def _duration(f: dict[int, list[Any]], where: str) -> str:
    """metav1.Duration as Go's time.Duration.String() writes it: 1h2m3.5s, 150ms, 0s."""
    ns = _int(_one(f, 1, 0, where), "int64")
    sign, ns = ("-", -ns) if ns < 0 else ("", ns)
    if ns < 1_000_000_000:
        for unit, size in (("ms", 1_000_000), ("µs", 1_000), ("ns", 1)):
            if ns >= size or unit == "ns":
                return sign + (_trim(ns / size) if ns else "0") + (unit if ns else "s")
    h, rest = divmod(ns, 3_600_000_000_000)
    m, rest = divmod(rest, 60_000_000_000)
    s = _trim(rest / 1e9) + "s"
    return sign + (f"{h}h{m}m{s}" if h else f"{m}m{s}" if m else s)


def _trim(x: float) -> str:
    return f"{x:.9f}".rstrip("0").rstrip(".")


def _embedded_json(f: dict[int, list[Any]], where: str) -> Any:
    raw = _bytes(_one(f, 1, b"", where), where)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        raise ProtobufError(f"{where}: embedded object is not JSON") from None


def _int_or_string(f: dict[int, list[Any]], where: str) -> int | str:
    if _int(_one(f, 1, 0, where), "int64") == 1:
        return _string(_one(f, 3, b"", where), where)
    return int(_int(_one(f, 2, 0, where), "int32"))


SPECIAL = {
    "apis.meta.v1.Time": lambda f, w: _timestamp(f, w, micro=False),
    "apis.meta.v1.MicroTime": lambda f, w: _timestamp(f, w, micro=True),
    "apis.meta.v1.Duration": _duration,
    "api.resource.Quantity": lambda f, w: _string(_one(f, 1, b"", w), w),
    "util.intstr.IntOrString": _int_or_string,
    "runtime.RawExtension": _embedded_json,
    "apis.meta.v1.FieldsV1": _embedded_json,
}
