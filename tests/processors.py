"""Small deterministic processors for runtime, driver and benchmark tests.

`CountingProcessor` keeps, per symbol, a running count, quantity sum and last price, and
emits an InstrumentRisk for every event (carrying the count, so lost or doubly applied
state shows in the outputs) plus a RiskAlert whenever the price moves more than
`alert_move` from the previous event of the same symbol. Its snapshots are pickles, like
River state, so the signature tests exercise the real risk.

Run a worker with it: `streamrisk worker --processor tests.processors:CountingProcessor`.
"""

from __future__ import annotations

import functools
import math
import pickle
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from engine.envelope import output_envelope
from engine.processor import Output
from schemas.common import Envelope, Severity
from schemas.market import Bar, Quote, Trade
from schemas.outputs import InstrumentRisk, RiskAlert
from schemas.recording import RecordedMessage


@dataclass
class SymbolState:
    count: int = 0
    qty: float = 0.0
    price: float = 0.0
    ewma_abs_return: float = 0.0


class CountingProcessor:
    """Per-key running count/sum with one output per event and an alert on big moves."""

    def __init__(self, name: str = "market-worker", input_topic: str = "market",
                 alert_move: float = 0.01, fail_on_qty: float | None = None) -> None:
        self.name = name
        self.input_topic = input_topic
        self.alert_move = alert_move
        self.fail_on_qty = fail_on_qty
        self._state: dict[str, SymbolState] = {}
        self._dirty: set[str] = set()

    def key_of(self, event: Envelope) -> str | None:
        return getattr(event, "symbol", None)

    def process(self, event: Envelope) -> Sequence[Output]:
        if isinstance(event, Trade):
            price, qty = event.price, event.qty
        elif isinstance(event, Quote):
            price, qty = (event.bid + event.ask) / 2, 0.0
        elif isinstance(event, Bar):
            price, qty = event.close, event.volume
        else:
            return []
        if self.fail_on_qty is not None and qty == self.fail_on_qty:
            raise ValueError(f"test processor refuses qty {qty}")
        symbol: str = event.symbol
        state = self._state.get(symbol)
        if state is None:
            state = self._state[symbol] = SymbolState()
        ret = math.log(price / state.price) if state.price else 0.0
        state.count += 1
        state.qty += qty
        state.price = price
        state.ewma_abs_return = 0.94 * state.ewma_abs_return + 0.06 * abs(ret)
        self._dirty.add(symbol)
        risk = InstrumentRisk(
            **output_envelope(event, "TEST_RISK", self.name), symbol=symbol, price=price,
            last_return=ret, vol=state.ewma_abs_return, var_95=1.645 * state.ewma_abs_return,
            var_99=2.326 * state.ewma_abs_return, es_975=1.96 * state.ewma_abs_return,
            var_method="test", adv=state.qty, events_seen=state.count)
        outputs = [Output("risk.instruments", symbol, risk)]
        if abs(ret) > self.alert_move:
            alert = RiskAlert(
                **output_envelope(event, "TEST_PRICE_MOVE", self.name),
                reason_code="TEST_PRICE_MOVE", severity=Severity.WARNING, entity=symbol,
                entity_kind="instrument", observed=abs(ret), threshold=self.alert_move,
                message=f"{symbol} moved {ret:+.2%} (event {state.count})",
                cause_event_id=event.event_id)
            outputs.append(Output("risk.alerts", symbol, alert))
        return outputs

    def dirty_keys(self) -> set[str]:
        keys, self._dirty = self._dirty, set()
        return keys

    def snapshot(self, key: str) -> bytes | None:
        state = self._state.get(key)
        return None if state is None else pickle.dumps(state, protocol=5)

    def restore(self, key: str, data: bytes | None) -> None:
        if data is None:
            self._state.pop(key, None)
        else:
            self._state[key] = pickle.loads(data)  # the runtime verified the signature

    def evict(self, keys: Iterable[str]) -> None:
        for key in keys:
            self._state.pop(key, None)

    def count_of(self, key: str) -> int:
        state = self._state.get(key)
        return state.count if state else 0


