"""A level-triggered reconcile loop over the store: run fn() at start, after every burst of changes
under a prefix, and every resync seconds. fn always recomputes from the whole state, so a lost event or a
compacted watch costs nothing but a re-list."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

from podnet.store import CompactedError, Store, StoreError

log = logging.getLogger(__name__)


def reconcile_loop(
    store: Store, prefix: str, fn: Callable[[], None], stop: threading.Event,
    *, resync: float = 10.0, debounce: float = 0.01,
) -> None:
    changes: queue.Queue[int] = queue.Queue()

    def watcher() -> None:
        while not stop.is_set():
            try:
                rev = store.revision()
                w = store.watch(prefix, rev + 1)
                stop_watch = threading.Thread(target=lambda w=w: (stop.wait(), w.close()), daemon=True)
                stop_watch.start()
                changes.put(rev)  # something may have changed while no watch was open
                for ev in w:
                    changes.put(ev.revision)
            except CompactedError:
                continue
            except StoreError as e:
                log.warning("watch on %s failed: %s; retrying", prefix, e)
                stop.wait(0.5)

    threading.Thread(target=watcher, daemon=True, name=f"watch {prefix}").start()
    # Wake the loop at once on stop instead of at the next resync.
    threading.Thread(target=lambda: (stop.wait(), changes.put(-1)), daemon=True).start()
    while not stop.is_set():
        try:
            fn()
        except Exception:  # a bad object or a transient kernel error must not end the loop
            log.exception("reconcile failed; retrying")
            stop.wait(0.5)
        try:
            changes.get(timeout=resync)
            stop.wait(debounce)
            while True:
                changes.get_nowait()
        except queue.Empty:
            pass


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
    threading.Thread(target=lambda: (stop.wait(), changed.set()), daemon=True).start()
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
