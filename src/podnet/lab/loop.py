"""The lab daemons' reconcile loop: run a round whenever an informer's handler noted dirty work, retrying
what failed. The round always recomputes from its cache, so a lost event costs nothing but a re-list."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)


def change_loop(
    changed: threading.Event, fn: Callable[[], bool], stop: threading.Event,
    *, debounce: float = 0.005, retry: tuple[float, float] = (0.05, 1.0),
) -> None:
    """Run fn() whenever `changed` is set (by an informer's handler that noted dirty work), until stop.

    fn returns False when some of its work must be retried (a lost race, an error): it runs again after
    a pause that doubles from retry[0] up to retry[1], so a conflict that persists costs little, while
    a conflict that the next watch event resolves is retried at once when that event sets `changed`.
    A short debounce lets the events of one commit (a pod and its slices) arrive together. The loop
    clears `changed` before each fn(): a change during fn() sets it again and is seen by the next round,
    and an event left set would spin the loop (once every debounce) for nothing.
    """
    def wake_on_stop() -> None:
        stop.wait()
        changed.set()

    threading.Thread(target=wake_on_stop, daemon=True).start()
    pause = retry[0]
    while not stop.is_set():
        changed.wait()
        if stop.is_set():
            break
        stop.wait(debounce)
        changed.clear()
        try:
            ok = fn()
        except Exception:  # fn should catch its own; this loop must outlive anything
            log.exception("reconcile failed; retrying")
            ok = False
        if ok:
            pause = retry[0]
            continue
        if changed.wait(pause) and not stop.is_set():
            pause = retry[0]
            continue
        changed.set()  # nothing new arrived: retry anyway
        pause = min(pause * 2, retry[1])
