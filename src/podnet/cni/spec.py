"""CNI protocol types: versions, errors, CNI_ARGS, name validation and result conversion.

Everything here is pure and imports only the standard library (JSON through gojson.py, not the json
package): it runs once per pod (see main.py).
The JSON shapes, key orders and messages follow the reference Go library (cni v1.1.2, the one Debian's
plugins 1.1.1 are built with), so a runtime or an operator sees the same bytes from podnet's plugins.
"""

from __future__ import annotations

from podnet.cni import gojson

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~5 ms per pod at import
    from typing import Any

CURRENT_VERSION = "1.1.0"
SUPPORTED_VERSIONS = ("0.1.0", "0.2.0", "0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0")

# Error codes (SPEC "Error" table; 8 and 999 are libcni's)
ERR_INCOMPATIBLE_VERSION = 1
ERR_UNSUPPORTED_FIELD = 2
ERR_UNKNOWN_CONTAINER = 3
ERR_INVALID_ENV = 4
ERR_IO = 5
ERR_DECODING = 6
ERR_INVALID_NETCONF = 7
ERR_INVALID_NETNS = 8
ERR_TRY_AGAIN = 11
ERR_NOT_AVAILABLE = 50
ERR_LIMITED_CONNECTIVITY = 51
ERR_INTERNAL = 999

_ID_FIRST = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_ID_REST = _ID_FIRST | frozenset("_.-")


def _valid_id(s: str) -> bool:
    r"""^[a-zA-Z0-9][a-zA-Z0-9_.\-]*$ without importing re (and without re's newline-before-$ laxness)."""
    return bool(s) and s[0] in _ID_FIRST and all(c in _ID_REST for c in s)
MAX_IFNAME = 15


class CniError(Exception):
    """A CNI error result. skel.py prints it as the spec's error JSON on stdout and exits 1.

    Not a PodnetError, on purpose: it is a value of the CNI protocol (code, msg, details) that a runtime
    reads, not a failure of podnet's; plugin code turns podnet's own errors into one (spec.internal) at the
    edge, and nothing outside cni/ raises or catches it."""

    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details

    def to_dict(self, cni_version: str | None = None) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if cni_version:
            out["cniVersion"] = cni_version
        out["code"] = self.code
        out["msg"] = self.msg
        if self.details:
            out["details"] = self.details
        return out


def internal(msg: str) -> CniError:
    return CniError(ERR_INTERNAL, msg)


# ---------------------------------------------------------------------------------------------------
# JSON output, byte-compatible with Go's json.MarshalIndent(v, "", "    ")


def go_json(obj: Any, indent: bool = True) -> str:
    text = gojson.dumps(obj, indent=indent)  # json.dumps(obj, indent=4 or None, ensure_ascii=False, ...)
    # Go escapes HTML-sensitive characters; none of them can occur outside strings in JSON.
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def go_quote(s: str) -> str:
    """Go's %q for the plain strings that appear in messages."""
    return gojson.quote(s)


def go_quote_list(items: list[str] | tuple[str, ...]) -> str:
    """Go's %q of a []string: ["a" "b"]."""
    return "[" + " ".join(go_quote(i) for i in items) + "]"


# ---------------------------------------------------------------------------------------------------
# Versions


def version_tuple(v: str) -> tuple[int, int, int]:
    """Parse "X.Y.Z" (missing parts are 0) like the reference's version.ParseVersion."""
    parts = v.split(".")
    if not v or len(parts) > 3:
        raise CniError(ERR_DECODING, f"invalid version {go_quote(v)}: the version is empty or has too many parts")
    nums = []
    for p in parts:
        if not p.isdigit():
            raise CniError(ERR_DECODING, f"failed to convert version {go_quote(v)}: {go_quote(p)} is not a number")
        nums.append(int(p))
    while len(nums) < 3:
        nums.append(0)
    return nums[0], nums[1], nums[2]


def config_version(conf: dict[str, Any]) -> str:
    """The request's cniVersion; absent means 0.1.0 (the reference's DecodeVersion)."""
    v = conf.get("cniVersion", "")
    if not isinstance(v, str):
        raise CniError(ERR_DECODING, "json: cannot unmarshal cniVersion: not a string")
    return v or "0.1.0"


