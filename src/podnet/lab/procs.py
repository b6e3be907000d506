"""Start and stop the lab's processes by pid, never by name.

A pid alone is not proof of identity (pids are reused), so each record also keeps the process's start
time from /proc/<pid>/stat; stop() only signals a pid whose start time still matches.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class ProcRecord:
    pid: int
    start_time: int  # field 22 of /proc/<pid>/stat, in clock ticks since boot
    argv: list[str]
    log: str

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def start_time_of(pid: int) -> int | None:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return int(fields[19])


def alive(rec: ProcRecord) -> bool:
    st = start_time_of(rec.pid)
    if st is None or st != rec.start_time:
        return False
    try:
        state = Path(f"/proc/{rec.pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def spawn(argv: Sequence[str], log: str | Path, *, env: dict[str, str] | None = None,
          nice: int | None = None) -> ProcRecord:
    """Start argv detached (own session, so a terminal's Ctrl-C does not reach it), output to log.

    nice: the new process's niceness (None: ours). Set from here, just after the start, rather than in
    the child before exec (preexec_fn is unsafe in a threaded parent, and agents have threads).
    """
    Path(log).parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab", buffering=0) as out:
        p = subprocess.Popen(
            list(argv), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
            start_new_session=True, env=env, close_fds=True,
        )
    if nice is not None:
        set_nice(p.pid, nice)
    st = start_time_of(p.pid) or 0
    return ProcRecord(p.pid, st, list(argv), str(log))


def set_nice(pid: int, nice: int) -> None:
    """Set a process's niceness (0 = self). Best effort: without CAP_SYS_NICE it stays as it was.

    With autogroup scheduling (kernel.sched_autogroup_enabled, the default) the CPU is first shared
    fairly between sessions, and a process's nice only counts inside its own session. Our processes each
    lead a session (spawn's start_new_session), so the session's autogroup gets the same nice
    (sched(7), /proc/PID/autogroup). Only then: a process in someone else's session is left to them.
    """
    target = pid or os.getpid()
    try:
        os.setpriority(os.PRIO_PROCESS, target, nice)
        if os.getsid(target) == target:
            Path(f"/proc/{target}/autogroup").write_text(f"{nice}\n")
    except OSError:  # not root, already gone, or a kernel without autogroups
        pass


def stop(rec: ProcRecord, *, timeout: float = 3.0) -> None:
    """SIGTERM the recorded process (and its process group), SIGKILL after timeout."""
    stop_all([rec], timeout=timeout)


def stop_all(recs: Sequence[ProcRecord], *, timeout: float = 3.0) -> None:
    """Stop several processes at once: SIGTERM to each (and its group), then wait for all of them, and
    SIGKILL whoever is left after timeout. Their exits overlap, so stopping n processes costs the
    slowest one's exit rather than the sum of all (a lab's dozen agents: ~0.4 s instead of seconds)."""
    pending = [r for r in recs if alive(r)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for rec in pending:
            _signal(rec, sig)
        deadline = time.monotonic() + timeout
        while pending and time.monotonic() < deadline:
            for rec in [r for r in pending if not alive(r)]:
                _reap(rec.pid)
                pending.remove(rec)
            if pending:
                time.sleep(0.02)
        if not pending:
            return
    for rec in pending:
        _reap(rec.pid)


def _signal(rec: ProcRecord, sig: signal.Signals) -> None:
    try:
        os.killpg(rec.pid, sig)  # the group: `ip netns exec` execs, but children may have forked
    except (ProcessLookupError, PermissionError):
        try:
            os.kill(rec.pid, sig)
        except ProcessLookupError:
            pass


def _reap(pid: int) -> None:
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass


def wait(pid: int) -> None:
    """Block until our child pid exits and reap it (for a child we start and do not otherwise watch)."""
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass
