"""`streamrisk simulate`: simulated market and order flow, with labelled scenarios.

Without --out the events go to the catalogue topics (`market`, `orders`), created first if
missing; with --out they are written in the recording format and no broker is needed.
Exit codes: 0 done, 1 bad option, 3 some messages were not delivered.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from consumers.cli.base import CliError, Context, positive_float, positive_int

if TYPE_CHECKING:
    from producers.publisher import Publisher
    from producers.simulator import SimConfig, Simulation

Advance = Callable[[int], None]

NAME = "simulate"
HELP = "simulate market data and order flow with labelled scenarios"
DEFAULT_DURATION_S = 600.0
DELIVERY_FAILED = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--events", type=positive_int, metavar="N",
                      help="stop after N events")
    size.add_argument("--duration", type=positive_float, metavar="S",
                      help=f"simulated seconds to generate (default {DEFAULT_DURATION_S:g} "
                           "when --events is not given)")
    parser.add_argument("--seed", type=int, default=0, metavar="N",
                        help="random seed: the same seed gives byte-identical events "
                             "(default 0)")
    parser.add_argument("--instruments", type=positive_int, default=8, metavar="N",
                        help="number of instruments (default 8)")
    parser.add_argument("--accounts", type=int, default=6, metavar="N",
                        help="number of trading accounts, 0 for market data only (default 6)")
    parser.add_argument("--scenario", action="append", default=[], metavar="NAME",
                        help="inject a labelled scenario (repeatable; `--scenario list` "
                             "prints them)")
    parser.add_argument("--rate", type=positive_float, metavar="R",
                        help="pace to R events per second (default: as fast as possible)")
    parser.add_argument("--out", metavar="FILE",
                        help="write a recording (.jsonl, .gz or .zst) instead of publishing")
    parser.add_argument("--labels", metavar="FILE",
                        help="write the injected scenarios as JSONL (scenario, entity, "
                             "start_ts, end_ts)")
    parser.add_argument("--start", metavar="TIME",
                        help="simulated start of the session: ISO date-time, epoch, or `now` "
                             "(default 2024-01-02T14:30:00Z, the same for every run; when "
                             "publishing, recent times keep the broker's retention from "
                             "deleting the events)")
    parser.add_argument("--no-news", action="store_true",
                        help="no NewsSentiment events (scenarios may still emit them)")


def _list_scenarios(ctx: Context) -> int:
    from rich.table import Table

    from producers.simulator import describe_scenarios

    table = Table(box=None, show_header=True, header_style="bold")
    table.add_column("scenario")
    table.add_column("entity")
    table.add_column("what it injects")
    for name, target, description in describe_scenarios():
        table.add_row(name, target, description)
    ctx.out.print(table)
    return 0


def run(ctx: Context) -> int:
    args = ctx.args
    if "list" in args.scenario:
        return _list_scenarios(ctx)

    from producers.simulator import SimConfig, Simulation, write_labels

    duration = args.duration
    if args.events is None and duration is None:
        duration = DEFAULT_DURATION_S
    try:
        config = SimConfig(seed=args.seed, instruments=args.instruments, accounts=args.accounts,
                           scenarios=tuple(args.scenario), events=args.events,
                           duration_s=duration, news=not args.no_news,
                           start_ns=_start(args.start))
    except ValueError as exc:
        raise CliError(str(exc)) from None
    sim = Simulation(config)
    publisher = None if args.out else _publisher(ctx)
    result = None
    try:
        with _progress(ctx, config) as advance:
            if publisher is None:
                _write(sim, args.out, args.rate, advance)
            else:
                _publish(sim, publisher, args.rate, advance)
    except KeyboardInterrupt:
        ctx.err.print("interrupted: keeping the events produced so far", markup=False)
    finally:
        if publisher is not None:
            result = publisher.close()
        if args.labels:
            write_labels(args.labels, sim.labels())
    for label in sim.not_injected():
        ctx.err.print(f"warning: scenario {label.scenario} on {label.entity} was cut short or "
                      "not reached: give more --events or --duration", markup=False,
                      soft_wrap=True)
    span = ((sim.last_ts or config.start_ns) - config.start_ns) / 1e9
    where = args.out or ", ".join(ctx.settings.topic(t) for t in ("market", "orders"))
    ctx.out.print(f"simulated {sim.emitted} events ({span:.1f} s of market time, "
                  f"{len(sim.labels())} scenario labels) -> {where}", markup=False,
                  soft_wrap=True)
    if result is not None and not result.ok:
        raise CliError(f"delivery failed: {result.summary()}", DELIVERY_FAILED)
    return 0


def _start(text: str | None) -> int:
    """Start of simulated time; `now` (to the second) is the one choice that varies by run."""
    from producers.csv_input import parse_timestamp
    from producers.simulator import DEFAULT_START_NS

    if text is None:
        return DEFAULT_START_NS
    if text.strip().lower() == "now":
        import time

        return time.time_ns() // 10**9 * 10**9
    return parse_timestamp(text)


def _publisher(ctx: Context) -> Publisher:
    from producers.kafka import BrokerUnreachable
    from producers.provision import ProvisionError, ensure_topics
    from producers.publisher import Publisher
    from schemas.topics import by_name

    ctx.require_bootstrap()
    try:
        ensure_topics(ctx.settings, [by_name("market"), by_name("orders")])
    except (BrokerUnreachable, ProvisionError) as exc:
        raise CliError(str(exc)) from None
    return Publisher(ctx.settings)


def _write(sim: Simulation, out: str, rate: float | None, advance: Advance) -> None:
    from producers.publisher import RatePacer
    from schemas.recording import RecordingWriter

    pacer = RatePacer(rate)
    try:
        writer = RecordingWriter(out)
    except OSError as exc:
        raise CliError(f"cannot write {out}: {exc.strerror or exc}") from None
    with writer:
        for topic, key, event in sim:
            pacer.wait()
            writer.write_event(topic, key, event)
            advance(event.ts_event)


def _publish(sim: Simulation, publisher: Publisher, rate: float | None,
             advance: Advance) -> None:
    from producers.publisher import RatePacer

    pacer = RatePacer(rate, idle=publisher.poll)
    for topic, key, event in sim:
        pacer.wait()
        publisher.publish(topic, key, event)
        advance(event.ts_event)


@contextmanager
def _progress(ctx: Context, config: SimConfig) -> Iterator[Advance]:
    """A progress bar on stderr, only on a terminal: in events, or in simulated seconds."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    progress = Progress(TextColumn("simulate"), BarColumn(), MofNCompleteColumn(),
                        TextColumn("{task.fields[rate]} events/s"), TimeElapsedColumn(),
                        console=ctx.err, transient=True, disable=not ctx.err.is_terminal)
    total = config.events or int(config.duration_s or 0)
    task = progress.add_task("simulate", total=total, rate="-")
    count = 0

    def advance(ts_event: int) -> None:
        nonlocal count
        count += 1
        if count % 2000:
            return
        elapsed = progress.tasks[0].elapsed or 0.0
        done = count if config.events else int((ts_event - config.start_ns) / 1e9)
        progress.update(task, completed=done,
                        rate=f"{count / elapsed:,.0f}" if elapsed else "-")

    with progress:
        yield advance
