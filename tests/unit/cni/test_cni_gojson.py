"""gojson must be json, byte for byte and error for error: the CNI plugins print what a runtime parses."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.cni import gojson

scalars = (st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True, allow_infinity=True)
           | st.text())
keys = st.text() | st.integers() | st.booleans() | st.none() | st.floats(allow_nan=False)
values = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.tuples(inner, inner)
                      | st.dictionaries(st.text(), inner, max_size=4), max_leaves=20)


def _same(fn: Any, *args: Any) -> tuple[str, Any]:
    try:
        return "ok", fn(*args)
    except Exception as e:  # noqa: BLE001 - the exception is what is compared
        return type(e).__name__, str(e)


def _nan_safe(x: Any) -> str:
    return repr(x)  # nan != nan: compare decoded values through their repr


@settings(max_examples=300, deadline=None)
@given(values)
def test_dumps_indented_is_json_indent_4(obj: Any) -> None:
    assert gojson.dumps(obj, indent=True) == json.dumps(obj, indent=4, ensure_ascii=False, separators=(",", ": "))


@settings(max_examples=300, deadline=None)
@given(values)
def test_dumps_compact_is_json_compact(obj: Any) -> None:
    assert gojson.dumps(obj) == json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(keys, values, max_size=5), st.booleans())
def test_dumps_keys_and_sorting_like_json(obj: dict[Any, Any], indent: bool) -> None:
    ours = _same(gojson.dumps, obj, indent, True)
    sep = (",", ": ") if indent else (",", ":")
    theirs = _same(lambda o: json.dumps(o, indent=4 if indent else None, ensure_ascii=False, separators=sep,
                                        sort_keys=True), obj)
    assert ours == theirs
    assert _same(gojson.dumps, obj, indent) == _same(
        lambda o: json.dumps(o, indent=4 if indent else None, ensure_ascii=False, separators=sep), obj)


@pytest.mark.parametrize("indent", [False, True])
def test_dumps_errors_like_json(indent: bool) -> None:
    sep = (",", ": ") if indent else (",", ":")

    def ref(o: Any) -> str:
        return json.dumps(o, indent=4 if indent else None, ensure_ascii=False, separators=sep)

    loop: list[Any] = []
    loop.append(loop)
    for bad in ({"a": {1, 2}}, [object()], {(1, 2): 3}, loop, {"x": b"bytes"}):
        assert _same(gojson.dumps, bad, indent) == _same(ref, bad)


@settings(max_examples=300, deadline=None)
@given(values)
def test_loads_round_trips_like_json(obj: Any) -> None:
    for text in (json.dumps(obj), json.dumps(obj, indent=2, ensure_ascii=False)):
        assert _nan_safe(gojson.loads(text)) == _nan_safe(json.loads(text))
        data = text.encode("utf-8", "surrogatepass")
        assert _nan_safe(gojson.loads(data)) == _nan_safe(json.loads(data))


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=40) | st.text(max_size=40).map(lambda s: s.encode("utf-8", "surrogatepass")))
def test_loads_any_bytes_like_json(data: bytes) -> None:
    assert _nan_safe(_same(gojson.loads, data)) == _nan_safe(_same(json.loads, data))


@pytest.mark.parametrize("data", [
    b"", b" ", b"{", b'{"a":1,', b'{"a":1} x', b"[1,2]]", b'\xef\xbb\xbf{"a":1}', '\ufeff{}', '{"a":"\x01"}',
    b'"\xff"', '{"a":1}'.encode("utf-16"), '{"a":1}'.encode("utf-32-le"), b"NaN", b"-Infinity", b" \t\n1\r\n",
    b"[" * 100000, 5, None, bytearray(b'{"k": [1, 2.5, true, null]}'), b'{"a": 1, "a": 2}', b'"\\ud800"',
])
def test_loads_edge_cases_like_json(data: Any) -> None:
    assert _nan_safe(_same(gojson.loads, data)) == _nan_safe(_same(json.loads, data))


def test_quote_is_json_dumps() -> None:
    for s in ("", "a\"b\\c", "<&>", "\u2028 é \x00 \ud800", "tab\there"):
        assert gojson.quote(s) == json.dumps(s, ensure_ascii=False)


def test_the_plugin_path_does_not_import_json() -> None:
    """The point of gojson: loading the plugins, VERSION and decoding a config pull in neither json nor re
    and enum (nor subprocess or typing), also without site (the launchers run python -I -S)."""
    code = ("import sys; from podnet.cni import main, bridge, host_local, flannel, spec, skel, delegate, ipmasq\n"
            "rc, out, _ = main.run('bridge', {'CNI_COMMAND': 'VERSION'}, b'')\n"
            "spec.decode_config(b'{\"cniVersion\": \"1.0.0\", \"name\": \"n\"}')\n"
            "print(','.join(m for m in ('json', 're', 'enum', 'subprocess', 'typing') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-I", "-S", "-c", f"import sys; sys.path.append({_src()!r})\n" + code],
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == ""


def _src() -> str:
    import os

    import podnet

    return os.path.dirname(os.path.dirname(os.path.abspath(podnet.__file__)))
