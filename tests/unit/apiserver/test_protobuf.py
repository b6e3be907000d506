"""The protobuf body decoder: wire format edge cases, well-known types, and hostile input."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.apiserver import protobuf
from podnet.apiserver.pbschema import ROOTS, SCHEMA
from podnet.apiserver.protobuf import ProtobufError, decode_body, decode_message


# a minimal encoder, written from the protobuf wire format specification, to build inputs
def varint(n: int) -> bytes:
    n &= (1 << 64) - 1
    out = bytearray()
    while True:
        b, n = n & 0x7F, n >> 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num: int, value: int | bytes | str) -> bytes:
    if isinstance(value, int):
        return varint(num << 3) + varint(value)
    data = value.encode() if isinstance(value, str) else value
    return varint(num << 3 | 2) + varint(len(data)) + data


def envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    return protobuf.MAGIC + field(1, field(1, api_version) + field(2, kind)) + field(2, raw)


def entry(k: str, v: str | bytes) -> bytes:
    return field(1, k) + field(2, v)


def test_configmap_with_maps_and_empty_values() -> None:
    raw = field(1, field(1, "cm") + field(3, "default") + field(11, entry("app", "x"))) + field(2, entry("a", "")) \
        + field(2, entry("b", "2")) + field(3, entry("bin", b"\x00\xff"))
    assert decode_body(envelope("v1", "ConfigMap", raw)) == {
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": "cm", "namespace": "default", "labels": {"app": "x"}},
        "data": {"a": "", "b": "2"}, "binaryData": {"bin": "AP8="}}


def test_go_zero_values_dropped_only_where_go_json_omits_them() -> None:
    # ObjectMeta.generateName "" and generation 0 are non-pointer omitempty: gone. DeploymentSpec.replicas is a
    # pointer: a 0 on the wire is a real 0.
    meta = field(1, "d") + field(2, "") + field(7, 0) + field(8, field(1, -62135596800))
    spec = field(1, 0)
    out = decode_body(envelope("apps/v1", "Deployment", field(1, meta) + field(2, spec)))
    assert out["metadata"] == {"name": "d"}  # the zero creationTimestamp is JSON's null
    assert out["spec"] == {"replicas": 0}


def test_negative_int32_and_well_known_types() -> None:
    port = field(1, "http") + field(3, 80) + field(4, field(1, 1) + field(3, "web"))
    port2 = field(3, 81) + field(4, field(1, 0) + field(2, 8081))
    spec = field(1, port) + field(1, port2)
    svc = decode_body(envelope("v1", "Service", field(2, spec)))
    assert svc["spec"]["ports"] == [{"name": "http", "port": 80, "targetPort": "web"},
                                    {"port": 81, "targetPort": 8081}]
    # a negative int32 is a ten-byte varint (a bad value, for validation to refuse, not for the decoder)
    neg = decode_message(field(3, -5), "core.v1.ServicePort")
    assert neg == {"port": -5}
    t = decode_message(field(8, field(1, 1764740000) + field(2, 5)), "apis.meta.v1.ObjectMeta")
    assert t == {"creationTimestamp": "2025-12-03T05:33:20Z"}


def test_packed_and_unpacked_repeated_numbers() -> None:
    # PodSecurityContext.supplementalGroups (field 4, repeated int64): packed or one by one, same list
    packed = field(4, varint(1) + varint(2) + varint(300))
    plain = field(4, 1) + field(4, 2) + field(4, 300)
    assert decode_message(packed, "core.v1.PodSecurityContext") == {"supplementalGroups": [1, 2, 300]}
    assert decode_message(plain, "core.v1.PodSecurityContext") == {"supplementalGroups": [1, 2, 300]}


@pytest.mark.parametrize("body,words", [
    (b"{}", "magic"),
    (protobuf.MAGIC + field(1, field(1, "v1") + field(2, "Secret")) + field(2, b""), "'Secret'"),
    (envelope("v1", "ConfigMap", field(99, "x")), "field number 99 of core.v1.ConfigMap"),
    (envelope("v1", "ConfigMap", field(1, field(1, b"\xff\xfe"))), "metadata.name: not valid UTF-8"),
    (envelope("v1", "ConfigMap", b"\x0a\x05ab"), "runs past the end"),
    (envelope("v1", "ConfigMap", b"\x08" + b"\xff" * 11), "longer than ten bytes"),
    (envelope("v1", "ConfigMap", field(1, 5)), "metadata: expected a length-delimited field"),
    (envelope("v1", "ConfigMap", b"\x0b"), "wire type 3"),
    (protobuf.MAGIC + field(1, field(1, "v1") + field(2, "ConfigMap")) + field(2, b"") + field(3, "gzip"),
     "contentEncoding"),
])
def test_bad_bodies_name_what_is_wrong(body: bytes, words: str) -> None:
    with pytest.raises(ProtobufError) as e:
        decode_body(body)
    assert words in str(e.value)


def test_nesting_is_bounded_by_the_schema() -> None:
    """The table has no cycles, so a body nests at most as deep as the schema (the recursion is bounded)."""

    def depth(m: str, stack: tuple[str, ...] = ()) -> int:
        assert m not in stack, f"cycle: {stack + (m,)}"
        subs = [t for _j, typ, _r, _o in SCHEMA[m].values()
                for t in (typ[4:].split(",") if typ.startswith("map:") else [typ]) if t in SCHEMA]
        return 1 + max((depth(t, stack + (m,)) for t in subs), default=0)

    assert max(depth(m) for m in ROOTS) < protobuf.MAX_DEPTH


@settings(max_examples=400, deadline=None)
@given(kind=st.sampled_from(ROOTS), raw=st.binary(max_size=300))
def test_any_bytes_decode_or_fail_cleanly(kind: str, raw: bytes) -> None:
    group, version, name = kind.split(".")
    api_version = {"core": "v1"}.get(group, f"{group if group != 'discovery' else 'discovery.k8s.io'}/{version}")
    try:
        out = decode_body(envelope(api_version, name, raw))
    except ProtobufError:
        return
    assert out["kind"] == name


@settings(max_examples=200, deadline=None)
@given(data=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=20), max_size=6),
       labels=st.dictionaries(st.text(min_size=1, max_size=8), st.text(max_size=8), max_size=4),
       name=st.text(min_size=1, max_size=20))
def test_configmap_round_trip(data: dict[str, str], labels: dict[str, str], name: str) -> None:
    meta = field(1, name) + b"".join(field(11, entry(k, v)) for k, v in labels.items())
    raw = field(1, meta) + b"".join(field(2, entry(k, v)) for k, v in data.items())
    out = decode_body(envelope("v1", "ConfigMap", raw))
    assert out["data" if data else "kind"] == (data or "ConfigMap")
    assert out["metadata"] == {"name": name, **({"labels": labels} if labels else {})}


def test_schema_is_closed() -> None:
    """Every message a field names is in the table or decoded as a well-known type."""
    scalars = set(protobuf.SCALARS_WIRE)
    for name, fields in SCHEMA.items():
        for num, (_json, typ, _rep, _omit) in fields.items():
            for t in typ[4:].split(",") if typ.startswith("map:") else [typ]:
                assert t in scalars or t in SCHEMA or t in protobuf.SPECIAL, (name, num, t)
