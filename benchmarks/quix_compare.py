"""streamrisk's market worker against a Quix Streams pipeline doing the same work
(DESIGN.md section 8: "ahead of a Quix Streams or Bytewax pipeline doing the same work").

    python -m venv .venv-quix && .venv-quix/bin/pip install -e . quixstreams==3.28.1
    python benchmarks/quix_compare.py [--quix-python .venv-quix/bin/python] [--events N]
                                      [--reps R] [--quick] [--json FILE]
                                      [--bootstrap-servers H:P]

quixstreams 3.28 requires confluent-kafka < 2.13, so the Quix Streams side runs in a venv of
its own (`--quix-python`); this script and the streamrisk worker run with the interpreter
that starts it, on the confluent-kafka streamrisk is tested with.

Both sides read the same market events (32 instruments, 8 partitions) from topics of their
own, exactly-once, and each commits about every 500 ms:

- **streamrisk**: one market worker process (`python -m consumers.runtime market`), as
  `streamrisk bench` measures it: its own batching, per-partition transactions, and state
  snapshots to the changelog every second.
- **Quix Streams**: one `Application` process (`processing_guarantee="exactly-once"`,
  `commit_interval=0.5`) whose dataframe hands every message to the same engine code
  (`EventRunner.handle`: decode, dedup, the default market model stack, encode) and routes
  each output to its topic with `to_topic`. Its models live in process memory only: no state
  store, no changelog. A Quix pipeline keeping River models in its state store would pickle
  them at every message, so this side does strictly less work than the streamrisk worker.

Each repetition is published in one transaction while the other side is frozen (SIGSTOP);
the sides take turns, the first alternating. A side's time runs from the first event of the
repetition it processes to the end of the commit that covers the last one (time spent
idle waiting for a commit timer is not counted, on either side). Figures are medians over
the repetitions; the ratio is streamrisk over Quix Streams (above 1: streamrisk is ahead).
Without --bootstrap-servers an embedded broker is started and stopped.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from confluent_kafka import KafkaError
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from consumers.bench.broker_runs import MARKET_STREAMS, MarketGroup, span_rate
from consumers.bench.cluster import (
    FREEZE_SESSION_MS,
    BenchError,
    ChildProcess,
    Publisher,
    bootstrap,
    drop_topics,
    fresh_settings,
    reader,
    truncate,
    wait_for,
)
from consumers.bench.probe import StatsFile, StatsRecorder
from consumers.bench.workloads import Message, market_messages
from schemas.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
QUIX_VERSION = "3.28.1"
COMMIT_INTERVAL_S = 0.5
"""Both sides: streamrisk's default `worker.commit_interval_ms`."""
TIMEOUT_S = 120.0


# --- the Quix Streams side, run in a child process ------------------------------------------


def run_quix_app(servers: str, prefix: str, profile: str, stats_path: str,
                 warmup: int, rep: int) -> None:
    """The Quix Streams pipeline. It keeps a stats file as a worker does
    (`consumers.bench.probe.StatsRecorder`): one batch per repetition (and one for the
    warm-up), from its first event to its last, and every checkpoint commit."""
    from quixstreams import Application, message_context
    from quixstreams.checkpointing import checkpoint as quix_checkpoint
    from quixstreams.models.serializers import Serializer

    from consumers.bench.inprocess import build_processor, runner_for
    from engine.driver import Emitted

    settings = load_settings(None, bootstrap_servers=servers, topic_prefix=prefix,
                             profile=profile)
    recorder = StatsRecorder(stats_path)

    # Timing only: the commit itself is Quix's own.
    commit = quix_checkpoint.Checkpoint.commit

    def timed_commit(self: Any, *args: Any, **kwargs: Any) -> None:
        t0 = time.perf_counter()
        commit(self, *args, **kwargs)
        recorder.checkpoint(time.perf_counter() - t0, 0, 0)

    quix_checkpoint.Checkpoint.commit = timed_commit

    class EmittedValue(Serializer):
        """An engine output is already encoded: its bytes go out as they are."""

        def __call__(self, value: Emitted, ctx: Any) -> bytes:
            return value.value

    session = FREEZE_SESSION_MS  # frozen between its repetitions, like the worker
    app = Application(broker_address=servers, consumer_group=f"{prefix}quix-market",
                      auto_offset_reset="earliest", processing_guarantee="exactly-once",
                      commit_interval=COMMIT_INTERVAL_S, loglevel="WARNING",
                      consumer_extra_config={"session.timeout.ms": session,
                                             "max.poll.interval.ms": session})
    market = app.topic(settings.topic("market"), key_deserializer="str",
                       value_deserializer="bytes")
    outputs = {short: app.topic(settings.topic(short), key_serializer="str",
                                value_serializer=EmittedValue())
               for short in ("risk.instruments", "risk.alerts", "risk.model-health",
                             "dlq")}
    runner = runner_for(build_processor("market", settings), settings)
    count = 0
    first_at = 0.0

    def handle(value: bytes, key: str, timestamp: int, headers: Any) -> list[Emitted]:
        nonlocal count, first_at
        count += 1
        into_rep = count - warmup  # 1 for the first event of a repetition, `rep` the last
        if count == 1 or (into_rep > 0 and into_rep % rep == 1):
            first_at = time.perf_counter()
        ctx = message_context()
        emitted = runner.handle(ctx.partition, ctx.offset, key, value)
        if into_rep == 0 or (into_rep > 0 and into_rep % rep == 0):
            recorder.batch(warmup if into_rep == 0 else rep, time.perf_counter() - first_at)
        return emitted

    sdf = app.dataframe(market)
    sdf = sdf.apply(handle, metadata=True, expand=True)
    sdf.to_topic(lambda value, key, ts, headers: outputs[value.topic],
                 key=lambda value: value.key)
    app.run()