class SilentProcessor(CountingProcessor):
    """The same state updates with no outputs: the runtime's cost without producing."""

    def process(self, event: Envelope) -> Sequence[Output]:
        super().process(event)
        return []


# --- recorded test streams ------------------------------------------------------------------

GARBAGE_KINDS = ("undecodable", "invalid", "unknown_type", "too_large", "duplicate")


def partition_of(key: str, partitions: int) -> int:
    """A stable partition for a key (tests produce to explicit partitions, so a recording's
    partition/offset fields are exactly where the messages land on a fresh topic)."""
    import zlib

    return zlib.crc32(key.encode()) % partitions


def make_stream(events: int, *, symbols: int = 40, partitions: int = 8, seed: int = 0,
                garbage: float = 0.0, max_message_bytes: int = 1_000_000,
                ) -> list[RecordedMessage]:
    """A recording of `events` market messages (mostly Trades, some Quotes) over `symbols`
    instruments; a `garbage` fraction of them are bad in one of GARBAGE_KINDS (a duplicate is
    an earlier Trade sent again) and carry a ("garbage", kind) header saying so. Partition and
    offset fields say where each message lands when produced to explicit partitions of a
    fresh topic."""
    import random

    import orjson

    rng = random.Random(seed)
    names = [f"SYM{i:03d}" for i in range(symbols)]
    prices = {s: 100.0 + 10 * i for i, s in enumerate(names)}
    next_offset = [0] * partitions
    sent: list[Trade] = []
    out: list[RecordedMessage] = []
    # Event time in 2100: the catalogue's time-based retention must never expire test data.
    ts = 4_102_444_800_000_000_000

    def where(key: str) -> dict[str, Any]:
        part = partition_of(key, partitions)
        next_offset[part] += 1
        return {"partition": part, "offset": next_offset[part] - 1}

    for n in range(events):
        symbol = rng.choice(names)
        ts += rng.randint(1, 5_000_000)
        kind = GARBAGE_KINDS[n % len(GARBAGE_KINDS)] if rng.random() < garbage else None
        if kind == "duplicate" and sent:
            again = rng.choice(sent[-50:])
            out.append(RecordedMessage.from_event("market", again.symbol, again,
                                                  headers=[("garbage", "duplicate")],
                                                  **where(again.symbol)))
            continue
        if kind is not None and kind != "duplicate":
            if kind == "undecodable":
                data = b"\xff\x00not json " + str(n).encode()
            elif kind == "invalid":
                data = orjson.dumps({"type": "Trade", "event_id": f"bad-{n}", "ts_event": ts,
                                     "ts_init": ts, "source": "test", "symbol": symbol,
                                     "price": -1.0, "qty": 1.0})
            elif kind == "unknown_type":
                data = orjson.dumps({"type": "Mystery", "event_id": f"m-{n}", "symbol": symbol})
            else:
                data = orjson.dumps({"type": "Trade", "pad": "x" * (max_message_bytes + 10)})
            out.append(RecordedMessage.from_bytes("market", symbol, data,
                                                  timestamp=ts // 1_000_000,
                                                  headers=[("garbage", kind)], **where(symbol)))
            continue
        prices[symbol] *= math.exp(rng.gauss(0.0, 0.006))
        price = round(prices[symbol], 4)
        event: Envelope
        if rng.random() < 0.15:
            event = Quote(event_id=f"q-{seed}-{n}", ts_event=ts, ts_init=ts, source="test",
                          seq=n, symbol=symbol, bid=price, ask=round(price * 1.0005, 4),
                          bid_size=100.0, ask_size=100.0)
        else:
            event = Trade(event_id=f"t-{seed}-{n}", ts_event=ts, ts_init=ts, source="test",
                          seq=n, symbol=symbol, price=price, qty=float(rng.randint(1, 500)))
            sent.append(event)
        out.append(RecordedMessage.from_event("market", symbol, event, **where(symbol)))
    return out


