"""What the worker runtime costs: Kafka worker throughput against the in-process driver, and
the time to restore 1,000 keys from the changelog.

    python benchmarks/runtime_bench.py [--events N] [--runs R] [--quick] [--json FILE]
                                       [--bootstrap-servers HOST:PORT]

For a trivial processor (tests.processors.CountingProcessor: per-key counters, one output per
event; and SilentProcessor: the same without outputs) each run publishes the same recorded
stream to fresh topics, times the in-process driver over it, then one exactly-once worker
through the broker (from its first event to the checkpoint that commits the last one; group
join and startup excluded). The ratio worker/driver is the runtime's cost per event: 1.0
would be free. Restore: a worker builds state for 1,000 keys, a second worker restores them
(wall time from the first restore starting to the last one done), with small states and
with ~20 KB per key (about a River model stack). Figures are medians of R runs in one
process. Without --bootstrap-servers an embedded broker is started and stopped.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from consumers.runtime import Worker, WorkerConfig
from engine.driver import Driver
from producers.provision import ensure_topics
from schemas.recording import RecordedMessage
from schemas.settings import Settings, load_settings
from tests.processors import (
    CountingProcessor,
    SilentProcessor,
    make_stream,
    produce_recording,
    runtime_specs,
)


class PaddedProcessor(CountingProcessor):
    """CountingProcessor whose per-key state pickles to about `pad` bytes (like a model)."""

    def __init__(self, pad: int = 20_000) -> None:
        super().__init__()
        self.pad = pad

    def snapshot(self, key: str) -> bytes | None:
        state = self._state.get(key)
        if state is None:
            return None
        import pickle

        return pickle.dumps((state, bytes(range(256)) * (self.pad // 256)), protocol=5)

    def restore(self, key: str, data: bytes | None) -> None:
        import pickle

        if data is None:
            self._state.pop(key, None)
        else:
            state, _ = pickle.loads(data)
            self._state[key] = state


def fresh(bootstrap: str, profile: str) -> Settings:
    settings = load_settings(None, bootstrap_servers=bootstrap, profile=profile,
                             topic_prefix=f"bench{uuid.uuid4().hex[:8]}.",
                             worker={"commit_interval_ms": 500})
    ensure_topics(settings, runtime_specs())
    return settings


def run_worker(processor: Any, settings: Settings) -> Worker:
    worker = Worker(processor, settings, WorkerConfig.from_settings(settings, processor))
    worker.exit_when_caught_up = True
    worker.run()
    return worker


def throughput(kind: type[CountingProcessor], stream: list[RecordedMessage], bootstrap: str,
               profile: str) -> tuple[float, float]:
    """(driver events/s, worker events/s) for one run."""
    settings = fresh(bootstrap, profile)
    produce_recording(settings, stream)
    start = time.perf_counter()
    Driver.from_settings(kind(), settings).run(stream)
    driver_s = time.perf_counter() - start
    metrics = run_worker(kind(), settings).metrics
    assert metrics.events_in == len(stream), metrics.summary()
    worker_s = metrics.last_checkpoint_at - metrics.first_event_at
    return len(stream) / driver_s, len(stream) / worker_s


def restore_time(processor_factory: Any, keys: int, bootstrap: str, profile: str,
                 ) -> tuple[float, int, int]:
    """(seconds, keys restored, snapshot bytes per key) for one run."""
    settings = fresh(bootstrap, profile)
    stream = make_stream(keys * 10, symbols=keys, seed=5)
    distinct = len({m.key for m in stream})
    produce_recording(settings, stream)
    first = run_worker(processor_factory(), settings)
    assert first.metrics.snapshots_written >= keys
    probe = processor_factory()  # (the worker evicted its keys when it left the group)
    probe.process(stream[0].event())
    sample = probe.snapshot(stream[0].key or "")
    second = run_worker(processor_factory(), settings)
    begin, end = second.metrics.restore_window
    assert second.metrics.restored_keys == distinct, (second.metrics.restored_keys, distinct)
    return end - begin, second.metrics.restored_keys, len(sample or b"")


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--keys", type=int, default=1000)
    parser.add_argument("--quick", action="store_true", help="20,000 events, 2 runs")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT")
    args = parser.parse_args(argv)
    events, runs = (20_000, 2) if args.quick else (args.events, args.runs)
    console = Console(stderr=True)
    broker = None
    bootstrap, profile = args.bootstrap_servers, "production"
    if not bootstrap:
        from producers.broker import EmbeddedBroker

        broker = EmbeddedBroker().start()
        bootstrap, profile = broker.bootstrap, "embedded"
    results: dict[str, Any] = {"events": events, "runs": runs}
    try:
        stream = make_stream(events, symbols=100, seed=1)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("runtime benchmark", total=runs * 4)
            for kind in (CountingProcessor, SilentProcessor):
                pairs = []
                for _ in range(runs):
                    pairs.append(throughput(kind, stream, bootstrap, profile))
                    progress.advance(task)
                name = kind.__name__
                results[f"{name}_driver_events_per_s"] = median(d for d, _ in pairs)
                results[f"{name}_worker_events_per_s"] = median(w for _, w in pairs)
                results[f"{name}_worker_to_driver_ratio"] = median(w / d for d, w in pairs)
            for label, factory in (("small", CountingProcessor), ("20kb", PaddedProcessor)):
                restores = [restore_time(factory, args.keys, bootstrap, profile)
                            for _ in range(runs)]
                progress.advance(task, runs)
                results[f"restore_s_{label}"] = median(r[0] for r in restores)
                results[f"restored_keys_{label}"] = restores[0][1]
                results[f"snapshot_bytes_per_key_{label}"] = restores[0][2]
    finally:
        if broker is not None:
            broker.stop()
    table = Table(title=f"worker runtime, median of {runs} runs, {events} events")
    table.add_column("figure")
    table.add_column("value", justify="right")
    for key, value in results.items():
        table.add_row(key, f"{value:,.3f}" if isinstance(value, float) else f"{value:,}")
    Console().print(table)
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

