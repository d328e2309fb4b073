"""The demo's input feed: the simulation into the input topics and the recording.

Three rules shape what goes out when:

* pacing: the warm-up (see `consumers.demo.plan`) goes at `MAX_SPEED`, the rest at the speed
  that ends the run on its deadline; the speed is planned again after every pause;
* back-pressure: while a worker is further behind what was published than its `MAX_LAG`,
  publishing pauses, so the view shows live processing rather than a growing backlog;
* alignment: an order-flow event waits (FIFO, `engine.alignment.HoldQueue`) until the
  market worker's instrument risk for its symbol has gone past the event's time, as seen on
  `risk.instruments`, or the market worker has been current (less than `CURRENT_LAG`
  behind) for `HOLD_MAX_WAIT_S` while it waited (a symbol that went quiet). The order worker
  holds orders for the same reason (the runtime's event-time join) and reads instrument risk
  as of each order's event time from a short history per symbol; an order that arrives long
  after its instrument's risk (the history has moved on) is denied MISSING_REFERENCE_DATA.
  Holding here as well keeps both workers close behind the feed, so the view shows live
  decisions rather than a backlog released at once.

The recording is written in publishing order, so it is exactly the stream the workers saw.

`Feed` knows nothing of Kafka: it is given a `publish(topic, key, value, ts_ms)` function.

>>> from producers.simulator import SimConfig, Simulation
>>> sent = []
>>> feed = Feed(publish=lambda t, k, v, ms: sent.append(t), mark=lambda s: 2**62,
...             lags=dict, tick=lambda: None, stopped=lambda: False,
...             deadline=0.0, status=None)
>>> sim = Simulation(SimConfig(seed=1, instruments=2, accounts=2, duration_s=2))
>>> feed.run(sim, warm_end_ns=2**62, end_ns=sim.config.start_ns) == len(sent) > 0
True
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from consumers.demo.plan import MAX_SPEED, NS, LivePacer, live_speed
from engine.alignment import HoldQueue
from producers.simulator import SimEvent
from schemas.codec import encode
from schemas.common import Envelope

if TYPE_CHECKING:
    from consumers.demo.view import RunStatus

MAX_LAG = {"market-worker": 400, "order-worker": 300}
"""Events a worker may be behind before publishing pauses. Both are small: the instrument
table must move in steps shorter than the order worker's history per instrument (64
versions), and orders the order worker decides late meet a history that has moved on."""
CURRENT_LAG = 400
SHOW_PAUSE_S = 1.0  # shorter pauses (a checkpoint not yet committed) are not worth a label
HOLD_MAX_WAIT_S = 2.0
POLL_S = 0.05

Publish = Callable[[str, str | None, bytes, int], None]


@dataclass(frozen=True)
class Held:
    topic: str
    key: str | None
    event: Envelope
    needs: tuple[str, ...]


def _needs(event: Envelope) -> tuple[str, ...]:
    symbol = getattr(event, "symbol", None)
    return (symbol,) if isinstance(symbol, str) else ()


class Feed:
    """Publishes a simulation under the rules of the module docstring."""

    def __init__(self, *, publish: Publish, mark: Callable[[str], int | None],
                 lags: Callable[[], dict[str, int]], tick: Callable[[], None],
                 stopped: Callable[[], bool], deadline: float, status: RunStatus | None,
                 idle: Callable[[float], None] = time.sleep,
                 hold_max_wait_s: float = HOLD_MAX_WAIT_S) -> None:
        self.publish = publish
        self.lags = lags
        self.tick = tick
        self.stopped = stopped
        self.deadline = deadline
        self.status = status
        self.idle = idle
        self.sent = 0
        self.paused_s = 0.0
        # The hold's clock runs only while the market worker is current: a slow market
        # worker must not make orders time out of the hold.
        self.hold_clock_ns = 0
        self._clock_at = time.monotonic_ns()
        self.hold: HoldQueue[Held] = HoldQueue(
            ts_of=lambda h: h.event.ts_event, needs=lambda h: h.needs, watermark=mark,
            max_wait_ns=round(hold_max_wait_s * NS))

    def run(self, sim: Iterable[SimEvent], *, warm_end_ns: int, end_ns: int) -> int:
        """Publish the whole simulation (until `stopped()`); returns the number sent."""
        pacer: LivePacer | None = None
        live = False
        for topic, key, event in sim:
            if self.stopped():
                return self.sent
            ts = event.ts_event
            if pacer is None or (not live and ts >= warm_end_ns):
                live = ts >= warm_end_ns
                pacer = self._pacer(ts, end_ns, live)
            if self._wait(pacer.due(ts)):
                pacer = self._pacer(ts, end_ns, live)  # paused: plan the rest again
            if topic == "orders":
                self.hold.offer(Held(topic, key, event, _needs(event)), self.hold_clock_ns)
            else:
                self._send(topic, key, event)
            self._release()
            self.tick()
        while len(self.hold) and not self.stopped():  # the max wait bounds this
            self._release()
            self.tick()
            if len(self.hold):
                self.idle(POLL_S)
        return self.sent

    def _pacer(self, ts: int, end_ns: int, live: bool) -> LivePacer:
        now = time.monotonic()
        speed = live_speed((end_ns - ts) / NS, self.deadline - now) if live else MAX_SPEED
        if self.status is not None:
            self.status.phase = "live" if live else "warm-up"
            self.status.speed = speed
        return LivePacer(ts, now, speed)

    def _wait(self, due: float) -> bool:
        """Wait for `due` and for the market worker; True if it had to pause for the
        worker (the pacing is then planned again)."""
        paused = False
        while not self.stopped():
            lags = self.lags()
            if any(lag > MAX_LAG.get(name, MAX_LAG["market-worker"])
                   for name, lag in lags.items()):
                if not paused:
                    paused, began = True, time.monotonic()
                elif time.monotonic() - began > SHOW_PAUSE_S:
                    self._phase("catching up")
            else:
                ahead = due - time.monotonic()
                if ahead <= 0.002 and not paused:  # sleeping less costs more than it saves
                    return False
                if paused:
                    self.paused_s += time.monotonic() - began
                    return True
                self.idle(min(ahead, POLL_S))
                self._release()
                self.tick()
                continue
            self.idle(POLL_S)
            self._release()
            self.tick()
        return paused

    def _phase(self, phase: str) -> None:
        if self.status is not None:
            self.status.phase = phase

    def _release(self) -> None:
        now = time.monotonic_ns()
        if self.lags().get("market-worker", 0) < CURRENT_LAG:
            self.hold_clock_ns += now - self._clock_at
        self._clock_at = now
        for held in self.hold.release(self.hold_clock_ns):
            self._send(held.topic, held.key, held.event)

    def send(self, topic: str, key: str | None, event: Envelope) -> None:
        """Publish one event now, outside the simulation (counted like the others)."""
        self._send(topic, key, event)

    def _send(self, topic: str, key: str | None, event: Envelope) -> None:
        self.publish(topic, key, encode(event), event.ts_event // 1_000_000)
        self.sent += 1
        status = self.status
        if status is not None:
            status.published += 1
            status.published_by_topic[topic] += 1
            if status.sim_now_ns is None or event.ts_event > status.sim_now_ns:
                status.sim_now_ns = event.ts_event

    def stats(self) -> dict[str, Any]:
        s = self.hold.stats
        return {"orders_aligned": s.released_aligned, "orders_by_timeout": s.released_by_timeout,
                "max_held": s.max_held, "paused_s": self.paused_s}
