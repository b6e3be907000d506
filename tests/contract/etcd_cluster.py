"""Start and stop throw-away etcd servers (1 or 3 members) on 127.0.0.1 for tests and benchmarks.

Every member gets free ports and a temporary data directory (on /dev/shm when it exists: etcd fsyncs
every write, and tmpfs makes that free). Members are stopped by pid, never by name. Each child is also
started through `setpriv --pdeathsig KILL` (util-linux), so a crashed or killed pytest cannot leave etcd
servers behind; close() is still the normal way out, and an atexit hook covers clusters a test forgot.
(Not a preexec_fn: forking a process that runs gRPC threads and then running Python in the child
aborts in gRPC's fork handlers.)
"""

from __future__ import annotations

import atexit
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

ETCD_BIN = shutil.which("etcd") or "/usr/bin/etcd"
SETPRIV = shutil.which("setpriv")
_LIVE: set[EtcdCluster] = set()


def etcd_available() -> bool:
    return os.access(ETCD_BIN, os.X_OK)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class TlsFiles:
    """PEM files for a TLS cluster: the CA that signed the server cert, and a client cert/key."""

    cafile: str
    server_cert: str
    server_key: str
    client_cert: str
    client_key: str


@dataclass
class Member:
    name: str
    client_port: int
    peer_port: int
    data_dir: Path
    log_path: Path
    proc: subprocess.Popen[bytes] | None = None

    @property
    def endpoint(self) -> str:
        return f"127.0.0.1:{self.client_port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


