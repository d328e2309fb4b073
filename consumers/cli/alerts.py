"""`streamrisk alerts`: tail alerts, decisions, breaches and trading-state changes."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from consumers.cli.base import CliError, Context

if TYPE_CHECKING:
    from rich.text import Text

    from consumers.subscribers.filters import Row

NAME = "alerts"
HELP = "tail risk alerts, pre-trade decisions, limit breaches and trading-state changes"

_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow", "info": "dim"}
_KIND_STYLE = {"alert": "magenta", "decision": "cyan", "breach": "red", "state": "blue"}
# Columns are padded to these widths but never cut: a row is one line however long (the
# terminal wraps it), so piped output keeps every character for grep.
_COLUMNS = (("time (UTC)", 23), ("kind", 8), ("severity", 8), ("entity", 16), ("code", 20))


def _split(values: list[str] | None) -> frozenset[str]:
    """Accept both `--severity a b` and `--severity a,b`."""
    return frozenset(v.strip() for raw in values or [] for v in raw.split(",") if v.strip())


def _line(row: Row) -> Text:
    from rich.text import Text

    cells = (row.time, row.kind, row.severity, row.entity, row.code)
    styles = ("dim", _KIND_STYLE.get(row.kind, ""), _SEVERITY_STYLE.get(row.severity, ""),
              "bold", "")
    text = Text()
    for (_, width), cell, style in zip(_COLUMNS, cells, styles, strict=True):
        text.append(cell.ljust(width), style)
        text.append("  ")
    text.append(row.detail)
    return text


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--follow", "-f", action="store_true",
                        help="keep printing new records as they arrive (Ctrl-C to stop)")
    parser.add_argument("--json", action="store_true",
                        help="one JSON object per line (the event as published) instead of a table")
    parser.add_argument("--severity", nargs="+", metavar="LEVEL",
                        help="keep only these severities: info, warning, critical (decision deny "
                             "= warning, hard breach = critical, halt = critical)")
    parser.add_argument("--account", action="append", metavar="A",
                        help="keep only records about this account (repeatable)")
    parser.add_argument("--instrument", action="append", metavar="I",
                        help="keep only records about this instrument (repeatable)")
    parser.add_argument("--type", nargs="+", metavar="T",
                        help="keep only these kinds (alert, decision, breach, state), event types "
                             "(RiskAlert...) or codes (an alert reason code such as VAR_BREACH, a "
                             "decision reason code, a breach metric, HALTED...)")
    start = parser.add_mutually_exclusive_group()
    start.add_argument("--from-beginning", action="store_true",
                       help="start at the oldest retained record of every partition")
    start.add_argument("--last", type=int, default=10, metavar="N",
                       help="start N records back on every partition (default 10)")


def run(ctx: Context) -> int:
    import sys
    import threading

    import orjson
    from rich.text import Text

    from consumers.subscribers.filters import SEVERITIES, EventFilter
    from consumers.subscribers.tail import TailError, TailReader
    from producers.kafka import BrokerUnreachable, check_reachable

    args = ctx.args
    severities = _split(args.severity)
    bad = sorted(severities - set(SEVERITIES))
    if bad:
        raise CliError(f"unknown severity {', '.join(bad)}: choose from {', '.join(SEVERITIES)}",
                       2)
    if args.last < 0:
        raise CliError("--last must be zero or more", 2)
    ctx.require_bootstrap()
    try:
        check_reachable(ctx.settings)
    except BrokerUnreachable as exc:
        raise CliError(str(exc)) from None
    event_filter = EventFilter(severities=severities, accounts=_split(args.account),
                               instruments=_split(args.instrument), types=_split(args.type))
    reader = TailReader(ctx.settings, last=None if args.from_beginning else args.last,
                        event_filter=event_filter)

    stop = threading.Event()
    shown = 0
    try:
        if not args.json:
            header = "  ".join(title.ljust(width) for title, width in _COLUMNS) + "  detail"
            ctx.out.print(Text(header, "bold"), soft_wrap=True)
        for record in reader.read(follow=args.follow, stop=stop):
            shown += 1
            if args.json:
                sys.stdout.write(orjson.dumps(record.to_json()).decode() + "\n")
                sys.stdout.flush()
                continue
            ctx.out.print(_line(record.row), soft_wrap=True)
    except TailError as exc:
        raise CliError(str(exc)) from None
    except KeyboardInterrupt:
        stop.set()
    if reader.skipped:
        ctx.err.print(f"skipped {reader.skipped} record(s) that are not valid output events",
                      markup=False)
    if not args.json and not args.follow and shown == 0:
        ctx.err.print("no matching records", markup=False)
    return 0
