"""In-process measurements: no broker, the engine exactly as a worker runs it.

- `market_rates`: the market processor behind an `engine.driver.EventRunner` (size cap,
  decode, duplicate check, process, output encoding: everything a worker does per message
  except Kafka) over encoded messages, events/s per repetition.
- `codec_costs`: encode/decode µs per event type.
- `decision_run`: the order processor over a synthetic day: decision latency (the
  RiskDecision's `decision_latency_ns`, measured around the gate inside `process`), events/s
  and the accounts' state.
- `state_size`: bytes per key in memory (tracemalloc while restoring the keys' snapshots
  into a fresh processor: exactly what the state holds, without the events that built it)
  and as signed changelog messages.
- `instrument_scaling` / `account_scaling`: events/s and memory per key as keys grow.
"""

from __future__ import annotations

import gc
import pickle
import time
import tracemalloc
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from consumers.bench.measure import median, per_call_us, percentile
from consumers.bench.workloads import Message, codec_samples, order_day, synthetic_quotes
from engine.driver import EventRunner
from engine.market_risk import MarketRiskProcessor
from engine.order_risk import OrderRiskProcessor
from engine.processor import Processor
from engine.snapshots import SnapshotCodec
from schemas.codec import decode, encode
from schemas.common import Envelope
from schemas.settings import Settings

Tick = Callable[[int], None]


def _no_tick(n: int) -> None:
    pass


def build_processor(kind: str, settings: Settings) -> Processor:
    """The processor a `streamrisk worker <kind>` would run with these settings."""
    from consumers.cli.worker import build_processor as build
    from consumers.cli.worker import resolve

    processor: Processor = build(resolve(kind, None), settings)
    return processor


def runner_for(processor: Processor, settings: Settings) -> EventRunner:
    return EventRunner(processor, max_message_bytes=settings.max_message_bytes,
                       dedup_per_key=settings.worker.dedup_per_key)


def feed(runner: EventRunner, messages: Sequence[Message], offsets: dict[int, int],
         tick: Tick = _no_tick) -> int:
    """Hand `messages` to the runner as a worker would; returns the outputs emitted."""
    handle = runner.handle
    outputs = 0
    for n, m in enumerate(messages, start=1):
        offset = offsets.get(m.partition, 0)
        offsets[m.partition] = offset + 1
        outputs += len(handle(m.partition, offset, m.key, m.value))
        if n % 1024 == 0:
            tick(1024)
    tick(len(messages) % 1024)
    return outputs