@dataclass
class EtcdCluster:
    """size members on loopback. start() blocks until every member reports a healthy cluster."""

    size: int = 1
    tls: TlsFiles | None = None
    heartbeat_ms: int = 100
    election_ms: int = 1000
    extra_args: list[str] = field(default_factory=list)
    base_dir: str | None = None  # where the temporary data dirs go (default /dev/shm, else the tmp dir)
    members: list[Member] = field(default_factory=list)
    workdir: Path | None = None

    def __hash__(self) -> int:
        return id(self)

    # --- addresses -------------------------------------------------------------------------------------

    @property
    def endpoints(self) -> str:
        return ",".join(m.endpoint for m in self.members)

    @property
    def url(self) -> str:
        return f"etcd://{self.endpoints}"

    def _scheme(self) -> str:
        return "https" if self.tls else "http"

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self, timeout: float = 20.0, attempts: int = 3) -> EtcdCluster:
        """Start the members; a port that free_port() found free can be taken before etcd binds it (by
        another process's outgoing connection), so a cluster whose member lost that race is made again on
        new ports, up to `attempts` times."""
        for attempt in range(attempts):
            try:
                return self._start(timeout)
            except RuntimeError as e:
                if "address already in use" not in str(e) or attempt == attempts - 1:
                    raise
        raise AssertionError("unreachable")

    def _start(self, timeout: float) -> EtcdCluster:
        base = self.base_dir or ("/dev/shm" if os.path.isdir("/dev/shm") else None)
        self.workdir = Path(tempfile.mkdtemp(prefix="pn-etcd-", dir=base))
        _LIVE.add(self)
        self.members = [
            Member(
                name=f"m{i}",
                client_port=free_port(),
                peer_port=free_port(),
                data_dir=self.workdir / f"m{i}.etcd",
                log_path=self.workdir / f"m{i}.log",
            )
            for i in range(self.size)
        ]
        try:
            for i in range(self.size):
                self.start_member(i, wait=False)
            self.wait_healthy(timeout)
        except BaseException:
            self.close()
            raise
        return self

    def _argv(self, m: Member) -> list[str]:
        s = self._scheme()
        initial = ",".join(f"{x.name}=http://127.0.0.1:{x.peer_port}" for x in self.members)
        # the kernel kills etcd when the thread that started it dies
        argv = [SETPRIV, "--pdeathsig", "KILL", "--"] if SETPRIV else []
        argv += [
            ETCD_BIN,
            f"--name={m.name}",
            f"--data-dir={m.data_dir}",
            f"--listen-client-urls={s}://127.0.0.1:{m.client_port}",
            f"--advertise-client-urls={s}://127.0.0.1:{m.client_port}",
            f"--listen-peer-urls=http://127.0.0.1:{m.peer_port}",
            f"--initial-advertise-peer-urls=http://127.0.0.1:{m.peer_port}",
            f"--initial-cluster={initial}",
            "--initial-cluster-state=new",
            f"--initial-cluster-token=pn-{os.getpid()}-{id(self):x}",
            f"--heartbeat-interval={self.heartbeat_ms}",
            f"--election-timeout={self.election_ms}",
            "--logger=zap",
            "--log-level=warn",
            "--enable-v2=false",
            *self.extra_args,
        ]
        if self.tls:
            argv += [
                f"--cert-file={self.tls.server_cert}",
                f"--key-file={self.tls.server_key}",
                f"--trusted-ca-file={self.tls.cafile}",
                "--client-cert-auth",
            ]
        return argv

    def start_member(self, i: int, *, wait: bool = True, timeout: float = 15.0) -> None:
        """(Re)start member i with its data dir, so a restarted member rejoins with its state."""
        m = self.members[i]
        if m.running:
            return
        log = open(m.log_path, "ab")  # noqa: SIM115 - the child owns the fd
        try:
            m.proc = subprocess.Popen(
                self._argv(m),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        finally:
            log.close()
        if wait:
            self.wait_member(i, timeout)

    def kill_member(self, i: int) -> None:
        """SIGKILL member i by pid (a crash, not a clean shutdown) and reap it."""
        m = self.members[i]
        if m.proc is not None and m.proc.poll() is None:
            m.proc.kill()
            m.proc.wait(10)
        m.proc = None

    def kill_all(self) -> None:
        for i in range(len(self.members)):
            self.kill_member(i)

    def restart_all(self, timeout: float = 20.0) -> None:
        for i in range(len(self.members)):
            self.start_member(i, wait=False)
        self.wait_healthy(timeout)

    def close(self) -> None:
        try:
            self.kill_all()
        finally:
            if self.workdir is not None:
                shutil.rmtree(self.workdir, ignore_errors=True)
                self.workdir = None
            _LIVE.discard(self)

    def __enter__(self) -> EtcdCluster:
        return self.start() if not self.members else self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- health --------------------------------------------------------------------------------------

    def _health(self, m: Member) -> bool:
        import ssl

        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls.cafile)
            ctx.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        try:
            url = f"{self._scheme()}://127.0.0.1:{m.client_port}/health"
            with urllib.request.urlopen(url, timeout=1, context=ctx) as r:  # noqa: S310 - loopback only
                return json.loads(r.read()).get("health") == "true"
        except (OSError, ValueError):
            return False

    def _status(self, m: Member) -> dict[str, object]:
        """etcd's /v3/maintenance/status through its JSON gateway (member_id and leader are strings)."""
        import ssl

        ctx = None
        if self.tls:
            ctx = ssl.create_default_context(cafile=self.tls.cafile)
            ctx.load_cert_chain(self.tls.client_cert, self.tls.client_key)
        req = urllib.request.Request(
            f"{self._scheme()}://127.0.0.1:{m.client_port}/v3/maintenance/status", data=b"{}", method="POST"
        )
        with urllib.request.urlopen(req, timeout=2, context=ctx) as r:  # noqa: S310 - loopback only
            return dict(json.loads(r.read()))

    def leader(self, timeout: float = 10.0) -> int:
        """Index of the current leader among running members (waits for an election to finish)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ids: dict[int, int] = {}
            leader_id = 0
            for i, m in enumerate(self.members):
                if not m.running:
                    continue
                try:
                    st = self._status(m)
                except (OSError, ValueError):
                    continue
                header = st.get("header")
                ids[int(header["member_id"])] = i  # type: ignore[index]
                leader_id = int(str(st.get("leader", 0))) or leader_id
            if leader_id in ids:
                return ids[leader_id]
            time.sleep(0.1)
        raise TimeoutError(f"no etcd leader among running members after {timeout}s")

    def etcdctl(self, *args: str) -> str:
        """Run etcdctl (v3 API) against this cluster; for test setup such as users and auth."""
        argv = [shutil.which("etcdctl") or "/usr/bin/etcdctl", f"--endpoints={self.endpoints}"]
        if self.tls:
            argv += [f"--cacert={self.tls.cafile}", f"--cert={self.tls.client_cert}", f"--key={self.tls.client_key}"]
        out = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=30,
                             env={**os.environ, "ETCDCTL_API": "3"})
        if out.returncode != 0:
            raise RuntimeError(f"etcdctl {' '.join(args)}: {out.stderr.strip()}")
        return out.stdout

    def _check_alive(self, m: Member) -> None:
        if m.proc is not None and m.proc.poll() is not None:
            tail = m.log_path.read_text(errors="replace")[-2000:] if m.log_path.exists() else ""
            raise RuntimeError(f"etcd member {m.name} exited with {m.proc.returncode}:\n{tail}")

    def wait_member(self, i: int, timeout: float = 15.0) -> None:
        m = self.members[i]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check_alive(m)
            if self._health(m):
                return
            time.sleep(0.05)
        raise TimeoutError(f"etcd member {m.name} not healthy after {timeout}s (log {m.log_path})")

    def wait_healthy(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for i in range(len(self.members)):
            self.wait_member(i, max(0.1, deadline - time.monotonic()))


@atexit.register
def _close_leftovers() -> None:
    for c in list(_LIVE):
        c.close()


def make_tls_files(directory: str | os.PathLike[str]) -> TlsFiles:
    """A throw-away CA, a server cert for 127.0.0.1 and a client cert, made with the openssl CLI."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=d)

    run("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
        "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=pn-test-ca")
    (d / "server.ext").write_text(
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n"
    )
    (d / "client.ext").write_text("extendedKeyUsage=clientAuth\n")
    for who in ("server", "client"):
        run("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", f"{who}.key", "-out", f"{who}.csr", "-subj", f"/CN=pn-test-{who}")
        run("x509", "-req", "-in", f"{who}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{who}.pem", "-days", "2", "-extfile", f"{who}.ext")
    return TlsFiles(
        cafile=str(d / "ca.pem"),
        server_cert=str(d / "server.pem"),
        server_key=str(d / "server.key"),
        client_cert=str(d / "client.pem"),
        client_key=str(d / "client.key"),
    )
