"""When the proxy syncs: a bounded-frequency runner with an injected clock (kube-proxy's BoundedFrequencyRunner).

Changes arrive in bursts (a rolling update touches hundreds of EndpointSlices in a second); rewriting the rules
for each one would keep the kernel busy for nothing. So a change only *requests* a run (`run()`); requests
coalesce, and the function runs at most once per `min_interval` (minSyncPeriod) and at least once per
`max_interval` (syncPeriod). After a failure the caller asks for a `retry_after(seconds)`: requests made while
a retry is pending wait for it, so a failing kernel is not hammered.

kube-proxy restarts its max-interval timer after every run. podnet's periodic run is a full sync, and a partial
one must not postpone it: `fn` returns True when its run was complete (the timer restarts then), False when not
(a partial sync, or a failure).

The clock is injected: production waits on a condition with real timeouts; tests move a fake clock and call
`tick()`, which is the one place that decides whether to run, so no test sleeps.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

LONGEST_WAIT = 60.0  # wake at least this often, so a stopped runner or a stepped clock is noticed


class Clock(Protocol):
    def monotonic(self) -> float: ...


class MonotonicClock:
    def monotonic(self) -> float:
        return time.monotonic()


class BoundedFrequencyRunner:
    """Run `fn(overdue)` when asked, at most once per min_interval, at least once per max_interval.

    `overdue` tells fn why it runs: True when max_interval has passed (or a retry is due), False when only
    requests are pending. The first run is due at once.
    """

    def __init__(self, fn: Callable[[bool], bool], *, min_interval: float, max_interval: float,
                 clock: Clock | None = None, name: str = "sync-runner") -> None:
        self.fn = fn
        self.name = name
        self.min_interval = min_interval
        self.max_interval = max_interval
        self.clock: Clock = clock or MonotonicClock()
        self._cond = threading.Condition()
        self._pending = False
        self._retry_at: float | None = None
        self._last_start = float("-inf")
        self._next_max = float("-inf")
        self._stopped = False

    # ---- requests (any thread) --------------------------------------------------------------------------

    def run(self) -> None:
        """Ask for a run; many requests before it starts make one run."""
        with self._cond:
            self._pending = True
            self._cond.notify_all()

    def retry_after(self, seconds: float) -> None:
        """The next run happens `seconds` from now (not before, whatever is requested meanwhile)."""
        with self._cond:
            self._retry_at = self.clock.monotonic() + seconds
            self._cond.notify_all()

    @property
    def retrying(self) -> bool:
        with self._cond:
            return self._retry_at is not None

    def stop(self) -> None:
        with self._cond:
            self._stopped = True
            self._cond.notify_all()

    @property
    def stopped(self) -> bool:
        return self._stopped

    # ---- running ----------------------------------------------------------------------------------------

    def _decide(self, now: float) -> tuple[bool, bool, float]:
        """(run now, overdue, seconds until the next decision). Called with the lock held."""
        retry_at = self._retry_at
        retrying = retry_at is not None
        overdue = now >= self._next_max or (retry_at is not None and now >= retry_at)
        wanted = overdue or (self._pending and not retrying)
        earliest = self._last_start + self.min_interval
        if wanted and now >= earliest:
            return True, overdue, 0.0
        wake = self._next_max
        if retry_at is not None:
            wake = min(wake, retry_at)
        if wanted:
            wake = min(wake, earliest)
        return False, overdue, max(0.0, wake - now)

    def tick(self) -> float:
        """Run fn if it is due now (on this thread); returns the seconds until the next run may be due."""
        with self._cond:
            now = self.clock.monotonic()
            due, overdue, wait = self._decide(now)
            if not due:
                return wait
            self._pending = False
            self._retry_at = None
            self._last_start = now
        complete = self.fn(overdue)
        with self._cond:
            if complete:
                self._next_max = self.clock.monotonic() + self.max_interval
            return self._decide(self.clock.monotonic())[2]

    def loop(self) -> None:
        """tick() until stop(), sleeping on the condition in between (run() and stop() wake it)."""
        while not self._stopped:
            wait = self.tick()
            with self._cond:
                if self._stopped:
                    return
                if wait > 0 and not self._decide(self.clock.monotonic())[0]:
                    self._cond.wait(timeout=max(0.01, min(wait, LONGEST_WAIT)))
