"""`consumers.runtime.sink.run_all`: the transactional calls of a checkpoint run in parallel
on kept threads, each bounded by a deadline; a call that hangs never blocks a later one."""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import partial

from consumers.runtime.sink import _Hung, run_all


def test_calls_run_in_parallel_and_hand_back_results_and_errors() -> None:
    everyone_started = threading.Barrier(3, timeout=5)

    def call(n: int) -> int:
        everyone_started.wait()  # passes only if all three run at once
        if n == 2:
            raise ValueError("boom")
        return n * 10

    calls: dict[int, Callable[[], int]] = {n: partial(call, n) for n in range(3)}
    outcomes = run_all(calls, deadline_s=10)
    assert outcomes[0] == 0 and outcomes[1] == 10
    assert isinstance(outcomes[2], ValueError) and str(outcomes[2]) == "boom"
    assert list(outcomes) == [0, 1, 2]


def test_a_hung_call_is_abandoned_and_its_thread_never_given_another() -> None:
    release = threading.Event()
    try:
        calls: dict[int, Callable[[], object]] = {0: release.wait, 1: lambda: "done"}
        first = run_all(calls, deadline_s=0.2)
        assert isinstance(first[0], _Hung) and first[1] == "done"
        # The stuck thread still waits: every later call must run elsewhere.
        for _ in range(3):
            assert run_all({0: lambda: 1, 1: lambda: 2}, deadline_s=5) == {0: 1, 1: 2}
    finally:
        release.set()


def test_giving_up_stops_the_wait_at_once() -> None:
    release = threading.Event()
    give_up = threading.Event()
    ticks: list[int] = []

    def tick() -> None:
        ticks.append(1)
        if len(ticks) == 2:
            give_up.set()

    try:
        outcome = run_all({0: release.wait}, deadline_s=30, give_up=give_up, tick=tick)
        assert isinstance(outcome[0], _Hung) and "lost" in str(outcome[0])
    finally:
        release.set()