BIG_CAP = 20_000
"""The size cap of the shared big stream (small, so `too_large` garbage stays small)."""


@functools.lru_cache(maxsize=1)
def big_stream() -> tuple[RecordedMessage, ...]:
    """50,000 events over 64 instruments and 8 partitions, 1% garbage: the stream every
    runtime end-to-end test replays (built once per test session)."""
    return tuple(make_stream(50_000, symbols=64, garbage=0.01, max_message_bytes=BIG_CAP,
                             seed=21))


@functools.lru_cache(maxsize=1)
def big_reference() -> dict[tuple[str, str | None], list[Any]]:
    """The in-process driver's outputs for `big_stream()`, grouped by (topic, key)."""
    from engine.driver import Driver, by_key

    got: list[tuple[str, str | None, bytes]] = []
    Driver(CountingProcessor(), max_message_bytes=BIG_CAP).run(
        big_stream(), on_output=lambda e: got.append((e.topic, e.key, e.value)))
    return by_key(got)


# --- Kafka helpers for the runtime tests (imports stay inside: the engine tests need none) --


def runtime_specs(worker: str = "market-worker", partitions: int = 8) -> list[Any]:
    """Topics a CountingProcessor worker needs: input, changelog, outputs, dead letters."""
    from schemas.topics import TopicSpec, by_name, changelog_spec

    specs = [by_name("market"), changelog_spec("market-worker") if worker == "market-worker"
             else TopicSpec(f"{worker}.changelog", "entity key", ("snapshot",), partitions,
                            {"cleanup.policy": "compact"}),
             by_name("dlq"), by_name("risk.instruments"), by_name("risk.alerts")]
    return specs


def recording_producer(settings: Any) -> Any:
    """An idempotent producer for `produce_recording`. A new one waits about 0.5 s before
    its first delivery (librdkafka asks for a producer id on a timer when no connection is
    up yet): a test that publishes many small batches opens one and passes it each time."""
    from producers.kafka import make_producer

    return make_producer(settings, **{"linger.ms": 20, "batch.num.messages": 10000})


def produce_recording(settings: Any, messages: Sequence[RecordedMessage],
                      producer: Any = None) -> None:
    """Publish recorded messages to their recorded partitions, keys and timestamps."""
    from producers.kafka import DeliveryTracker, flush_all

    tracker = DeliveryTracker()
    producer = producer or recording_producer(settings)
    for m in messages:
        while True:
            try:
                producer.produce(settings.topic(m.topic), m.value_bytes(), m.key,
                                 m.partition, on_delivery=tracker.on_delivery,
                                 timestamp=m.timestamp)
                break
            except BufferError:
                producer.poll(0.1)
    assert flush_all(producer, 60) == 0 and tracker.failed == 0, tracker.errors


def read_committed(settings: Any, topics: Iterable[str], timeout_s: float = 60.0,
                   ) -> list[tuple[str, str | None, bytes]]:
    """Every committed message of `topics` (catalogue names) as (topic, key, value), read
    to the high watermark: an open transaction makes this wait (and fail on timeout)
    rather than return early."""
    import time

    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from producers.kafka import make_consumer

    short = {settings.topic(t): t for t in topics}
    probe = make_consumer(settings, None, read_committed=False)
    eof: dict[str, Any] = {"enable.partition.eof": True}
    reader = make_consumer(settings, None, read_committed=True, **eof)
    metadata = probe.list_topics(timeout=10)
    ends: dict[tuple[str, int], int] = {}
    assign = []
    for full in short:
        for p in metadata.topics[full].partitions:
            _, high = probe.get_watermark_offsets(TopicPartition(full, p), 10, cached=False)
            if high > 0:
                ends[(full, p)] = high
                assign.append(TopicPartition(full, p, OFFSET_BEGINNING))
    probe.close()
    out: list[tuple[str, str | None, bytes]] = []
    if assign:
        reader.assign(assign)
    deadline = time.monotonic() + timeout_s
    # an offset is taken once: a fetch retried after a broker stall (seen on a loaded CI
    # machine: "ApiVersionRequest failed: Local: Timed out") may hand over a batch again
    taken: dict[tuple[str, int], int] = {}
    while ends:
        if time.monotonic() > deadline:
            reader.close()
            raise TimeoutError(f"committed outputs never reached the end of {sorted(ends)}")
        for msg in reader.consume(5000, 0.2):
            where = (msg.topic() or "", msg.partition() or 0)
            offset = msg.offset() or 0
            if msg.error() is None:
                if offset < taken.get(where, 0):
                    continue
                taken[where] = offset + 1
                key = msg.key()
                out.append((short[where[0]], key.decode() if isinstance(key, bytes) else key,
                            msg.value()))  # type: ignore[arg-type]
                offset += 1
            if offset >= ends.get(where, 0):
                ends.pop(where, None)
    reader.close()
    return out


