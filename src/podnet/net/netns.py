"""Network namespaces: create, delete, run commands in them, open netlink sockets bound to them.

Everything podnet creates is named with the pn- prefix and removed by exact name. Namespaces are the
iproute2 kind (bind mounts under /var/run/netns) so `ip netns exec` and operators' tools see them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from pyroute2 import IPRoute, netns

NETNS_DIR = "/var/run/netns"


def exists(name: str) -> bool:
    return os.path.exists(os.path.join(NETNS_DIR, name))


def create(name: str, *, lo_up: bool = True) -> None:
    """Create a named netns (error if it exists) and bring its loopback up (onlink routes need it)."""
    if exists(name):
        raise FileExistsError(f"network namespace {name!r} already exists")
    netns.create(name)
    if lo_up:
        with ipr(name) as ip:
            idx = ip.link_lookup(ifname="lo")[0]
            ip.link("set", index=idx, state="up")


def remove(name: str) -> bool:
    """Delete a named netns by exact name. Returns False if it was not there."""
    if not exists(name):
        return False
    netns.remove(name)
    return True


def list_names(prefix: str = "pn-") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def ipr(name: str | None) -> IPRoute:
    """A netlink socket in namespace `name` (None = the current one). flags=0: never create by typo."""
    if name is None:
        return IPRoute()
    return IPRoute(netns=name, flags=0)


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside namespace `name`."""
    return ["ip", "netns", "exec", name, *argv]


def run(
    name: str, argv: Sequence[str], *, input: str | bytes | None = None, check: bool = True,
    timeout: float | None = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace and capture its output as text."""
    data = input.decode() if isinstance(input, bytes) else input
    return subprocess.run(
        exec_argv(name, argv), input=data, capture_output=True, text=True, check=check, timeout=timeout
    )