class InProcessMarket:
    """The market processor behind an EventRunner, fed repetition by repetition (the same
    sequence a Kafka measurement gives its worker)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.runner = runner_for(build_processor("market", settings), settings)
        self.offsets: dict[int, int] = {}
        self.rates: list[float] = []
        self.cpu_rates: list[float] = []

    def warm(self, messages: Sequence[Message], tick: Tick = _no_tick) -> None:
        feed(self.runner, messages, self.offsets, tick)

    def rep(self, messages: Sequence[Message], tick: Tick = _no_tick) -> float:
        gc.collect()
        w, c = time.perf_counter(), time.process_time()
        feed(self.runner, messages, self.offsets, tick)
        rate = len(messages) / (time.perf_counter() - w)
        self.rates.append(rate)
        self.cpu_rates.append(len(messages) / max(1e-9, time.process_time() - c))
        return rate


def process_only_rates(settings: Settings, warmup: Sequence[Message],
                       reps: Sequence[Sequence[Message]], tick: Tick = _no_tick,
                       ) -> list[float]:
    """The model-only limit: `processor.process` on already decoded events, nothing else."""
    processor = build_processor("market", settings)
    for m in warmup:
        processor.process(decode(m.value))
    rates = []
    for rep in reps:
        events = [decode(m.value) for m in rep]
        gc.collect()
        start = time.perf_counter()
        process = processor.process
        for event in events:
            process(event)
        rates.append(len(events) / (time.perf_counter() - start))
        tick(len(events))
    return rates


@dataclass
class MarketRun:
    rates: list[float]
    """Events/s (wall) per repetition."""
    cpu_rates: list[float]
    process_only_rates: list[float]
    """Events/s of `processor.process` alone on decoded events (no codec, no runner)."""
    runner: EventRunner


def market_rates(settings: Settings, warmup: Sequence[Message],
                 reps: Sequence[Sequence[Message]], tick: Tick = _no_tick) -> MarketRun:
    """Warm-up then each repetition through one runner, then the model-only limit."""
    market = InProcessMarket(settings)
    market.warm(warmup, tick)
    for rep in reps:
        market.rep(rep, tick)
    only = process_only_rates(settings, warmup, reps, tick)
    return MarketRun(market.rates, market.cpu_rates, only, market.runner)


def codec_costs(reps: int, iterations: int, tick: Tick = _no_tick,
                events: Sequence[Envelope] | None = None) -> list[dict[str, Any]]:
    """Per event type: encoded bytes and median µs per encode and per decode (decode is the
    size cap, JSON parsing and full validation: what a worker pays per input message)."""
    rows: list[dict[str, Any]] = []
    for event in events or codec_samples():
        data = encode(event)
        if decode(data) != event:
            raise AssertionError(f"{event.type} does not survive a round trip")
        enc: list[float] = []
        dec: list[float] = []
        for _ in range(reps):
            enc.append(per_call_us(partial(encode, event), iterations))
            dec.append(per_call_us(partial(decode, data), iterations))
            tick(1)
        rows.append({"type": event.type, "bytes": len(data), "encode_us": median(enc),
                     "decode_us": median(dec), "encode_us_runs": enc, "decode_us_runs": dec})
    return rows


# --- state size ---------------------------------------------------------------------------


@dataclass
class StateSize:
    keys: int
    memory_bytes: float
    """Per key, traced allocations of the restored state (dedup window included)."""
    snapshot_bytes: float
    """Per key, the signed changelog message(s)."""
    restore_us: float
    """Per key, in-process: verify + unpickle (no broker)."""


def state_size(runner: EventRunner, settings: Settings, fresh: Callable[[], Processor],
               keys: Sequence[str] | None = None) -> StateSize:
    codec = SnapshotCodec(settings.snapshot_key_bytes(), worker=runner.worker,
                          max_message_bytes=settings.max_message_bytes)
    keys = list(keys if keys is not None else runner.key_partition)
    encoded = {k: codec.encode(runner.snapshot(k)) for k in keys}
    size = sum(len(v) for msgs in encoded.values() for _, v in msgs) / max(1, len(keys))
    target = runner_for(fresh(), settings)
    gc.collect()
    start = time.perf_counter()
    for key, msgs in encoded.items():
        restored, _ = codec.assemble(dict(msgs), runner.key_partition.get(key, 0))
        snap = restored[key]
        assert snap is not None
        target.restore(snap)
    restore_us = (time.perf_counter() - start) / max(1, len(keys)) * 1e6
    probe = runner_for(fresh(), settings)
    decoded = {k: codec.assemble(dict(m), runner.key_partition.get(k, 0))[0][k]
               for k, m in encoded.items()}

    def restore_all() -> None:
        for snap in decoded.values():
            if snap is not None:
                probe.restore(snap)

    memory = traced(restore_all)
    return StateSize(len(keys), memory / max(1, len(keys)), size, restore_us)


def traced(work: Callable[[], object]) -> int:
    """Bytes allocated by `work` and still held when it returns."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = work()
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    del result
    return after - before


# --- warm instruments, cloned -------------------------------------------------------------


@dataclass
class Template:
    """One instrument run long enough that every bounded window of its models is full."""

    state: bytes
    dedup: bytes
    price: float
    ts: int


def warm_template(settings: Settings, events: int = 3000, seed: int = 5) -> Template:
    runner = runner_for(build_processor("market", settings), settings)
    stream = synthetic_quotes(["TEMPLATE"], events, seed=seed, start_ns=1_704_205_800 * 10**9)
    for n, event in enumerate(stream):
        runner.handle(0, n, "TEMPLATE", encode(event))
    snap = runner.snapshot("TEMPLATE")
    assert snap.state is not None
    last = stream[-1]
    return Template(snap.state, snap.dedup, float(getattr(last, "price", 100.0)), last.ts_event)


def clone_instruments(processor: MarketRiskProcessor, template: Template,
                      symbols: Sequence[str]) -> None:
    """Give each symbol a copy of the template's warm state (renamed)."""
    for symbol in symbols:
        processor.restore(symbol, template.state)
        state = processor.state(symbol)
        assert state is not None
        state.symbol = symbol


