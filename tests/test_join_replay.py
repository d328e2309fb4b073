"""The order worker's event-time join, without a broker: `engine.temporal_join.TableJoin`
driving an `OrderRiskProcessor` exactly as `consumers.runtime.worker` does, fed by a
schedule that stands for Kafka's freedom (each input partition fetched in bursts of its
own, each instrument's risk published at its own pace, the worker's MassCancels read back
later), must decide as the in-process pipeline does: the same decisions, breaches and state
changes whatever the schedule. Seeded schedules, so a failure replays exactly.

This is where a join that asked what an order needs before the fills just ahead of it had
run (an account that had reopened a position skipped waiting for that instrument) showed
up as a decision on an older instrument version, as it did now and then through Kafka.
"""

from __future__ import annotations

import random
import zlib
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

import pytest

from engine.driver import Emitted, EventRunner, by_key
from engine.order_risk import OrderRiskProcessor
from engine.pipeline import Pipeline
from engine.temporal_join import Step, TableJoin
from producers.simulator import SimConfig, Simulation
from schemas.codec import decode
from schemas.outputs import InstrumentRisk
from schemas.recording import RecordedMessage

COMPARED = ("risk.decisions", "risk.breaches", "risk.states")
PARTITIONS = 8
Held = tuple[int, Any, RecordedMessage]


@pytest.fixture(scope="module")
def day() -> dict[str, Any]:
    # the order worker's broker test's day (tests/test_order_worker.py)
    sim = Simulation(SimConfig(seed=0, instruments=4, accounts=4, duration_s=200,
                               scenarios=("loss-spiral", "fat-finger", "runaway-algo")))
    messages = [RecordedMessage.from_event(e.topic, e.key, e.event) for e in sim]
    reference = Pipeline.default(scopes=None)
    out: list[Emitted] = []
    for m in messages:
        out += reference.feed(m)
    out += reference.finish()
    table: dict[str, list[Any]] = defaultdict(list)  # per instrument, in its own order
    for e in out:
        if e.topic == "risk.instruments":
            event = decode(e.value)
            assert isinstance(event, InstrumentRisk)
            table[event.symbol].append(event)
    return {"orders": [m for m in messages if m.topic == "orders"], "table": table,
            "expected": by_key((e.topic, e.key, e.value) for e in out if e.topic in COMPARED)}


def _replay(day: dict[str, Any], rnd: random.Random, burst: int) -> tuple[Any, Any]:
    processor = OrderRiskProcessor()
    runner = EventRunner(processor)
    join: TableJoin[Held] = TableJoin(
        ts_of=lambda h: h[1].ts_event, needs=lambda h: processor.hold_needs(h[1]),
        max_wait_ns=None, idle_ns=None, partition_of=lambda h: h[0])
    partitions: dict[int, list[Held]] = defaultdict(list)
    for m in day["orders"]:
        p = zlib.crc32((m.key or "").encode()) % PARTITIONS
        partitions[p].append((p, decode(m.value_bytes()), m))
    table: dict[str, list[Any]] = day["table"]
    taken = dict.fromkeys(partitions, 0)
    read = dict.fromkeys(table, 0)
    out: list[Emitted] = []
    mass_cancels: list[Held] = []  # the worker reads its own MassCancels back, later

    def run(steps: Iterable[Step]) -> None:
        for step in steps:  # lazily: each step runs before the next is asked for
            if step.kind == "table":
                out.extend(runner.apply_table_event(step.topic, step.item))
                continue
            partition, event, message = step.item
            emitted = runner.handle(partition, 0, message.key, message.value_bytes(),
                                    message.timestamp, event)
            out.extend(emitted)
            mass_cancels.extend((partition, decode(e.value), RecordedMessage.from_bytes(
                "orders", e.key, e.value)) for e in emitted if e.topic == "orders")

    now = 0
    while True:
        more = [p for p in partitions if taken[p] < len(partitions[p])]
        behind = [k for k in table if read[k] < len(table[k])]
        if not more and not behind:
            break
        now += 1
        if more and (not behind or rnd.random() < 0.3):  # a fetch of one partition
            p = rnd.choice(more)
            n = rnd.randint(1, 50)
            for held in partitions[p][taken[p]:taken[p] + n]:
                join.offer(held, now)
            taken[p] += n
        else:  # some of one instrument's risk, as the market worker publishes it
            key = rnd.choice(behind)
            n = rnd.randint(1, burst)
            for event in table[key][read[key]:read[key] + n]:
                join.offer_table("risk.instruments", event.ts_event, event.symbol, event, now)
            read[key] += n
        if mass_cancels and rnd.random() < 0.2:
            for held in mass_cancels:
                join.offer(held, now)
            mass_cancels.clear()
        run(join.poll(now))
    run(join.poll(now + 1, finished=True))
    return by_key((e.topic, e.key, e.value) for e in out if e.topic in COMPARED), join.stats


@pytest.mark.parametrize("seed", range(16))
def test_the_join_decides_as_the_pipeline_whatever_the_arrival_schedule(
        day: dict[str, Any], seed: int) -> None:
    got, stats = _replay(day, random.Random(seed), burst=10)
    assert stats.released_by_timeout == stats.released_by_idle  # no wait: only the end
    differing = [key for key in day["expected"] if day["expected"][key] != got.get(key)]
    assert not differing, f"{len(differing)} keys differ, first {differing[:3]}"
    assert got.keys() == day["expected"].keys()