def committed_offsets(settings: Any, group: str, topic: str) -> dict[int, int]:
    from confluent_kafka import TopicPartition

    from producers.kafka import make_consumer

    consumer = make_consumer(settings, group)
    try:
        metadata = consumer.list_topics(settings.topic(topic), timeout=10)
        parts = [TopicPartition(settings.topic(topic), p)
                 for p in metadata.topics[settings.topic(topic)].partitions]
        return {tp.partition: tp.offset for tp in consumer.committed(parts, 10)}
    finally:
        consumer.close()


def committed_total(settings: Any, group: str, topic: str = "market") -> int:
    """Offsets `group` has committed on `topic`, summed (a partition without one counts 0)."""
    return sum(max(0, offset) for offset in committed_offsets(settings, group, topic).values())


def wait_committed(settings: Any, group: str, topic: str, ends: dict[int, int],
                   timeout_s: float = 60.0, alive: Any = None) -> None:
    """Wait until the group has committed every partition of `topic` to `ends`."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        got = committed_offsets(settings, group, topic)
        if all(got.get(p, -1) >= end for p, end in ends.items()):
            return
        if alive is not None and not alive():
            raise AssertionError(f"worker died before committing everything: {got} vs {ends}")
        if time.monotonic() > deadline:
            raise TimeoutError(f"group {group} committed {got}, wanted {ends}")
        time.sleep(0.2)


def ends_of(messages: Sequence[RecordedMessage]) -> dict[int, int]:
    ends: dict[int, int] = {}
    for m in messages:
        ends[m.partition] = max(ends.get(m.partition, 0), m.offset + 1)
    return ends


def expire_dead_member(settings: Any, group: str, client_fragment: str) -> bool:
    """Do what a broker's session timeout does for a member that died: make it leave.

    The embedded broker (noida-db 0.2.3) never expires members whose heartbeats stopped, so
    a killed worker would hold its partitions, and block every rebalance, forever. This
    sends a LeaveGroup (v0) on behalf of the member whose client.id contains
    `client_fragment`. Plaintext only; against real Kafka the session timeout does it and
    this is not needed. Returns whether a member was removed."""
    import socket
    import struct

    from producers.kafka import make_admin

    admin = make_admin(settings)
    described = admin.describe_consumer_groups([group])[group].result(10)
    dead = [m.member_id for m in described.members if client_fragment in m.client_id]
    if not dead:
        return False

    def string(text: str) -> bytes:
        raw = text.encode()
        return struct.pack(">h", len(raw)) + raw

    host, port = settings.bootstrap_servers.split(",")[0].rsplit(":", 1)
    for member in dead:
        body = struct.pack(">hhi", 13, 0, 1) + string("test-reaper") + string(group) + string(
            member)
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(struct.pack(">i", len(body)) + body)
            size = struct.unpack(">i", sock.recv(4))[0]
            reply = b""
            while len(reply) < size:
                reply += sock.recv(size - len(reply))
        (error,) = struct.unpack(">h", reply[4:6])
        assert error == 0, f"LeaveGroup for {member} failed with error {error}"
    return True
