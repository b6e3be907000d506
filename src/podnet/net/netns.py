"""Network namespaces: create, delete, run commands in them, open netlink sockets bound to them.

Everything podnet creates is named with the pn- prefix and removed by exact name. Namespaces are the
iproute2 kind (bind mounts under /var/run/netns) so `ip netns exec` and operators' tools see them.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from pyroute2 import IPRoute, netns

from podnet.net import exec as nexec

NETNS_DIR = "/var/run/netns"
# iproute2's per-namespace configuration: `ip netns exec NAME` bind-mounts every file of /etc/netns/NAME
# over the one of the same name in /etc (resolv.conf, hosts), for that command only.
ETC_NETNS_DIR = "/etc/netns"


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
    """Delete a named netns by exact name, and its /etc/netns/NAME files. Returns False if it was not there."""
    remove_etc(name)
    if not exists(name):
        return False
    netns.remove(name)
    return True


def write_etc(name: str, filename: str, text: str) -> None:
    """/etc/netns/NAME/FILENAME, which processes started with `ip netns exec NAME` see as /etc/FILENAME."""
    if "/" in name or "/" in filename or not name.startswith("pn-"):
        raise ValueError(f"refusing /etc/netns/{name}/{filename}: podnet writes only pn- entries, by exact name")
    d = os.path.join(ETC_NETNS_DIR, name)
    os.makedirs(d, exist_ok=True)
    tmp = os.path.join(d, f".{filename}.tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, os.path.join(d, filename))


def remove_etc(name: str) -> bool:
    """Remove /etc/netns/NAME (podnet's pn- entries only, by exact name). Returns False if absent."""
    if "/" in name or not name.startswith("pn-"):
        return False
    d = os.path.join(ETC_NETNS_DIR, name)
    if not os.path.isdir(d):
        return False
    for f in os.listdir(d):
        os.unlink(os.path.join(d, f))
    os.rmdir(d)
    return True


def list_etc(prefix: str = "pn-") -> list[str]:
    try:
        return sorted(n for n in os.listdir(ETC_NETNS_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


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


class NetlinkUser:
    """One netlink socket in `self.netns`, opened on first use and kept: a namespace-bound pyroute2
    socket forks a helper, ~7 ms per open, too much to pay per event (the overlay backends use this)."""

    netns: str | None
    _ipr: IPRoute | None = None

    @property
    def ipr(self) -> IPRoute:
        if self._ipr is None:
            self._ipr = ipr(self.netns)
        return self._ipr

    def _close_ipr(self) -> None:
        if self._ipr is not None:
            self._ipr.close()
            self._ipr = None


def exec_argv(name: str, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside namespace `name` (net/exec.py builds it)."""
    return nexec.in_netns(name, argv)


def run(
    name: str, argv: Sequence[str], *, input: str | bytes | None = None, check: bool = True,
    timeout: float | None = 60,
) -> subprocess.CompletedProcess[str]:
    """Run a command inside a namespace and capture its output as text (check: CalledProcessError, as
    subprocess.run; net/exec.py's run raises podnet's CommandError instead)."""
    data = input.decode() if isinstance(input, bytes) else input
    return subprocess.run(
        exec_argv(name, argv), input=data, capture_output=True, text=True, check=check, timeout=timeout
    )
