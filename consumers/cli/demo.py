"""`streamrisk demo`: the main job, end to end on one machine.

This first version shows the plumbing every later stage relies on: with no
--bootstrap-servers it starts the embedded broker (temporary data dir), creates the catalogue
topics, publishes a small deterministic stream (Trades and Quotes for a few symbols, some
OrderNew) in one transaction, reads it back read_committed, shows it, and shuts everything
down. With --bootstrap-servers it uses that cluster and starts nothing.

The run is a sequence of stages on a `DemoRun` (cluster, topics, publish, consume, show), so
later issues add workers, scenarios and alerts as further stages. Event times are fixed
(from the seed), never the wall clock, so two runs with one seed publish the same events.
Exit codes: 0 done, 1 failure (one line on stderr), 130 interrupted (everything stopped).
"""

from __future__ import annotations

import argparse
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from consumers.cli.base import CliError, Context

if TYPE_CHECKING:
    import threading
    from contextlib import ExitStack

    from confluent_kafka import TopicPartition

    from producers.broker import EmbeddedBroker
    from schemas.common import Envelope
    from schemas.settings import Settings

NAME = "demo"
HELP = ("the main job: start a broker (unless --bootstrap-servers), publish a stream and "
        "show it consumed back")

# The scenarios this demo can run, in one place: --scenario is checked against it before
# anything starts. Empty until the demo drives the simulator's labelled scenarios.
SCENARIOS: tuple[str, ...] = ()

SYMBOLS = ("ACME", "BOLT", "CRUX")
ACCOUNTS = ("ACC-1", "ACC-2")
TICKS_PER_SYMBOL = 6
ORDERS = 6
START_NS = 1_704_205_800 * 1_000_000_000  # 2024-01-02 09:30 New York: event time, not now
STEP_NS = 250_000_000
SOURCE = "demo"
INTERRUPTED = 130
SHOWN_ROWS = 60


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--duration", type=_duration, default=20.0, metavar="S",
                        help="upper bound in seconds on publishing and consuming back, once "
                             "the broker is up (default 20)")
    parser.add_argument("--seed", type=int, default=1, metavar="N",
                        help="seed of the generated stream: one seed, one stream (default 1)")
    parser.add_argument("--scenario", nargs="+", action="extend", default=[], metavar="NAME",
                        help="scenarios to run (known: "
                             f"{', '.join(SCENARIOS) if SCENARIOS else 'none yet'})")


def check_scenarios(names: Iterable[str]) -> list[str]:
    """The requested scenario names, or CliError naming the first unknown one."""
    names = list(names)
    for name in names:
        if name not in SCENARIOS:
            known = ", ".join(SCENARIOS) if SCENARIOS else "none yet"
            raise CliError(f"unknown scenario {name!r} (known scenarios: {known})", exit_code=2)
    return names


def demo_events(seed: int) -> list[Envelope]:
    """The demo stream: Quote then Trade per symbol per tick on a seeded random walk, then a
    few limit OrderNew near the last prices. Same seed, same events (only ts_init differs).

    >>> a, b = demo_events(7), demo_events(7)
    >>> [e.model_dump(exclude={"ts_init"}) for e in a] == [
    ...     e.model_dump(exclude={"ts_init"}) for e in b]
    True
    >>> sorted({e.type for e in a})
    ['OrderNew', 'Quote', 'Trade']
    """
    from schemas.common import Side
    from schemas.market import Quote, Trade
    from schemas.orders import OrderNew

    rng = random.Random(seed)
    price = {s: round(rng.uniform(20, 200), 2) for s in SYMBOLS}
    events: list[Envelope] = []
    ts = START_NS

    def envelope() -> dict[str, Any]:
        n = len(events)
        return {"event_id": f"demo-{seed}-{n}", "ts_event": ts + n * STEP_NS,
                "ts_init": time.time_ns(), "source": SOURCE, "seq": n}

    for _ in range(TICKS_PER_SYMBOL):
        for symbol in SYMBOLS:
            price[symbol] = round(max(1.0, price[symbol] * (1 + rng.gauss(0, 0.002))), 2)
            half = round(max(0.01, price[symbol] * 0.0005), 2)
            events.append(Quote(**envelope(), symbol=symbol, bid=price[symbol] - half,
                                ask=price[symbol] + half, bid_size=rng.choice((100, 200, 500)),
                                ask_size=rng.choice((100, 200, 500))))
            events.append(Trade(**envelope(), symbol=symbol, price=price[symbol],
                                qty=rng.choice((10, 50, 100, 300)),
                                aggressor=rng.choice((Side.BUY, Side.SELL))))
    for k in range(ORDERS):
        symbol = rng.choice(SYMBOLS)
        side = rng.choice((Side.BUY, Side.SELL))
        offset = -0.001 if side is Side.BUY else 0.001
        events.append(OrderNew(**envelope(), account=ACCOUNTS[k % len(ACCOUNTS)],
                               symbol=symbol, side=side, qty=rng.choice((100, 200, 500)),
                               price=round(price[symbol] * (1 + offset), 2),
                               cl_ord_id=f"demo-{seed}-o{k}"))
    return events


