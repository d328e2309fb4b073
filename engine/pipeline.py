"""The two-stage pipeline in-process: market risk feeding order risk, merged in event time.

Through Kafka the market worker publishes InstrumentRisk to `risk.instruments` and the order
worker reads that topic as a table, holding each order until the table has caught up with
the order's event time (`consumers.runtime.alignment`). `Pipeline` is the same thing without
a broker, and the reference the Kafka path is compared with:

1. `market` messages go through the market processor (an `engine.driver.EventRunner`, with
   the size cap, decoding, de-duplication and dead letters of a worker); every output is
   emitted, and its `risk.instruments` outputs also become table events of the order stage.
2. `orders` messages go to the order processor's runner; `risk.limits` and `risk.control`
   messages of the recording become table events of the order stage too. Other topics
   (including `risk.instruments` records already in the input: the market stage is the
   source of truth) are counted as ignored.
3. Table events and orders are merged by event time, stably (each keeps its file order),
   with table events first at equal times: an order at T sees every table event up to and
   including T and none after it, which is what the Kafka order worker's hold gives.

An output's event time is its cause's (DESIGN.md section 5), so the merge reads each
event's time from the message (`value.ts_event`) without decoding it twice. Recordings are
expected in event-time order (`simulate` and `record` write them so); the merge never looks
further ahead than the message just read, so where a file goes back in time its order wins.

What the order stage publishes to `orders` (MassCancel) is emitted, not fed back: through
Kafka the worker reads its own MassCancel back, which cancels nothing more (the orders were
removed when it was emitted) and produces no output.

>>> from producers.simulator import SimConfig, Simulation
>>> from schemas.recording import RecordedMessage
>>> sim = Simulation(SimConfig(seed=3, instruments=2, accounts=2, duration_s=20))
>>> messages = [RecordedMessage.from_event(e.topic, e.key, e.event) for e in sim]
>>> pipeline = Pipeline.default()
>>> result = pipeline.run(messages)
>>> result.events == len(messages), result.by_topic["risk.decisions"] > 0
(True, True)
"""

from __future__ import annotations

import dataclasses
from collections import Counter, deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from engine.driver import (
    DEFAULT_DEDUP_PER_KEY,
    DEFAULT_MAX_MESSAGE_BYTES,
    Driver,
    DriverResult,
    Emitted,
    EventRunner,
)
from engine.processor import Processor
from schemas.recording import RecordedMessage, RecordingWriter, read_recording

INSTRUMENTS = "risk.instruments"


def _ts_of(message: RecordedMessage) -> int:
    """Event time of a recorded message (its timestamp when the value is not an event)."""
    value = message.value
    if value is not None:
        ts = value.get("ts_event")
        if isinstance(ts, int):
            return ts
    return message.timestamp * 1_000_000


