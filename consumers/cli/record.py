"""`streamrisk record`: read topics (read-committed) into a recording file."""

from __future__ import annotations

import argparse

from consumers.cli.base import CliError, Context, positive_float, positive_int

NAME = "record"
HELP = "record topics (read-committed) into a recording file (.jsonl, .gz or .zst)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--topics", required=True, metavar="T[,T...]",
                        help="topics to record, names without the prefix (e.g. market,orders)")
    parser.add_argument("--out", required=True, metavar="FILE",
                        help="recording to write; .gz or .zst compresses it")
    parser.add_argument("--max-events", type=positive_int, metavar="N",
                        help="stop after N messages")
    parser.add_argument("--idle-timeout", type=positive_float, metavar="S",
                        help="stop after S seconds without a new message (default: run until "
                             "Ctrl-C)")
    parser.add_argument("--from-end", action="store_true",
                        help="record only messages that arrive from now on (default: from "
                             "the beginning of each topic)")


def run(ctx: Context) -> int:
    import signal

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from consumers.recorder import Recorder, RecorderError, RecordStats
    from producers.kafka import BrokerUnreachable, check_reachable

    args = ctx.args
    topics = [t.strip() for t in args.topics.split(",") if t.strip()]
    if not topics:
        raise CliError("--topics is empty: name at least one topic", 2)
    ctx.require_bootstrap()
    try:
        check_reachable(ctx.settings)
        recorder = Recorder(ctx.settings, topics, args.out, max_events=args.max_events,
                            idle_timeout_s=args.idle_timeout, from_end=args.from_end)
    except (BrokerUnreachable, RecorderError) as exc:
        raise CliError(str(exc)) from None
    progress = Progress(TextColumn("record"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[topics]}"), TimeElapsedColumn(),
                        console=ctx.err, transient=True, disable=not ctx.err.is_terminal)
    task = progress.add_task("record", total=args.max_events, topics="")

    def show(stats: RecordStats) -> None:
        per_topic = "  ".join(f"{t} {n}" for t, n in stats.per_topic.items())
        progress.update(task, completed=stats.count, topics=per_topic)

    # Ctrl-C stops the recording cleanly: the file is closed complete and summarised.
    previous = signal.signal(signal.SIGINT, lambda *_: recorder.stop())
    try:
        with progress:
            stats = recorder.run(on_progress=show)
    except RecorderError as exc:
        raise CliError(str(exc)) from None
    finally:
        signal.signal(signal.SIGINT, previous)
    per_topic = ", ".join(f"{t} {n}" for t, n in stats.per_topic.items()) or "nothing"
    reason = "Ctrl-C" if stats.stopped_by == "stop" else stats.stopped_by
    ctx.out.print(f"recorded {stats.count} messages ({per_topic}) to {args.out} "
                  f"in {stats.elapsed_s:.1f} s, stopped by {reason}", markup=False,
                  soft_wrap=True)
    return 0