@dataclass
class Consumed:
    topic: str
    partition: int
    offset: int
    key: str
    event: Envelope


@dataclass
class DemoRun:
    """What the stages share: settings (pointing at the cluster in use), the stop event set
    by Ctrl-C/SIGTERM, the deadline, and what was published and read back."""

    settings: Settings
    stop: threading.Event
    deadline: float
    broker: EmbeddedBroker | None = None
    start_positions: list[TopicPartition] = field(default_factory=list)
    published: list[Envelope] = field(default_factory=list)
    consumed: list[Consumed] = field(default_factory=list)

    def remaining(self, floor: float = 0.0) -> float:
        return max(floor, self.deadline - time.monotonic())

    @property
    def interrupted(self) -> bool:
        return self.stop.is_set()


def run(ctx: Context) -> int:
    from contextlib import ExitStack

    from confluent_kafka import KafkaError, KafkaException

    from consumers.cli.broker import stop_signals
    from producers.broker import BrokerError
    from producers.kafka import BrokerUnreachable
    from producers.provision import ProvisionError

    check_scenarios(ctx.args.scenario)
    settings = ctx.settings  # a bad config file fails here, before anything starts
    began = time.monotonic()
    with stop_signals() as stop, ExitStack() as cleanup:
        try:
            demo = _start_cluster(ctx, settings, stop, cleanup)
            for stage in STAGES:
                if demo.interrupted:
                    break
                stage(ctx, demo)
        except (BrokerError, BrokerUnreachable, ProvisionError) as exc:
            raise CliError(str(exc)) from None
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            reason = error.str() if isinstance(error, KafkaError) else str(exc)
            raise CliError(f"Kafka error: {reason}") from None
    where = ("embedded broker stopped" if demo.broker
             else f"cluster {demo.settings.bootstrap_servers}")
    counts = Counter(e.type for e in demo.published)
    types = ", ".join(f"{n} {t}" for t, n in sorted(counts.items()))
    summary = (f"demo: published {len(demo.published)} events ({types}) in one transaction, "
               f"consumed {len(demo.consumed)} back read_committed in "
               f"{time.monotonic() - began:.1f} s; {where}")
    if demo.interrupted:
        ctx.out.print(f"{summary} (interrupted)", markup=False, soft_wrap=True)
        return INTERRUPTED
    if len(demo.consumed) < len(demo.published):
        raise CliError(f"consumed only {len(demo.consumed)} of {len(demo.published)} events "
                       f"within --duration {ctx.args.duration:g} s")
    ctx.out.print(summary, markup=False, soft_wrap=True)
    return 0


def _start_cluster(ctx: Context, settings: Settings, stop: threading.Event,
                   cleanup: ExitStack) -> DemoRun:
    """Use the configured cluster, or start the embedded broker (stopped by `cleanup`)."""
    from producers.broker import EmbeddedBroker

    broker = None
    if not settings.bootstrap_servers:
        broker = EmbeddedBroker()  # temporary data dir, removed on stop
        cleanup.callback(broker.stop)
        broker.start()
        assert broker.process is not None
        ctx.out.print(f"embedded broker at {broker.bootstrap} (pid {broker.process.pid})",
                      markup=False)
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
    else:
        ctx.out.print(f"using the cluster at {settings.bootstrap_servers}", markup=False)
    return DemoRun(settings=settings, stop=stop, broker=broker,
                   deadline=time.monotonic() + ctx.args.duration)


def _create_topics(ctx: Context, demo: DemoRun) -> None:
    from producers.provision import ensure_topics

    report = ensure_topics(demo.settings)
    ctx.out.print(f"topics under {demo.settings.topic_prefix!r}: {len(report.created)} "
                  f"created, {len(report.existing)} already there", markup=False)


def _mark_ends(ctx: Context, demo: DemoRun) -> None:
    """Where the input topics end before publishing: reading back starts there, so older
    data on a shared cluster is not shown as this run's."""
    from confluent_kafka import TopicPartition

    from producers.kafka import make_consumer

    consumer = make_consumer(demo.settings, None, read_committed=True)
    try:
        metadata = consumer.list_topics(timeout=demo.remaining(1.0))
        for short in INPUT_TOPICS:
            name = demo.settings.topic(short)
            for partition in sorted(metadata.topics[name].partitions):
                _low, high = consumer.get_watermark_offsets(TopicPartition(name, partition),
                                                            timeout=demo.remaining(1.0))
                demo.start_positions.append(TopicPartition(name, partition, high))
    finally:
        consumer.close()