def check_supported(v: str, supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> None:
    if v not in supported:
        raise CniError(ERR_INCOMPATIBLE_VERSION, "incompatible CNI versions",
                       f"config is {go_quote(v)}, plugin supports {go_quote_list(supported)}")


def version_json(supported: tuple[str, ...] = SUPPORTED_VERSIONS) -> str:
    return go_json({"cniVersion": CURRENT_VERSION, "supportedVersions": list(supported)}, indent=False) + "\n"


# ---------------------------------------------------------------------------------------------------
# Identity validation: these strings become file and interface names, so no traversal, no separators.


def validate_container_id(cid: str) -> None:
    if not cid:
        raise CniError(ERR_UNKNOWN_CONTAINER, "missing containerID")
    if not _valid_id(cid):
        raise CniError(ERR_INVALID_ENV, "invalid characters in containerID", cid)


def validate_ifname(name: str) -> None:
    if not name:
        raise CniError(ERR_INVALID_ENV, "interface name is empty")
    if len(name.encode()) > MAX_IFNAME:
        raise CniError(ERR_INVALID_ENV, "interface name is too long",
                       f"interface name should be less than {MAX_IFNAME + 1} characters")
    if name in (".", ".."):
        raise CniError(ERR_INVALID_ENV, "interface name is . or ..")
    if any(c in "/:" or c.isspace() for c in name):
        raise CniError(ERR_INVALID_ENV, "interface name contains / or : or whitespace characters")


def validate_network_name(name: Any) -> None:
    if not name:
        raise CniError(ERR_INVALID_NETCONF, "missing network name")
    if not isinstance(name, str):
        raise CniError(ERR_DECODING, "error unmarshall network config: json: cannot unmarshal "
                       f"{_json_kind(name)} into Go struct field .name of type string")
    if not _valid_id(name):
        raise CniError(ERR_INVALID_NETCONF, "invalid characters found in network name", name)


def _json_kind(v: Any) -> str:
    if isinstance(v, bool):
        return "bool"
    if isinstance(v, (int, float)):
        return "number"
    if isinstance(v, list):
        return "array"
    if isinstance(v, dict):
        return "object"
    return "string"


def decode_config(data: bytes) -> dict[str, Any]:
    """stdin -> config object, with the reference's code 6 message for bad JSON."""
    try:
        obj = gojson.loads(data)
    except (ValueError, UnicodeDecodeError) as e:
        import json  # gojson.loads raised json's own error, so json is loaded already

        if isinstance(e, json.JSONDecodeError) and e.pos >= len(e.doc.rstrip()):
            reason = "unexpected end of JSON input"
        elif isinstance(e, json.JSONDecodeError):
            ch = e.doc[e.pos] if e.pos < len(e.doc) else ""
            reason = f"invalid character {go_quote(ch)[1:-1]!r} ({e.msg} at offset {e.pos})".replace('"', "'")
        else:
            reason = str(e)
        raise CniError(ERR_DECODING, f"error unmarshall network config: {reason}") from None
    if not isinstance(obj, dict):
        raise CniError(ERR_DECODING, "error unmarshall network config: json: cannot unmarshal "
                       f"{_json_kind(obj)} into Go value of type struct {{ Name string \"json:\\\"name\\\"\" }}")
    return obj


# ---------------------------------------------------------------------------------------------------
# CNI_ARGS: "K1=V1;K2=V2". Unknown keys are an error unless IgnoreUnknown is true (CONVENTIONS.md).


def _parse_bool(pair: str, value: str) -> bool:
    low = value.lower()
    if low in ("1", "true"):
        return True
    if low in ("0", "false"):
        return False
    raise CniError(ERR_INTERNAL, f"ARGS: error parsing value of pair {go_quote(pair)}: "
                   f"boolean unmarshal error: invalid input {value}")


def parse_cni_args(raw: str, known: tuple[str, ...]) -> dict[str, str]:
    """Return the known keys' values. `known` lists keys this plugin understands besides IgnoreUnknown."""
    if not raw:
        return {}
    values: dict[str, str] = {}
    unknown: list[str] = []
    ignore = False
    for pair in raw.split(";"):
        kv = pair.split("=")
        if len(kv) != 2:
            raise CniError(ERR_INTERNAL, f"ARGS: invalid pair {go_quote(pair)}")
        key, value = kv
        if key == "IgnoreUnknown":
            ignore = _parse_bool(pair, value)
        elif key in known:
            values[key] = value
        else:
            unknown.append(pair)
    if unknown and not ignore:
        raise CniError(ERR_INTERNAL, f"ARGS: unknown args {go_quote_list(unknown)}")
    return values


# ---------------------------------------------------------------------------------------------------
# Results. Internally a result is the 1.1.0 shape as plain dicts:
#   {"interfaces": [...], "ips": [{"interface"?, "address", "gateway"?}], "routes": [...], "dns": {...}}

_IFACE_KEYS_1 = ("name", "mac", "mtu", "sandbox", "socketPath", "pciID")
_ROUTE_KEYS_1 = ("dst", "gw", "mtu", "advmss", "priority", "table", "scope")
_DNS_KEYS = ("nameservers", "domain", "search", "options")


def _pick(d: dict[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """`keys` of d in that order, empty ones left out (Go's omitempty)."""
    return {k: d[k] for k in keys if d.get(k) not in (None, "", [], 0)}


def _is_v4(cidr_or_ip: str) -> bool:
    return ":" not in cidr_or_ip


def parse_result(obj: Any) -> dict[str, Any]:
    """A result of any supported version -> the internal (current) shape."""
    if not isinstance(obj, dict):
        raise internal("failed to parse result: not an object")
    version = obj.get("cniVersion") or "0.1.0"
    if version in ("0.1.0", "0.2.0"):
        ips: list[dict[str, Any]] = []
        routes: list[dict[str, Any]] = []
        for key in ("ip4", "ip6"):
            ipc = obj.get(key)
            if not ipc:
                continue
            entry: dict[str, Any] = {"address": ipc["ip"]}
            if ipc.get("gateway"):
                entry["gateway"] = ipc["gateway"]
            ips.append(entry)
            for r in ipc.get("routes") or []:
                routes.append(_pick(r, ("dst", "gw")))
        return {"interfaces": [], "ips": ips, "routes": routes, "dns": dict(obj.get("dns") or {})}
    if version not in SUPPORTED_VERSIONS:
        raise internal(f"unsupported CNI result version {go_quote(version)}")
    return {
        "interfaces": [dict(i) for i in obj.get("interfaces") or []],
        "ips": [{k: v for k, v in ip.items() if k != "version"} for ip in obj.get("ips") or []],
        "routes": [dict(r) for r in obj.get("routes") or []],
        "dns": dict(obj.get("dns") or {}),
    }


def render_result(res: dict[str, Any], version: str) -> dict[str, Any]:
    """The internal result printed in `version`'s shape, keys in the reference's order."""
    dns = _pick(res.get("dns") or {}, _DNS_KEYS)
    if version in ("0.1.0", "0.2.0"):
        out: dict[str, Any] = {"cniVersion": version}
        for fam, key in ((True, "ip4"), (False, "ip6")):
            ipc = next((i for i in res.get("ips", []) if _is_v4(i["address"]) == fam), None)
            if ipc is None:
                continue
            entry: dict[str, Any] = {"ip": ipc["address"]}
            if ipc.get("gateway"):
                entry["gateway"] = ipc["gateway"]
            routes = [_pick(r, ("dst", "gw")) for r in res.get("routes", []) if _is_v4(r["dst"]) == fam]
            if routes:
                entry["routes"] = routes
            out[key] = entry
        out["dns"] = dns
        return out
    legacy = version_tuple(version) < (1, 0, 0)
    out = {"cniVersion": version}
    ifaces = [_pick(i, _IFACE_KEYS_1) for i in res.get("interfaces", [])]
    if ifaces:
        out["interfaces"] = ifaces
    ips = []
    for ip in res.get("ips", []):
        e: dict[str, Any] = {}
        if legacy:
            e["version"] = "4" if _is_v4(ip["address"]) else "6"
        if ip.get("interface") is not None:
            e["interface"] = ip["interface"]
        e["address"] = ip["address"]
        if ip.get("gateway"):
            e["gateway"] = ip["gateway"]
        ips.append(e)
    if ips:
        out["ips"] = ips
    keys = ("dst", "gw") if version != "1.1.0" else _ROUTE_KEYS_1
    routes = [_pick(r, keys) for r in res.get("routes", [])]
    if routes:
        out["routes"] = routes
    out["dns"] = dns
    return out


def check_result_version(res: dict[str, Any], version: str) -> None:
    """0.1/0.2 results hold at most one address per family; refuse instead of dropping one silently."""
    if version in ("0.1.0", "0.2.0"):
        fams = [_is_v4(i["address"]) for i in res.get("ips", [])]
        if fams.count(True) > 1 or fams.count(False) > 1:
            raise internal(f"cannot convert: result has multiple IPs of one family for version {version}")


# ---------------------------------------------------------------------------------------------------
# A request, as main.py hands it to a plugin


class Request:
    """One plugin invocation: the CNI_* environment plus the decoded stdin config."""

    __slots__ = ("command", "container_id", "netns", "ifname", "args", "path", "stdin", "conf", "version", "env")

    def __init__(self, env: dict[str, str], stdin: bytes, conf: dict[str, Any], version: str) -> None:
        self.env = env
        self.command = env.get("CNI_COMMAND", "")
        self.container_id = env.get("CNI_CONTAINERID", "")
        self.netns = env.get("CNI_NETNS", "")
        self.ifname = env.get("CNI_IFNAME", "")
        self.args = env.get("CNI_ARGS", "")
        self.path = env.get("CNI_PATH", "")
        self.stdin = stdin
        self.conf = conf
        self.version = version


def gc_valid_attachments(conf: dict[str, Any]) -> set[tuple[str, str]]:
    """The (containerID, ifname) pairs a GC must keep. Both key spellings are accepted (libcni sends both)."""
    raw = conf.get("cni.dev/valid-attachments")
    if raw is None:
        raw = conf.get("cni.dev/attachments")
    if raw is None:
        return set()
    if not isinstance(raw, list):
        raise CniError(ERR_INVALID_NETCONF, "cni.dev/valid-attachments: must be a list", go_json(raw, False))
    out = set()
    for item in raw:
        if not isinstance(item, dict) or not isinstance(item.get("containerID"), str):
            raise CniError(ERR_INVALID_NETCONF, "cni.dev/valid-attachments: entry needs containerID and ifname",
                           go_json(item, False))
        out.add((item["containerID"], str(item.get("ifname", ""))))
    return out
