"""`kubectl exec` over the WebSocket protocol kubectl 1.30+ speaks first (v5.channel.k8s.io, then v4).

Every binary message starts with a channel byte: 0 stdin, 1 stdout, 2 stderr, 3 the error channel (one JSON
Status at the end: Success, or the exit code as a NonZeroExitCode cause), 4 terminal resize ({"Width",
"Height"}); v5 adds 255, "close channel N" (kubectl's end of stdin). The command runs in the pod's network
namespace (`ip netns exec`), argv as a list, never through a shell; with a TTY it gets a pseudo-terminal.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import json
import logging
import os
import pty
import struct
import termios
from typing import Any

from aiohttp import WSMsgType, web

from podnet.net import netns

log = logging.getLogger("podnet.apiserver.exec")

PROTOCOLS = ("v5.channel.k8s.io", "v4.channel.k8s.io")
STDIN, STDOUT, STDERR, ERROR, RESIZE, CLOSE = 0, 1, 2, 3, 4, 255


def exit_status(code: int) -> dict[str, Any]:
    if code == 0:
        return {"metadata": {}, "status": "Success"}
    return {"metadata": {}, "status": "Failure", "reason": "NonZeroExitCode",
            "message": f"command terminated with non-zero exit code: exit status {code}",
            "details": {"causes": [{"reason": "ExitCode", "message": str(code)}]}}


def _failure(message: str) -> dict[str, Any]:
    return {"metadata": {}, "status": "Failure", "reason": "InternalError", "message": message}


async def pod_exec(request: web.Request, pod_netns: str) -> web.WebSocketResponse:
    q = request.query
    argv = q.getall("command", [])
    want_stdin = q.get("stdin") in ("true", "1")
    tty = q.get("tty") in ("true", "1")
    ws = web.WebSocketResponse(protocols=PROTOCOLS, max_msg_size=4 * 1024 * 1024)
    await ws.prepare(request)
    v5 = ws.ws_protocol == PROTOCOLS[0]

    async def send(channel: int, data: bytes) -> None:
        if not ws.closed:
            await ws.send_bytes(bytes([channel]) + data)

    if not argv:
        await send(ERROR, json.dumps(_failure("you must specify at least one command for the container")).encode())
        await ws.close()
        return ws
    if not netns.exists(pod_netns):
        await send(ERROR, json.dumps(_failure("the pod's network namespace is gone")).encode())
        await ws.close()
        return ws
    full = netns.exec_argv(pod_netns, argv)
    master = None
    try:
        if tty:
            master, slave = pty.openpty()
            proc = await asyncio.create_subprocess_exec(*full, stdin=slave, stdout=slave, stderr=slave,
                                                        start_new_session=True)
            os.close(slave)
        else:
            proc = await asyncio.create_subprocess_exec(
                *full, stdin=asyncio.subprocess.PIPE if want_stdin else asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    except OSError as e:
        await send(ERROR, json.dumps(_failure(f"could not start {argv[0]!r}: {e.strerror}")).encode())
        await ws.close()
        return ws

    loop = asyncio.get_running_loop()

    async def pump(reader: asyncio.StreamReader | None, channel: int) -> None:
        if reader is None:
            return
        while chunk := await reader.read(65536):
            await send(channel, chunk)

    async def pump_pty(fd: int) -> None:
        while True:
            try:
                chunk = await loop.run_in_executor(None, os.read, fd, 65536)
            except OSError:  # EIO: the terminal's last holder exited
                return
            if not chunk:
                return
            await send(STDOUT, chunk)

    async def from_client() -> None:
        async for msg in ws:
            if msg.type != WSMsgType.BINARY or not msg.data:
                continue
            channel, data = msg.data[0], msg.data[1:]
            if channel == STDIN:
                if master is not None:
                    os.write(master, data)
                elif proc.stdin is not None:
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            elif channel == RESIZE and master is not None:
                with contextlib.suppress(ValueError, KeyError, OSError):
                    size = json.loads(data)
                    fcntl.ioctl(master, termios.TIOCSWINSZ, struct.pack("HHHH", size["Height"], size["Width"], 0, 0))
            elif channel == CLOSE and v5 and data[:1] == bytes([STDIN]):
                if proc.stdin is not None:
                    proc.stdin.close()
                elif master is not None:
                    os.write(master, b"\x04")  # ^D: end of input on a terminal

    client = asyncio.ensure_future(from_client())
    try:
        if master is not None:
            outputs = [asyncio.ensure_future(pump_pty(master))]
        else:
            outputs = [asyncio.ensure_future(pump(proc.stdout, STDOUT)),
                       asyncio.ensure_future(pump(proc.stderr, STDERR))]
        code = await proc.wait()
        await asyncio.wait(outputs, timeout=2)
        await send(ERROR, json.dumps(exit_status(code)).encode())
    finally:
        client.cancel()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        if master is not None:
            os.close(master)
        await ws.close()
    return ws