def _publish(ctx: Context, demo: DemoRun) -> None:
    """All events in one transaction, so read_committed readers see all or nothing."""
    import uuid

    from producers.kafka import DeliveryTracker, flush_all, make_producer
    from schemas.codec import encode

    events = demo_events(ctx.args.seed)
    tracker = DeliveryTracker()
    producer = make_producer(demo.settings,
                             transactional_id=f"streamrisk-demo-{uuid.uuid4().hex[:12]}")
    producer.init_transactions(demo.remaining(1.0))
    producer.begin_transaction()
    for event in events:
        # Kafka's timestamp is the event time, as for every streamrisk publisher (topics
        # retain by size, so the demo's fixed 2024 times are not deleted as they land).
        producer.produce(demo.settings.topic(event.TOPIC), key=_key(event).encode(),
                         value=encode(event), timestamp=event.ts_event // 1_000_000,
                         on_delivery=tracker.on_delivery)
        producer.poll(0)
    producer.commit_transaction(demo.remaining(1.0))
    left = flush_all(producer, timeout_s=demo.remaining(1.0))
    if tracker.failed or left or tracker.delivered != len(events):
        detail = f" ({tracker.errors[0]})" if tracker.errors else ""
        raise CliError(f"{len(events) - tracker.delivered} of {len(events)} events were not "
                       f"delivered{detail}")
    demo.published = events


def _consume_back(ctx: Context, demo: DemoRun) -> None:
    """Read the published events back, read_committed, until all are seen or time is up."""
    from producers.kafka import make_consumer
    from schemas.codec import DecodeError, decode

    consumer = make_consumer(demo.settings, None, read_committed=True)
    prefix = demo.settings.topic_prefix
    try:
        consumer.assign(demo.start_positions)  # no group join: we read, we never commit
        while (len(demo.consumed) < len(demo.published) and demo.remaining() > 0
               and not demo.interrupted):
            for msg in consumer.consume(num_messages=500, timeout=min(0.2, demo.remaining())):
                if msg.error():
                    continue  # partition EOF and transient errors: keep polling
                try:
                    event = decode(msg.value() or b"", demo.settings.max_message_bytes)
                except DecodeError as exc:
                    ctx.err.print(f"skipped a message that is not an event: {exc}",
                                  markup=False)
                    continue
                key = msg.key()
                demo.consumed.append(Consumed(
                    topic=(msg.topic() or "").removeprefix(prefix),
                    partition=msg.partition() or 0, offset=msg.offset() or 0,
                    key=key.decode(errors="replace") if isinstance(key, bytes) else "",
                    event=event))
    finally:
        consumer.close()
    _show(ctx, demo)


def _show(ctx: Context, demo: DemoRun) -> None:
    from datetime import UTC, datetime

    from rich.table import Table

    from consumers.cli.topics import print_wide

    table = Table(title=f"consumed back read_committed from {demo.settings.bootstrap_servers}")
    for column in ("topic", "part", "offset", "key", "type", "event time (UTC)", "details"):
        table.add_column(column, no_wrap=column != "details",
                         justify="right" if column in ("part", "offset") else "left")
    ordered = sorted(demo.consumed, key=lambda c: (c.event.ts_event, c.event.seq))
    for c in ordered[:SHOWN_ROWS]:
        when = datetime.fromtimestamp(c.event.ts_event / 1e9, tz=UTC).strftime("%H:%M:%S.%f")
        table.add_row(c.topic, str(c.partition), str(c.offset), c.key, c.event.type,
                      when[:-3], _details(c.event))
    if len(ordered) > SHOWN_ROWS:
        table.caption = f"first {SHOWN_ROWS} of {len(ordered)} by event time"
    print_wide(ctx, table)


def _details(event: Envelope) -> str:
    """One short line of the fields a trader looks at first."""
    from schemas.market import Quote, Trade
    from schemas.orders import OrderNew

    if isinstance(event, Trade):
        return f"{event.qty:g} @ {event.price:g}"
    if isinstance(event, Quote):
        return f"{event.bid_size:g} x {event.bid:g} / {event.ask:g} x {event.ask_size:g}"
    if isinstance(event, OrderNew):
        price = "market" if event.price is None else f"{event.price:g}"
        return f"{event.side.value} {event.qty:g} {event.symbol} @ {price} ({event.cl_ord_id})"
    return ""


def _key(event: Envelope) -> str:
    from schemas.market import MarketEvent
    from schemas.orders import OrderEvent

    if isinstance(event, MarketEvent | OrderEvent):
        return event.key
    raise TypeError(f"the demo publishes market and order events, not {event.type}")


INPUT_TOPICS = ("market", "orders")
Stage = Callable[[Context, DemoRun], None]
# The demo's stages after the cluster is up, in order; later issues add workers and alerts.
STAGES: Sequence[Stage] = (_create_topics, _mark_ends, _publish, _consume_back)
