"""The CNI exec protocol, shared by every plugin (the reference's `skel.PluginMain`): env + stdin -> a
request; version negotiation; the handler's result or CniError -> stdout and the exit code.

A plugin is a module with add/check/delete/gc/status(request); this module never imports one itself
(main.py's table names them), so a plugin may delegate to another through main.run() without an import
circle. Only the standard library, spec.py and gojson.py: imported once per pod.
"""

from __future__ import annotations

import os
import sys

from podnet.cni import gojson, spec
from podnet.cni.spec import CniError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~5 ms per pod at import, collections.abc ~2 ms
    from collections.abc import Callable, Mapping
    from typing import Any

    Handler = Callable[[spec.Request], "dict[str, Any] | None"]

# Which env variables a command needs (the reference skel's table, plus GC/STATUS from spec 1.1)
_REQUIRED: dict[str, tuple[str, ...]] = {
    "ADD": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "CHECK": ("CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_PATH"),
    "DEL": ("CNI_CONTAINERID", "CNI_IFNAME", "CNI_PATH"),
    "GC": ("CNI_PATH",),
    "STATUS": ("CNI_PATH",),
}
_ORDER = ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH")
_HANDLERS = {"ADD": "add", "DEL": "delete", "CHECK": "check", "GC": "gc", "STATUS": "status"}
_MIN_VERSION = {"CHECK": (0, 4, 0), "GC": (1, 1, 0), "STATUS": (1, 1, 0)}


def _preflight(env: Mapping[str, str], stdin: bytes) -> tuple[str, spec.Request | None]:
    cmd = env.get("CNI_COMMAND", "")
    need = _REQUIRED.get(cmd, ())
    missing = [v for v in _ORDER if not env.get(v) and (v == "CNI_COMMAND" or v in need)]
    if missing:
        raise CniError(spec.ERR_INVALID_ENV, f"required env variables [{','.join(missing)}] missing")
    if cmd == "VERSION":
        return cmd, None
    conf = spec.decode_config(stdin)
    spec.validate_network_name(conf.get("name"))
    if cmd not in ("GC", "STATUS"):
        spec.validate_container_id(env.get("CNI_CONTAINERID", ""))
        spec.validate_ifname(env.get("CNI_IFNAME", ""))
    if cmd not in ("ADD", "DEL", "CHECK", "GC", "STATUS"):
        raise CniError(spec.ERR_INVALID_ENV, f"unknown CNI_COMMAND: {cmd}")
    version = spec.config_version(conf)
    if cmd in _MIN_VERSION and spec.version_tuple(version) < _MIN_VERSION[cmd]:
        raise CniError(spec.ERR_INCOMPATIBLE_VERSION, f"config version does not allow {cmd}")
    spec.check_supported(version)
    return cmd, spec.Request(dict(env), stdin, conf, version)


def run(plugin: str, load: Callable[[], Any], env: Mapping[str, str], stdin: bytes) -> tuple[int, str, str]:
    """One invocation of `plugin` -> (exit code, stdout text, stderr text). Never raises for plugin errors.

    `load()` returns the plugin's module (add, check, delete, gc, status), called only once a command
    needs it: VERSION and usage errors never import a plugin."""
    version_hint = ""
    try:
        if not env.get("CNI_COMMAND"):
            about = (f"CNI {plugin} plugin (podnet) version 0.1.0\n"
                     f"CNI protocol versions supported: {', '.join(spec.SUPPORTED_VERSIONS)}\n")
            return 0, "", about
        cmd, req = _preflight(env, stdin)
        if req is None:
            return 0, spec.version_json(), ""
        version_hint = req.version
        handler: Handler = getattr(load(), _HANDLERS[cmd])
        result = handler(req)
        if result is None:
            return 0, "", ""
        return 0, spec.go_json(result), ""
    except CniError as e:
        return 1, spec.go_json(e.to_dict(_error_version(version_hint, stdin))), ""
    except Exception as e:  # a bug or an unexpected kernel answer: still the spec's error shape
        err = CniError(spec.ERR_INTERNAL, f"{type(e).__name__}: {e}")
        return 1, spec.go_json(err.to_dict(_error_version(version_hint, stdin))), ""


def _error_version(hint: str, stdin: bytes) -> str:
    """The version an error is reported in: the request's if it is one we speak, else our newest."""
    if not hint:
        try:
            conf = gojson.loads(stdin)
            hint = conf.get("cniVersion", "") if isinstance(conf, dict) else ""
        except ValueError:
            hint = ""
    return hint if hint in spec.SUPPORTED_VERSIONS else spec.CURRENT_VERSION


def main(plugin: str, load: Callable[[], Any]) -> None:
    """The process around run(): stdin in, stdout and stderr out, exit with run()'s code.

    Ends the process with os._exit once both streams are flushed: the plugin has nothing left to clean up
    (every child it started is reaped, every fd closed), and tearing down the interpreter's ~70 modules
    would cost each pod's ADD and DEL another 1-3 ms. A failing write still raises, as before."""
    try:
        stdin = b"" if os.environ.get("CNI_COMMAND") == "VERSION" else sys.stdin.buffer.read()
    except OSError as e:
        rc, out, err = 1, spec.go_json(CniError(spec.ERR_IO, f"error reading from stdin: {e}").to_dict()), ""
    else:
        rc, out, err = run(plugin, load, os.environ, stdin)
    if err:
        sys.stderr.write(err)
    if out:
        sys.stdout.write(out)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(rc)
