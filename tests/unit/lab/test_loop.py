"""change_loop runs its round once per burst of changes, and again only when something changes."""

from __future__ import annotations

import threading

from podnet.lab.loop import change_loop


def test_one_change_one_round_no_spinning() -> None:
    changed, stop = threading.Event(), threading.Event()
    calls: list[int] = []
    first = threading.Event()

    def round_() -> bool:
        calls.append(1)
        first.set()
        return True

    t = threading.Thread(target=change_loop, args=(changed, round_, stop), daemon=True)
    t.start()
    try:
        changed.set()  # an informer handler noted work, once
        assert first.wait(10)
        stop.wait(0.3)  # an event left set used to rerun the round every 5 ms: ~60 times here
        assert len(calls) == 1
        first.clear()
        changed.set()  # the next change is not lost
        assert first.wait(10) and len(calls) == 2
    finally:
        stop.set()
        t.join(5)
