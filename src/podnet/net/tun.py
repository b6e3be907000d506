"""TUN devices opened through /dev/net/tun (this kernel cannot `ip link add type tun`).

The device lives as long as a file descriptor attached to it is open, in the network namespace of
the thread that opened it. `open_tun` can run that open inside a named namespace from a short-lived
helper thread (setns changes only the calling thread's namespace), so a caller in another namespace
gets a descriptor bound to the right one.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import struct
import threading
from collections.abc import Callable
from typing import TypeVar

TUNSETIFF = 0x400454CA
IFF_TUN = 0x0001
IFF_NO_PI = 0x1000
IFF_MULTI_QUEUE = 0x0100
IFF_VNET_HDR = 0x4000
TUNSETOFFLOAD = 0x400454D0
TUNSETPERSIST = 0x400454CB
TUN_F_CSUM = 0x01
TUN_F_TSO4 = 0x02
IFNAMSIZ = 16

T = TypeVar("T")


CLONE_NEWNET = 0x40000000


def _setns_thread(name: str) -> None:
    """Move the calling thread (only) into namespace `name`; never creates one."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(os.path.join("/var/run/netns", name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {name}: {os.strerror(err)}")
    finally:
        os.close(fd)


def in_netns(name: str | None, fn: Callable[[], T]) -> T:
    """Run fn() with the calling thread inside namespace `name` (None: here) and return its result.

    Sockets and TUN descriptors created by fn stay bound to that namespace after the thread exits.
    """
    if name is None:
        return fn()
    values: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            _setns_thread(name)
            values.append(fn())
        except BaseException as exc:  # handed to the caller below
            errors.append(exc)

    t = threading.Thread(target=target, name=f"netns-{name}")
    t.start()
    t.join()
    if errors:
        raise errors[0]
    return values[0]


def open_tun(name: str, *, multi_queue: bool = False, nonblocking: bool = True, vnet_hdr: bool = False) -> int:
    """Create (or attach a queue to) TUN device `name` without packet info header; return the fd.

    vnet_hdr: every packet read or written is preceded by a 10-byte virtio_net_hdr, which is what lets
    the kernel hand over (and accept) checksum-offloaded and TSO packets; see set_offload.
    """
    if len(name.encode()) >= IFNAMSIZ:
        raise ValueError(f"TUN name {name!r} longer than {IFNAMSIZ - 1} bytes")
    flags = IFF_TUN | IFF_NO_PI | (IFF_MULTI_QUEUE if multi_queue else 0) | (IFF_VNET_HDR if vnet_hdr else 0)
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC | (os.O_NONBLOCK if nonblocking else 0))
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), flags))
    except OSError:
        os.close(fd)
        raise
    return fd


def set_offload(fd: int, flags: int) -> None:
    """Tell the kernel which offloads the reader handles (TUN_F_CSUM, TUN_F_TSO4...). With TSO4 the
    kernel stops segmenting TCP for this device: one read returns up to 64 KiB of one TCP stream."""
    fcntl.ioctl(fd, TUNSETOFFLOAD, flags)


def set_persist(fd: int, on: bool = True) -> None:
    """Keep the device (address, routes) when the last descriptor closes, so a restart re-attaches."""
    fcntl.ioctl(fd, TUNSETPERSIST, int(on))