class QuixProcess(ChildProcess):
    """The Quix Streams application in a child process, on topics of its own."""

    def __init__(self, python: str, base: Settings, servers: str, workdir: Path, warmup: int,
                 rep: int) -> None:
        self.settings = fresh_settings(base, servers, "quix")
        self.publisher = Publisher(self.settings, "market")
        self.stats = StatsFile(workdir / "quix.stats.jsonl")
        self.log = workdir / "quix.log"
        self.label = "the Quix Streams app"
        self.rates: list[float] = []
        self.total = 0
        cmd = [python, str(Path(__file__).resolve()), "--quix-app", servers,
               self.settings.topic_prefix, self.settings.profile, str(self.stats.path),
               str(warmup), str(rep)]
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(cmd, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    def _committed(self) -> bool:
        """Every event published so far is processed and committed."""
        self.stats.read()
        stats = self.stats
        return (stats.events >= self.total
                and stats.committed_after(stats.batches[-1].t1) is not None)

    def _publish(self, messages: Sequence[Message], what: str) -> None:
        self.publisher.publish(messages)
        self.total += len(messages)
        wait_for(self._committed, TIMEOUT_S, f"Quix Streams: {what} to be committed", [self])
        truncate(self.settings, MARKET_STREAMS)

    def ready(self, warmup: Sequence[Message]) -> None:
        def started() -> bool:
            self.stats.read()
            return self.stats.started is not None

        wait_for(started, TIMEOUT_S, "the Quix Streams app to start", [self])
        self._publish(warmup, "the warm-up")

    def rep(self, messages: Sequence[Message]) -> float:
        since = time.perf_counter()
        self._publish(messages, "a repetition")
        rate, _, _ = span_rate([self.stats], len(messages), since)
        self.rates.append(rate)
        return rate

    def close(self) -> None:
        self.terminate()
        drop_topics(self.settings)


# --- the comparison ---------------------------------------------------------------------


def alert_ids(settings: Settings) -> set[str]:
    """The event ids of every committed alert (risk.alerts is kept: `truncate` leaves it)."""
    consumer = reader(settings, ["risk.alerts"], **{"enable.partition.eof": True})
    pending = {tp.partition for tp in consumer.assignment()}
    ids: set[str] = set()
    deadline = time.monotonic() + TIMEOUT_S
    try:
        while pending:
            if time.monotonic() > deadline:
                raise BenchError(f"could not read {settings.topic('risk.alerts')} to its end")
            for msg in consumer.consume(10_000, 0.2):
                error = msg.error()
                if error is None:
                    ids.add(orjson.loads(msg.value())["event_id"])  # type: ignore[arg-type]
                elif error.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
    finally:
        consumer.close()
    return ids


def compare(quix_python: str, quix_label: str, servers: str, profile: str, events: int,
            reps: int, warmup: int, progress: Progress) -> dict[str, Any]:
    base = load_settings(None, bootstrap_servers=servers, profile=profile)
    messages = market_messages(warmup + events * reps, instruments=32, seed=1,
                               crossed_every=20)
    task = progress.add_task("starting both sides", total=2 + 2 * reps)
    with tempfile.TemporaryDirectory(prefix="quix-compare-") as tmp:
        workdir = Path(tmp)
        ours = MarketGroup(base, servers, 1, workdir)
        quix = QuixProcess(quix_python, base, servers, workdir, warmup, events)
        try:
            ours.ready(messages[:warmup])
            ours.freeze()
            progress.advance(task)
            quix.ready(messages[:warmup])
            quix.freeze()
            progress.advance(task)
            for r in range(reps):
                chunk = messages[warmup + r * events: warmup + (r + 1) * events]
                order: list[tuple[MarketGroup | QuixProcess, str]] = [
                    (ours, "streamrisk"), (quix, "Quix Streams")]
                for side, name in order if r % 2 == 0 else order[::-1]:
                    progress.update(task, description=f"repetition {r + 1}/{reps}: {name}")
                    side.thaw()
                    side.rep(chunk)
                    side.freeze()
                    progress.advance(task)
            # The same work: the same alerts from the same events, each exactly once.
            ours_ids, quix_ids = alert_ids(ours.settings), alert_ids(quix.settings)
            if ours_ids != quix_ids:
                raise BenchError(f"the sides disagree: {len(ours_ids)} alerts from streamrisk, "
                                 f"{len(quix_ids)} from Quix Streams, "
                                 f"{len(ours_ids ^ quix_ids)} not in both")
        finally:
            quix.close()
            result = ours.close()
    streamrisk = statistics.median(result.rates)
    quix_rate = statistics.median(quix.rates)
    return {"streamrisk_events_per_s": streamrisk, "quix_events_per_s": quix_rate,
            "streamrisk_to_quix_ratio": streamrisk / quix_rate,
            "details": {"streamrisk_rates": result.rates, "quix_rates": quix.rates,
                        "events_per_repetition": events, "repetitions": reps,
                        "warmup_events": warmup, "quixstreams": quix_label,
                        "commit_interval_s": COMMIT_INTERVAL_S, "guarantee": "exactly-once",
                        "instruments": 32, "alerts_each_side": len(ours_ids)}}


def quix_version(python: str) -> str:
    """The quixstreams version of `python`'s environment; BenchError when it has none."""
    probe = [python, "-c", "from importlib.metadata import version; "
             "print(version('quixstreams'), version('confluent-kafka'))"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except OSError as exc:
        raise BenchError(f"cannot run {python}: {exc.strerror}") from None
    if done.returncode != 0:
        raise BenchError(f"{python} has no quixstreams: install it in a venv of its own "
                         f"(pip install -e . quixstreams=={QUIX_VERSION}) and pass its python "
                         "with --quix-python")
    quix, client = done.stdout.split()
    return f"{quix} (confluent-kafka {client})"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--quix-app"]:
        servers, prefix, profile, stats, warmup, rep = argv[1:7]
        run_quix_app(servers, prefix, profile, stats, int(warmup), int(rep))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=12_000, help="events per repetition")
    parser.add_argument("--reps", type=int, default=5, help="repetitions per side")
    parser.add_argument("--quick", action="store_true", help="3 repetitions of 6,000")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument("--bootstrap-servers", help="a running cluster (else embedded)")
    parser.add_argument("--quix-python", default=str(ROOT / ".venv-quix" / "bin" / "python"),
                        help="python of a venv with quixstreams (default: .venv-quix)")
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    events, reps = (6_000, 3) if args.quick else (args.events, args.reps)
    profile = "production" if args.bootstrap_servers else "embedded"
    try:
        version = quix_version(args.quix_python)
        with bootstrap(args.bootstrap_servers) as servers, Progress(console=err) as progress:
            figures = compare(args.quix_python, version, servers, profile, events, reps,
                              3_000, progress)
    except BenchError as exc:
        err.print(f"error: {exc}")
        return 1
    table = Table(title="streamrisk vs Quix Streams: market worker, exactly-once")
    table.add_column("figure")
    table.add_column("median", justify="right")
    table.add_column("repetitions", justify="right")
    d = figures["details"]
    table.add_row("streamrisk events/s", f"{figures['streamrisk_events_per_s']:,.0f}",
                  ", ".join(f"{r:,.0f}" for r in d["streamrisk_rates"]))
    table.add_row(f"Quix Streams {d['quixstreams'].split()[0]} events/s",
                  f"{figures['quix_events_per_s']:,.0f}",
                  ", ".join(f"{r:,.0f}" for r in d["quix_rates"]))
    table.add_row("streamrisk / Quix Streams", f"{figures['streamrisk_to_quix_ratio']:.2f}",
                  "")
    Console().print(table)
    if args.json:
        args.json.write_bytes(orjson.dumps(figures, option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
