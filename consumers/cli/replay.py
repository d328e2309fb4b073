"""`streamrisk replay FILE`: republish a recording, or a CSV file with a column mapping.

Keys, headers, values and per-key order are kept; each message's Kafka timestamp is its
event time. Exit codes: 0 all good, 1 some lines or rows were bad (reported with their line
numbers and skipped; every good one was published), 2 bad options, 3 some messages were not
delivered.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from consumers.cli.base import CliError, Context, positive_float

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from producers.replay import BadLine

NAME = "replay"
HELP = "republish a recording or a CSV file into Kafka, paced by event time"
BAD_INPUT = 1
DELIVERY_FAILED = 3
BAD_LINES_SHOWN = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE",
                        help="recording (.jsonl, .gz, .zst) or CSV file")
    parser.add_argument("--speed", type=positive_float, metavar="X",
                        help="event-time pacing: X times real time (default: as fast as "
                             "possible)")
    parser.add_argument("--topic-map", action="append", default=[], metavar="A=B",
                        help="publish messages of topic A to topic B (repeatable; names "
                             "without the prefix)")
    parser.add_argument("--start", metavar="TIME",
                        help="only events at or after TIME (ISO date/time or epoch s/ms/ns)")
    parser.add_argument("--end", metavar="TIME", help="only events before TIME")
    csv = parser.add_argument_group("CSV input")
    csv.add_argument("--format", choices=("jsonl", "csv"),
                     help="input format (default: csv for *.csv files, else jsonl)")
    csv.add_argument("--kind", choices=("bar", "trade", "quote"),
                     help="event kind of each CSV row")
    csv.add_argument("--symbol", metavar="S", help="instrument of every row")
    csv.add_argument("--columns", metavar="MAP",
                     help="FIELD=COLUMN,... e.g. ts=date,open=open,high=high,low=low,"
                          "close=close,volume=volume")
    csv.add_argument("--bar-interval", type=positive_float, metavar="S",
                     help="bar length in seconds (default: 86400 for date-only timestamps, "
                          "else 60)")


def run(ctx: Context) -> int:
    from pathlib import Path

    from consumers.cli.csv_options import csv_mapping
    from producers.csv_input import CsvError, parse_timestamp
    from producers.kafka import BrokerUnreachable, check_reachable
    from producers.publisher import Publisher
    from producers.replay import RecordingFile, ReplayError, csv_lines, parse_topic_map, replay

    args = ctx.args
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}", 2)
    try:
        topic_map = parse_topic_map(args.topic_map)
        start = parse_timestamp(args.start) if args.start else None
        end = parse_timestamp(args.end) if args.end else None
        mapping = csv_mapping(args, path)
    except (ValueError, CsvError, ReplayError) as exc:
        raise CliError(str(exc), 2) from None
    ctx.require_bootstrap()
    try:
        check_reachable(ctx.settings)
    except BrokerUnreachable as exc:
        raise CliError(str(exc)) from None

    shown = 0

    def on_bad(bad: BadLine) -> None:
        nonlocal shown
        shown += 1
        if shown <= BAD_LINES_SHOWN:
            ctx.err.print(f"{path}:{bad.line}: {bad.reason}", markup=False, soft_wrap=True)

    publisher = Publisher(ctx.settings)
    source: RecordingFile | None = None
    if mapping is None:
        source = RecordingFile(path)
        lines = source.lines()
    else:
        lines = csv_lines(path, mapping)
    progress, task = _progress(ctx, source.size if source else None)
    try:
        with progress:
            stats = replay(
                lines, publisher, speed=args.speed, topic_map=topic_map, start_ns=start,
                end_ns=end, on_topic=lambda a, b, ts: _ensure_topic(ctx, a, b, ts), on_bad=on_bad,
                on_progress=lambda s: progress.update(
                    task, completed=source.position if source else s.read, read=s.read))
    except CsvError as exc:
        raise CliError(str(exc), 2) from None
    finally:
        result = publisher.close()
        if source:
            source.close()
    if len(stats.bad) > BAD_LINES_SHOWN:
        ctx.err.print(f"... and {len(stats.bad) - BAD_LINES_SHOWN} more bad lines", markup=False)
    topics = ", ".join(f"{ctx.settings.topic(t)} ({n})" for t, n in stats.topics.items())
    ctx.out.print(f"replayed {stats.published} messages to {topics or 'no topic'}"
                  + (f"; {stats.filtered} outside the time window" if stats.filtered else ""),
                  markup=False, soft_wrap=True)
    if not result.ok:
        raise CliError(f"delivery failed: {result.summary()}", DELIVERY_FAILED)
    if stats.bad:
        raise CliError(f"{len(stats.bad)} bad lines in {path} were skipped (first at line "
                       f"{stats.bad[0].line}); every good line was published", BAD_INPUT)
    return 0


def _ensure_topic(ctx: Context, source: str, target: str, ts_ns: int) -> None:
    """Create `target` like its catalogue entry, or like `source`'s when it is a renamed copy;
    a topic outside the catalogue must already exist."""
    from dataclasses import replace

    from producers.kafka import make_admin
    from producers.provision import ProvisionError, ensure_topics
    from schemas.topics import by_name

    spec = None
    for name in (target, source):
        try:
            spec = replace(by_name(name), name=target)
            break
        except KeyError:
            continue
    if spec is not None:
        try:
            ensure_topics(ctx.settings, [spec])
        except ProvisionError as exc:
            raise CliError(str(exc)) from None
        return
    full = ctx.settings.topic(target)
    metadata = make_admin(ctx.settings).list_topics(timeout=ctx.settings.connect_timeout_s)
    if full not in metadata.topics:
        raise CliError(f"topic {full} is not in the catalogue and does not exist: create it "
                       "first or map it with --topic-map")


def _progress(ctx: Context, total: int | None) -> tuple[Progress, TaskID]:
    """A bar over the file's bytes (recordings) or a running count (CSV), terminal only."""
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("replay"), BarColumn(), TextColumn("{task.fields[read]} lines"),
                        TimeElapsedColumn(), console=ctx.err, transient=True,
                        disable=not ctx.err.is_terminal)
    task = progress.add_task("replay", total=total, read=0)
    return progress, task
