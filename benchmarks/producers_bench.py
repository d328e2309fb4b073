"""Producer throughput: events per second for simulate (generation only, to a file, to the
broker) and replay (recording to the broker), median of several runs in one process.

Starts its own EmbeddedBroker (or uses KAFKA_BOOTSTRAP). Each broker run writes to fresh
topics (a new prefix), and its time includes the final flush, so only acknowledged events
count. Run: `python benchmarks/producers_bench.py [--events N] [--runs R] [--quick]`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumers.bench.cluster import bootstrap as cluster_bootstrap
from producers.provision import ensure_topics
from producers.publisher import Publisher
from producers.replay import RecordingFile, replay
from producers.simulator import SimConfig, Simulation
from schemas.recording import RecordingWriter
from schemas.settings import Settings, load_settings
from schemas.topics import by_name

START_NS = time.time_ns() // 10**9 * 10**9


def bootstrap() -> AbstractContextManager[str]:
    return cluster_bootstrap(os.environ.get("KAFKA_BOOTSTRAP"))


def fresh_settings(servers: str) -> Settings:
    settings = load_settings(None, bootstrap_servers=servers, profile="embedded",
                             topic_prefix=f"bench{uuid.uuid4().hex[:8]}.")
    ensure_topics(settings, [by_name("market"), by_name("orders")])
    return settings


def config(events: int) -> SimConfig:
    # A duration rather than an event count: --events first probes the event rate, which
    # would be timed too. 20 instruments and 12 accounts make about 90 events per second.
    # Recent event times: the broker's retention would otherwise delete them as they land.
    return SimConfig(seed=1, instruments=20, accounts=12, duration_s=events / 90,
                     scenarios=("flash-crash", "runaway-algo", "volume-burst"),
                     start_ns=START_NS)


def generate(events: int) -> int:
    return sum(1 for _ in Simulation(config(events)))


def to_file(events: int, path: Path) -> int:
    with RecordingWriter(path) as writer:
        for topic, key, event in Simulation(config(events)):
            writer.write_event(topic, key, event)
    return int(writer.count)


def to_broker(events: int, servers: str) -> int:
    settings = fresh_settings(servers)
    with Publisher(settings) as publisher:
        for topic, key, event in Simulation(config(events)):
            publisher.publish(topic, key, event)
    result = publisher.close()
    assert result.ok, result.summary()
    return result.delivered


def replay_file(path: Path, servers: str) -> int:
    settings = fresh_settings(servers)
    with RecordingFile(path) as source, Publisher(settings) as publisher:
        replay(source.lines(), publisher)
    result = publisher.close()
    assert result.ok, result.summary()
    return result.delivered


def measure(name: str, runs: int, work: Callable[[], int], progress: Progress) -> list[float]:
    """Events per second of each run; a broker run's time includes its final flush."""
    task = progress.add_task(name, total=runs)
    rates = []
    for _ in range(runs):
        started = time.perf_counter()
        count = work()
        rates.append(count / (time.perf_counter() - started))
        progress.advance(task)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="10k events, 3 runs")
    args = parser.parse_args()
    events, runs = (10_000, 3) if args.quick else (args.events, args.runs)
    console = Console()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp, bootstrap() as servers:
        path = Path(tmp) / "sim.jsonl"
        with Progress(TextColumn("{task.description:<26}"), BarColumn(), MofNCompleteColumn(),
                      TimeElapsedColumn(), console=console) as progress:
            work: dict[str, Callable[[], int]] = {
                "simulate (generate only)": lambda: generate(events),
                "simulate -> file": lambda: to_file(events, path),
                "simulate -> broker": lambda: to_broker(events, servers),
                "replay file -> broker": lambda: replay_file(path, servers),
            }
            for name, job in work.items():
                results[name] = measure(name, runs, job, progress)
    table = Table(title=f"producer throughput, about {events:,} events per run, median of "
                        f"{runs} runs")
    for column in ("path", "median events/s", "min", "max"):
        table.add_column(column, justify="left" if column == "path" else "right")
    for name, rates in results.items():
        table.add_row(name, f"{statistics.median(rates):,.0f}", f"{min(rates):,.0f}",
                      f"{max(rates):,.0f}")
    console.print(table)


if __name__ == "__main__":
    main()
