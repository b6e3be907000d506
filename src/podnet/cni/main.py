"""Exec entry points of the CNI plugins and their table. Kept lean: imported once per pod.

`run()` is the whole exec protocol (skel.py) for a plugin named in PLUGINS, shared by the three console
scripts and by in-process delegation (delegate.py), so a podnet plugin calling another podnet plugin
behaves exactly as if it had exec'd it. The table names modules instead of importing them: a plugin is
imported when its command runs (VERSION never imports one), and bridge/flannel -> delegate -> main is no
import circle. No pydantic/typer/rich on this path.
"""

from __future__ import annotations

from podnet.cni import skel

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only: typing costs ~5 ms per pod at import, collections.abc ~2 ms
    from collections.abc import Mapping
    from typing import Any

PLUGINS = {"bridge": "podnet.cni.bridge", "host-local": "podnet.cni.host_local", "flannel": "podnet.cni.flannel"}


def _loader(name: str) -> Any:
    module = PLUGINS[name]  # KeyError: a programming error (the console scripts name known plugins)

    def load() -> Any:
        return __import__(module, fromlist=["add"])  # the submodule itself; importlib would cost ~0.7 ms

    return load


def run(plugin: str, env: Mapping[str, str], stdin: bytes) -> tuple[int, str, str]:
    """One invocation -> (exit code, stdout text, stderr text). Never raises for plugin errors."""
    return skel.run(plugin, _loader(plugin), env, stdin)


def bridge_main() -> None:
    skel.main("bridge", _loader("bridge"))


def host_local_main() -> None:
    skel.main("host-local", _loader("host-local"))


def flannel_main() -> None:
    skel.main("flannel", _loader("flannel"))
