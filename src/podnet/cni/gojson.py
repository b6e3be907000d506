"""JSON for the CNI plugins without the json package: `import json` pulls in re and enum (~7 ms of every
pod's ADD and DEL). The same C accelerator (`_json`) that json itself uses does the work here.

- `loads` is json.loads: the C scanner with json's default settings. Anything it does not take in one go
  (a BOM, UTF-16/32, a syntax error) is handed to json.loads, so the result and every error (type,
  message, position) are exactly json's: the json package is imported only then.
- `dumps(obj)` is json.dumps(obj, ensure_ascii=False, separators=(",", ":")) (sort_keys as asked) through
  the C encoder; `dumps(obj, indent=True)` is json.dumps(obj, indent=4, ensure_ascii=False,
  separators=(",", ": ")), the layout of Go's json.MarshalIndent(v, "", "    "), written out below as
  json's own pure-Python encoder does it (the C one cannot indent in 3.11).
- `quote(s)` is json.dumps(s, ensure_ascii=False).

tests/unit/cni/test_cni_gojson.py holds each one against json on generated values.
"""

from __future__ import annotations

from _json import encode_basestring as _enc
from _json import make_encoder as _c_make_encoder
from _json import make_scanner as _c_make_scanner

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

_INF = float("inf")
_CONSTANTS = {"-Infinity": -_INF, "Infinity": _INF, "NaN": _INF - _INF}
_WS = " \t\n\r"


class _Context:
    """What the C scanner reads off a json.JSONDecoder(): json.loads' defaults."""

    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _c_make_scanner(_Context())  # type: ignore[arg-type]  # typeshed wants a JSONDecoder: duck-typed


def _json_loads(data: Any) -> Any:
    import json

    return json.loads(data)


def loads(data: str | bytes | bytearray) -> Any:
    """json.loads(data), results and exceptions alike."""
    if isinstance(data, (bytes, bytearray)):
        # json.detect_encoding: UTF-8 unless a BOM or a NUL in the first bytes says otherwise
        if not data or data[0] in (0, 0xEF, 0xFE, 0xFF) or (len(data) > 1 and not data[1]):
            return _json_loads(data)
        try:
            s = data.decode("utf-8", "surrogatepass")
        except UnicodeDecodeError:
            return _json_loads(data)
    elif isinstance(data, str):
        s = data
    else:
        return _json_loads(data)
    n = len(s)
    i = 0
    while i < n and s[i] in _WS:
        i += 1
    try:
        obj, end = _scan(s, i)
    except Exception:  # StopIteration (no value) or a JSONDecodeError: json.loads words it
        return _json_loads(data)
    while end < n and s[end] in _WS:
        end += 1
    if end != n:  # extra data
        return _json_loads(data)
    return obj


def _default(o: Any) -> Any:
    raise TypeError(f"Object of type {o.__class__.__name__} is not JSON serializable")


def _floatstr(o: float) -> str:
    if o != o:
        return "NaN"
    if o == _INF:
        return "Infinity"
    if o == -_INF:
        return "-Infinity"
    return float.__repr__(o)


def dumps(obj: Any, indent: bool = False, sort_keys: bool = False) -> str:
    """json.dumps(obj, ensure_ascii=False) compact, or with indent=4 and separators (",", ": ")."""
    if isinstance(obj, str):
        return _enc(obj)
    if not indent:  # json's own C path; markers: a fresh dict per call, as json's check_circular
        return "".join(_c_make_encoder({}, _default, _enc, None, ":", ",", sort_keys, False, True)(obj, 0))
    out: list[str] = []
    _indented(obj, 0, out, {}, sort_keys)
    return "".join(out)


def quote(s: str) -> str:
    """Go's %q of a plain string, which is json.dumps(s, ensure_ascii=False)."""
    return _enc(s) if isinstance(s, str) else dumps(s)


def _scalar(o: Any) -> str | None:
    if isinstance(o, str):
        return _enc(o)
    if o is None:
        return "null"
    if o is True:
        return "true"
    if o is False:
        return "false"
    if isinstance(o, int):
        return int.__repr__(o)
    if isinstance(o, float):
        return _floatstr(o)
    return None


def _key(k: Any) -> str:
    """An object key as json writes it: a string as it is, any other scalar as its JSON text."""
    if isinstance(k, str):
        return k
    text = _scalar(k)
    if text is None:
        raise TypeError(f"keys must be str, int, float, bool or None, not {k.__class__.__name__}")
    return text


def _indented(o: Any, level: int, out: list[str], markers: dict[int, Any], sort_keys: bool) -> None:
    """json's _make_iterencode with indent "    ", item separator "," and key separator ": "."""
    text = _scalar(o)
    if text is not None:
        out.append(text)
        return
    if isinstance(o, (list, tuple)):
        if not o:
            out.append("[]")
            return
        _enter(markers, o)
        nl = "\n" + "    " * (level + 1)
        out.append("[")
        for i, v in enumerate(o):
            out.append(nl if i == 0 else "," + nl)
            _indented(v, level + 1, out, markers, sort_keys)
        out.append("\n" + "    " * level + "]")
        del markers[id(o)]
        return
    if isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        _enter(markers, o)
        nl = "\n" + "    " * (level + 1)
        out.append("{")
        first = True
        for k, v in sorted(o.items()) if sort_keys else o.items():
            key = _key(k)
            out.append(nl if first else "," + nl)
            first = False
            out.append(_enc(key) + ": ")
            _indented(v, level + 1, out, markers, sort_keys)
        out.append("\n" + "    " * level + "}")
        del markers[id(o)]
        return
    _enter(markers, o)
    _indented(_default(o), level, out, markers, sort_keys)
    del markers[id(o)]


def _enter(markers: dict[int, Any], o: Any) -> None:
    if id(o) in markers:
        raise ValueError("Circular reference detected")
    markers[id(o)] = o