class Pipeline(Driver):
    """Market processor -> instrument table -> order processor, in one process.

    `self.runner` is the order stage's EventRunner (as for a `Driver` of the order
    processor), `self.market_runner` the market stage's.
    """

    def __init__(self, market: Processor, orders: Processor, *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 dedup_per_key: int = DEFAULT_DEDUP_PER_KEY) -> None:
        super().__init__(orders, max_message_bytes=max_message_bytes,
                         dedup_per_key=dedup_per_key)
        if INSTRUMENTS not in self.runner.tables:
            raise ValueError(f"order processor {orders.name!r} does not read {INSTRUMENTS}")
        self.market_runner = EventRunner(market, max_message_bytes=max_message_bytes,
                                         dedup_per_key=dedup_per_key)
        # (event time, topic, value) of table events not yet applied, and orders not yet run
        self._tables: deque[tuple[int, str, bytes]] = deque()
        self._orders: deque[tuple[int, RecordedMessage]] = deque()
        self._frontier: int | None = None
        self.messages = 0

    @classmethod
    def default(cls, settings: Any = None, **kwargs: Any) -> Pipeline:
        """Both stages with their default configurations (the worker settings' size cap,
        duplicate window and fail-closed switch when `settings` is given)."""
        from engine.market_risk import MarketRiskProcessor
        from engine.order_risk import OrderRiskProcessor

        if settings is None:
            return cls(MarketRiskProcessor(), OrderRiskProcessor(), **kwargs)
        return cls(MarketRiskProcessor(), OrderRiskProcessor.from_settings(settings),
                   max_message_bytes=settings.max_message_bytes,
                   dedup_per_key=settings.worker.dedup_per_key, **kwargs)

    # --- feeding --------------------------------------------------------------------------

    def feed(self, message: RecordedMessage) -> list[Emitted]:
        self.messages += 1
        topic = message.topic
        ts = _ts_of(message)
        self._frontier = ts
        market = self.market_runner
        if topic == market.input_topic:
            emitted = market.handle(message.partition, message.offset, message.key,
                                    message.value_bytes(), message.timestamp)
            for out in emitted:
                if out.topic == INSTRUMENTS:
                    self._tables.append((ts, INSTRUMENTS, out.value))
            return emitted + self._merge(final=False)
        if topic == self.runner.input_topic:
            self._orders.append((ts, message))
        elif topic in self.runner.tables and topic != INSTRUMENTS:
            self._tables.append((ts, topic, message.value_bytes()))
        else:
            self.ignored += 1
            return []
        return self._merge(final=False)

    def finish(self) -> list[Emitted]:
        return self._merge(final=True)

    def _merge(self, *, final: bool) -> list[Emitted]:
        """Run what the merge rule allows: both heads known, or (for an event-time ordered
        input) a head that no later message can precede."""
        runner, tables, orders = self.runner, self._tables, self._orders
        frontier = self._frontier
        out: list[Emitted] = []
        while tables or orders:
            if tables and orders:
                take_table = tables[0][0] <= orders[0][0]
            elif final:
                take_table = bool(tables)
            elif tables:  # later orders are at or after the frontier: ties go to the table
                if frontier is None or tables[0][0] > frontier:
                    break
                take_table = True
            else:  # later table events are at or after the frontier
                if frontier is None or orders[0][0] >= frontier:
                    break
                take_table = False
            if take_table:
                _, topic, value = tables.popleft()
                out += runner.apply_table(topic, value)
            else:
                _, message = orders.popleft()
                out += runner.handle(message.partition, message.offset, message.key,
                                     message.value_bytes(), message.timestamp)
        return out

    # --- results --------------------------------------------------------------------------

    def run(self, messages: Iterable[RecordedMessage] | str | Path, *,
            out: str | Path | RecordingWriter | None = None, **kwargs: Any) -> DriverResult:
        """As `Driver.run`; `events` counts every input message, `outputs` and
        `dead_letters` cover both stages."""
        source: Iterable[RecordedMessage] = (
            read_recording(messages) if isinstance(messages, str | Path) else messages)
        before = self.messages
        market_stats = self.market_runner.stats
        market_outputs = market_stats.outputs
        market_dead = Counter(market_stats.dead_letters)
        result = super().run(source, out=out, **kwargs)
        dead = Counter(result.dead_letters)
        dead.update(market_stats.dead_letters)
        dead.subtract(market_dead)
        return dataclasses.replace(
            result, events=self.messages - before,
            outputs=result.outputs + market_stats.outputs - market_outputs,
            dead_letters=+dead)

    @property
    def processed(self) -> int:
        """Input events the two processors handled (table events not counted)."""
        return self.market_runner.stats.processed + self.runner.stats.processed


def run_pipeline(recording: str | Path | Iterable[RecordedMessage],
                 out: str | Path | None = None, *, settings: Any = None,
                 progress: bool = False) -> DriverResult:
    """Run a recording with market and order events through both default stages."""
    return Pipeline.default(settings).run(recording, out=out, progress=progress)


def outputs_of(messages: Iterable[RecordedMessage], settings: Any = None
               ) -> Iterator[tuple[str, str | None, bytes]]:
    """(topic, key, value) of every output of the default pipeline over `messages`."""
    collected: list[Emitted] = []
    Pipeline.default(settings).run(messages, on_output=collected.append)
    for emitted in collected:
        yield emitted.topic, emitted.key, emitted.value
