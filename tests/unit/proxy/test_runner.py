"""The bounded-frequency runner on a fake clock: coalescing, min/max interval, retries (no test sleeps)."""

from __future__ import annotations

import pytest

from podnet.proxy.runner import BoundedFrequencyRunner


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def monotonic(self) -> float:
        return self.now


class Recorder:
    def __init__(self, complete: bool = True) -> None:
        self.calls: list[tuple[float, bool]] = []
        self.complete = complete
        self.clock: FakeClock | None = None

    def __call__(self, overdue: bool) -> bool:
        assert self.clock is not None
        self.calls.append((self.clock.now, overdue))
        return self.complete


def make(min_interval: float = 1.0, max_interval: float = 30.0, complete: bool = True
         ) -> tuple[BoundedFrequencyRunner, FakeClock, Recorder]:
    clock, fn = FakeClock(), Recorder(complete)
    fn.clock = clock
    return BoundedFrequencyRunner(fn, min_interval=min_interval, max_interval=max_interval, clock=clock), clock, fn


def test_first_run_is_due_at_once_and_overdue() -> None:
    r, clock, fn = make()
    r.tick()
    assert fn.calls == [(100.0, True)]


def test_requests_coalesce_into_one_run() -> None:
    r, clock, fn = make(min_interval=0)
    r.tick()
    for _ in range(5):
        r.run()
    clock.now += 0.1
    r.tick()
    r.tick()
    assert fn.calls == [(100.0, True), (100.1, False)]


def test_min_interval_delays_a_request_and_says_for_how_long() -> None:
    r, clock, fn = make(min_interval=2.0)
    r.tick()
    clock.now += 0.5
    r.run()
    assert r.tick() == pytest.approx(1.5)
    assert len(fn.calls) == 1
    clock.now += 1.5
    r.tick()
    assert fn.calls[-1] == (102.0, False)


def test_max_interval_runs_without_requests_and_restarts_after_a_complete_run() -> None:
    r, clock, fn = make(max_interval=30.0)
    r.tick()
    clock.now += 29.0
    assert r.tick() == pytest.approx(1.0) and len(fn.calls) == 1
    clock.now += 1.0
    r.tick()
    assert fn.calls[-1] == (130.0, True)


def test_incomplete_runs_do_not_postpone_the_max_interval_run() -> None:
    r, clock, fn = make(max_interval=30.0)
    r.tick()  # complete: the next overdue run is at 130
    fn.complete = False
    clock.now = 120.0
    r.run()
    r.tick()
    assert fn.calls[-1] == (120.0, False)
    clock.now = 130.0
    r.tick()
    assert fn.calls[-1] == (130.0, True)


def test_retry_after_holds_requests_until_the_retry_is_due() -> None:
    r, clock, fn = make(min_interval=0.0)
    r.tick()
    r.retry_after(4.0)
    assert r.retrying
    clock.now += 1.0
    r.run()
    assert r.tick() == pytest.approx(3.0) and len(fn.calls) == 1
    clock.now += 3.0
    r.tick()
    assert fn.calls[-1] == (104.0, True) and not r.retrying


def test_loop_runs_until_stopped() -> None:
    clock = FakeClock()
    calls: list[bool] = []

    def fn(overdue: bool) -> bool:
        calls.append(overdue)
        r.stop()
        return True

    r = BoundedFrequencyRunner(fn, min_interval=0, max_interval=30, clock=clock)
    r.loop()
    assert calls == [True] and r.stopped