@dataclass
class ScalePoint:
    keys: int
    events: int
    events_per_s: float
    memory_bytes_per_key: float
    snapshot_bytes_per_key: float


def instrument_scaling(settings: Settings, template: Template, sizes: Sequence[int],
                       events: int, reps: int, tick: Tick = _no_tick) -> list[ScalePoint]:
    """For each number of instruments: warm states (clones), then `events` quotes and
    trades spread over them, `reps` times; events/s is the median."""
    points = []
    for size in sizes:
        symbols = [f"I{i:05d}" for i in range(size)]
        processor = build_processor("market", settings)
        assert isinstance(processor, MarketRiskProcessor)
        memory = traced(partial(clone_instruments, processor, template, symbols)) / size
        snap = len(pickle.dumps(processor.state(symbols[0]), protocol=5))
        stream = synthetic_quotes(symbols, events * reps, seed=size, start_ns=template.ts,
                                  price=template.price)
        rates = []
        for r in range(reps):
            chunk = stream[r * events:(r + 1) * events]
            gc.collect()
            start = time.perf_counter()
            process = processor.process
            for event in chunk:
                process(event)
            rates.append(len(chunk) / (time.perf_counter() - start))
            tick(1)
        points.append(ScalePoint(size, events, median(rates), memory, snap))
        del processor, stream
    return points


# --- accounts -----------------------------------------------------------------------------


@dataclass
class DecisionRun:
    latencies_ns: list[int]
    events: int
    events_per_s: float
    runner: EventRunner
    """Holds the processor, and each account's duplicate window as a worker would."""
    cpu_ns: list[int] = field(default_factory=list)
    """Thread CPU time of the whole `process` call of each decided order: unlike the
    wall-clock latency it does not grow when other processes take the core."""


def decision_run(events: Sequence[Envelope], settings: Settings,
                 tick: Tick = _no_tick) -> DecisionRun:
    """The order processor over decoded events (as `benchmarks/decision_bench.py`), with
    the per-account duplicate windows a worker keeps."""
    processor = build_processor("orders", settings)
    assert isinstance(processor, OrderRiskProcessor)
    runner = runner_for(processor, settings)
    dedup, key_of, owned = runner.dedup, processor.key_of, runner.key_partition
    latencies: list[int] = []
    cpu: list[int] = []
    thread_time = time.thread_time_ns
    gc.collect()
    start = time.perf_counter()
    for n, event in enumerate(events, start=1):
        key = key_of(event)
        if key is not None:
            dedup.check(key, event.event_id)
            owned[key] = 0
        c0 = thread_time()
        outputs = processor.process(event)
        spent = thread_time() - c0
        for output in outputs:
            latency = getattr(output.value, "decision_latency_ns", None)
            if latency is not None:
                latencies.append(latency)
                cpu.append(spent)
        if n % 1024 == 0:
            tick(1024)
    elapsed = time.perf_counter() - start
    tick(len(events) % 1024)
    return DecisionRun(latencies, len(events), len(events) / elapsed, runner, cpu)


def latency_ms(samples_ns: Sequence[int], segments: int) -> dict[str, Any]:
    """p50/p99 in ms of each consecutive segment and their medians."""
    size = max(1, len(samples_ns) // max(1, segments))
    parts = [samples_ns[i:i + size] for i in range(0, len(samples_ns), size)]
    parts = [p for p in parts if len(p) >= size // 2] or [list(samples_ns)]
    p50 = [percentile(p, 0.50) / 1e6 for p in parts]
    p99 = [percentile(p, 0.99) / 1e6 for p in parts]
    return {"p50_ms": median(p50), "p99_ms": median(p99), "p50_runs": p50, "p99_runs": p99,
            "samples": len(samples_ns), "max_ms": max(samples_ns) / 1e6}


def account_state(run: DecisionRun, settings: Settings) -> StateSize:
    return state_size(run.runner, settings, lambda: build_processor("orders", settings))


def account_scaling(settings: Settings, sizes: Sequence[int], orders: int,
                    tick: Tick = _no_tick) -> list[ScalePoint]:
    points = []
    for size in sizes:
        events = order_day(orders, 50, size, seed=size)
        run = decision_run(events, settings)
        state = account_state(run, settings)
        points.append(ScalePoint(size, len(events), run.events_per_s, state.memory_bytes,
                                 state.snapshot_bytes))
        tick(1)
    return points
