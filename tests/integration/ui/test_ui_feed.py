"""The page's API client against a real `podnet apiserver` (over a throw-away store; no root, no lab):
it lists and follows objects, and after the server was down while history was compacted it lists again
(410 Gone) and holds exactly what the store holds."""

from __future__ import annotations

import asyncio
import json
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from podnet.store import keys, open_store
from podnet.ui import feed

PODNET = str(Path(sys.executable).with_name("podnet"))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    def __init__(self, d: Path) -> None:
        self.d = d
        self.store_url = f"sqlite:///{d}/state.db"
        self.port = _free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = (self.d / "apiserver.log").open("ab")
        self.proc = subprocess.Popen([PODNET, "--store", self.store_url, "apiserver", "--listen",
                                      f"127.0.0.1:{self.port}", "--cert-dir", str(self.d / "pki")],
                                     stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.d / "apiserver.log").read_text()
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        raise AssertionError("podnet apiserver did not listen")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None

    def target(self) -> feed.ApiTarget:
        pki = self.d / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return feed.ApiTarget(f"https://127.0.0.1:{self.port}", ctx)

    def put_pod(self, name: str) -> None:
        obj = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "namespace": "default",
                                                               "uid": f"uid-{name}"},
               "spec": {"containers": [{"name": "c"}]}}
        r = subprocess.run([PODNET, "--store", self.store_url, "apply", "-f", "-"], input=json.dumps(obj),
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

    def delete_pod(self, name: str) -> None:
        s = open_store(self.store_url)
        try:
            assert s.delete(keys.resource("Pod", "default", name))
        finally:
            s.close()

    def compact(self) -> None:
        s = open_store(self.store_url)
        try:
            s.compact(s.revision())
        finally:
            s.close()


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    srv.start()
    try:
        yield srv
    finally:
        srv.stop()


async def _until(fn, what: str, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not fn():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout:.0f} s")
        await asyncio.sleep(0.05)


def test_follows_objects_and_relists_after_a_compacted_gap(server: Server) -> None:
    server.put_pod("a")

    async def main() -> None:
        changes: list[str] = []
        f = feed.ApiFeed(server.target(), changes.append)
        task = asyncio.create_task(f.run())
        loop = asyncio.get_running_loop()
        try:
            await _until(lambda: f.connected and "default/a" in f.objects["Pod"], "the first list")
            assert f.objects["Node"] == {} and set(f.synced.values()) == {True}
            await loop.run_in_executor(None, server.put_pod, "b")
            await _until(lambda: "default/b" in f.objects["Pod"], "a pod created after the list")
            await loop.run_in_executor(None, server.delete_pod, "a")
            await _until(lambda: "default/a" not in f.objects["Pod"], "a deleted pod")
            assert "Pod" in changes
            lists = f.relists

            # down: what changes meanwhile is compacted away, so the resumed watch is answered 410
            await loop.run_in_executor(None, server.stop)
            await _until(lambda: "Pod" in f.errors, "the feed noticing the server is gone")
            assert not f.connected
            await loop.run_in_executor(None, server.put_pod, "c")
            await loop.run_in_executor(None, server.delete_pod, "b")
            await loop.run_in_executor(None, server.compact)
            await loop.run_in_executor(None, server.start)
            await _until(lambda: f.connected and set(f.objects["Pod"]) == {"default/c"}, "the state after the gap")
            assert f.relists > lists  # listed again, not patched up from the watch
        finally:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    asyncio.run(asyncio.wait_for(main(), 120))
