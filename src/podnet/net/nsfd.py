"""Enter a network namespace by path (setns), for per-pod code that must stay light.

Python 3.11 has no os.setns, so this calls libc through ctypes (~1.5 ms to import, versus ~100 ms
for pyroute2). setns changes the namespace of the calling thread only; the CNI plugins are
single-threaded, and `entered()` always switches back, also on error.
"""

from __future__ import annotations

import ctypes
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager

from podnet.errors import PodnetError

CLONE_NEWNET = 0x40000000
NSFS_MAGIC = 0x6E736673
PROC_SUPER_MAGIC = 0x9FA0

_libc = ctypes.CDLL(None, use_errno=True)


class NetnsOpenError(PodnetError):
    """CNI_NETNS does not name a network namespace. str() is the reason, as the reference words it."""


def fs_magic(path: str) -> int:
    """statfs(path).f_type; raises FileNotFoundError etc. like os.stat would."""
    buf = ctypes.create_string_buffer(256)
    if _libc.statfs(path.encode(), buf) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err), path)
    return struct.unpack_from("=l", buf.raw)[0]


def open_netns(path: str) -> int:
    """Open a netns file (nsfs bind mount or /proc/<pid>/ns/net) and return an fd, or raise NetnsOpenError."""
    try:
        magic = fs_magic(path)
    except OSError as e:
        raise NetnsOpenError(f'failed to Statfs "{path}": {os.strerror(e.errno or 0).lower()}') from None
    if magic not in (NSFS_MAGIC, PROC_SUPER_MAGIC):
        raise NetnsOpenError(f'unknown FS magic on "{path}": {magic:x}')
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise NetnsOpenError(f'failed to open "{path}": {os.strerror(e.errno or 0).lower()}') from None


def setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def current_fd() -> int:
    return os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)


def same_netns(fd_a: int, fd_b: int) -> bool:
    a, b = os.fstat(fd_a), os.fstat(fd_b)
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


@contextmanager
def entered(fd: int) -> Iterator[None]:
    """Run the block inside the namespace `fd`; come back to the current one afterwards."""
    home = current_fd()
    try:
        setns(fd)
        try:
            yield
        finally:
            setns(home)
    finally:
        os.close(home)
