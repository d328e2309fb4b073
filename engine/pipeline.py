"""The pipeline in-process: market risk feeding order risk (merged in event time), and the
order stage feeding the desk/firm aggregation stage.

Through Kafka the market worker publishes InstrumentRisk to `risk.instruments` and the order
worker reads that topic as a table, holding each order until the table has caught up with
the order's event time (`consumers.runtime.alignment`); the order worker publishes
ScopeContributions to `risk.scope-accounts`, which the scope worker consumes, and the scope
worker's ScopeRisk on `risk.scopes` is a table of the order worker again. `Pipeline` is the
same thing without a broker, and the reference the Kafka path is compared with:

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
4. The scope stage (`engine.scope_risk`, on unless `scopes=None`) gets every
   `risk.scope-accounts` output of the order stage at once, and the `risk.limits` and
   `risk.control` table events at the same point of the merge as the order stage. Its
   `risk.scopes` outputs become table events of the order stage (when it reads that table),
   applied before anything later: their event time is that of the order stage's event that
   caused them, which no pending order precedes. That is the zero-latency case of the
   Kafka path, where a ScopeRisk reaches the order workers on arrival, a little later.
   Recorded `risk.scope-accounts` and `risk.scopes` messages are ignored (the stages are the
   source of truth).

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
from typing import Any, Literal

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
SCOPE_ACCOUNTS = "risk.scope-accounts"
SCOPES = "risk.scopes"


def _ts_of(message: RecordedMessage) -> int:
    """Event time of a recorded message (its timestamp when the value is not an event)."""
    value = message.value
    if value is not None:
        ts = value.get("ts_event")
        if isinstance(ts, int):
            return ts
    return message.timestamp * 1_000_000


class Pipeline(Driver):
    """Market processor -> instrument table -> order processor -> scope processor, in one
    process.

    `self.runner` is the order stage's EventRunner (as for a `Driver` of the order
    processor), `self.market_runner` the market stage's and `self.scope_runner` the scope
    stage's (None when `scopes=None`). `scopes="default"` builds an
    `engine.scope_risk.ScopeRiskProcessor` with its default configuration.
    """

    def __init__(self, market: Processor, orders: Processor,
                 scopes: Processor | Literal["default"] | None = "default", *,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 dedup_per_key: int = DEFAULT_DEDUP_PER_KEY) -> None:
        super().__init__(orders, max_message_bytes=max_message_bytes,
                         dedup_per_key=dedup_per_key)
        if INSTRUMENTS not in self.runner.tables:
            raise ValueError(f"order processor {orders.name!r} does not read {INSTRUMENTS}")
        self.market_runner = EventRunner(market, max_message_bytes=max_message_bytes,
                                         dedup_per_key=dedup_per_key)
        if scopes == "default":
            from engine.scope_risk import ScopeRiskProcessor

            scopes = ScopeRiskProcessor()
        self.scope_runner = None if scopes is None else EventRunner(
            scopes, max_message_bytes=max_message_bytes, dedup_per_key=dedup_per_key)
        # table topics the recording feeds (the stages' own outputs are not taken from it)
        own = {INSTRUMENTS} | ({SCOPES} if self.scope_runner is not None else set())
        self._table_topics = (set(self.runner.tables) | set(
            self.scope_runner.tables if self.scope_runner is not None else ())) - own
        self._scopes_to_orders = self.scope_runner is not None and SCOPES in self.runner.tables
        self._scope_offset = 0
        # (event time, topic, value) of table events not yet applied, and orders not yet run
        self._tables: deque[tuple[int, str, bytes]] = deque()
        self._orders: deque[tuple[int, RecordedMessage]] = deque()
        self._frontier: int | None = None
        self.messages = 0

    @classmethod
    def default(cls, settings: Any = None, **kwargs: Any) -> Pipeline:
        """Every stage with its default configuration (the worker settings' size cap,
        duplicate window and fail-closed switch when `settings` is given)."""
        from engine.market_risk import MarketRiskProcessor
        from engine.order_risk import OrderRiskProcessor
        from engine.scope_risk import ScopeRiskProcessor

        if settings is None:
            return cls(MarketRiskProcessor(), OrderRiskProcessor(), **kwargs)
        kwargs.setdefault("scopes", ScopeRiskProcessor.from_settings(settings))
        return cls(MarketRiskProcessor.from_settings(settings),
                   OrderRiskProcessor.from_settings(settings),
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
        elif topic in self._table_topics:
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
        scope_runner = self.scope_runner
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
            scoped: list[Emitted] = []
            if take_table:
                ts, topic, value = tables.popleft()
                emitted = runner.apply_table(topic, value) if topic in runner.tables else []
                if scope_runner is not None and topic in scope_runner.tables:
                    scoped = scope_runner.apply_table(topic, value)
            else:
                ts, message = orders.popleft()
                emitted = runner.handle(message.partition, message.offset, message.key,
                                        message.value_bytes(), message.timestamp)
            out += emitted
            if scope_runner is not None:
                out += self._scope_stage(ts, emitted, scoped)
        return out

    def _scope_stage(self, ts: int, emitted: list[Emitted], scoped: list[Emitted]
                     ) -> list[Emitted]:
        """Run the scope stage over the contributions among the order stage's `emitted`
        (caused by an event at `ts`); queue the ScopeRisk among its outputs and `scoped`
        (its outputs of a table event) as the order stage's next table events."""
        scope_runner = self.scope_runner
        assert scope_runner is not None
        for item in emitted:
            if item.topic == SCOPE_ACCOUNTS:
                self._scope_offset += 1
                scoped += scope_runner.handle(0, self._scope_offset, item.key, item.value)
        if self._scopes_to_orders:
            self._tables.extendleft(reversed([(ts, SCOPES, e.value) for e in scoped
                                              if e.topic == SCOPES]))
        return scoped

    # --- results --------------------------------------------------------------------------

    def run(self, messages: Iterable[RecordedMessage] | str | Path, *,
            out: str | Path | RecordingWriter | None = None, **kwargs: Any) -> DriverResult:
        """As `Driver.run`; `events` counts every input message, `outputs` and
        `dead_letters` cover every stage."""
        source: Iterable[RecordedMessage] = (
            read_recording(messages) if isinstance(messages, str | Path) else messages)
        before = self.messages
        others = [self.market_runner.stats] + (
            [self.scope_runner.stats] if self.scope_runner is not None else [])
        outputs_before = [s.outputs for s in others]
        dead_before = [Counter(s.dead_letters) for s in others]
        result = super().run(source, out=out, **kwargs)
        dead = Counter(result.dead_letters)
        outputs = result.outputs
        for stats, n, letters in zip(others, outputs_before, dead_before, strict=True):
            dead.update(stats.dead_letters)
            dead.subtract(letters)
            outputs += stats.outputs - n
        return dataclasses.replace(result, events=self.messages - before, outputs=outputs,
                                   dead_letters=+dead)

    @property
    def processed(self) -> int:
        """Input events the processors handled (table events and the scope stage's
        contributions, which are outputs of the order stage, not counted)."""
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
