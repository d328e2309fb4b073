"""`streamrisk bench [--quick] [--json FILE]`: the performance figures of DESIGN.md section 8.

Measures the engine in-process and through a broker (its own EmbeddedBroker, or the cluster
named by --bootstrap-servers) with workers as separate processes, prints a table and writes
the figures as JSON (see `consumers.bench`). `--quick` runs fewer and shorter repetitions
(under two minutes on a laptop); the full run takes a few minutes.
"""

from __future__ import annotations

import argparse

from consumers.cli.base import CliError, Context

NAME = "bench"
HELP = "measure throughput, latency, state size and restore time (DESIGN.md section 8)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--quick", action="store_true",
                        help="fewer and shorter repetitions (under two minutes)")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    # The suite's smallest configuration (a few seconds, for tests).
    parser.add_argument("--smallest", action="store_true", help=argparse.SUPPRESS)


def run(ctx: Context) -> int:
    from pathlib import Path

    import orjson

    from consumers.bench.cluster import BenchError
    from consumers.bench.suite import FULL, QUICK, SMALLEST, render, run_suite
    from producers.broker import BrokerError

    args = ctx.args
    config = SMALLEST if args.smallest else QUICK if args.quick else FULL
    target = Path(args.json) if args.json else None
    if target is not None and not target.parent.exists():
        raise CliError(f"cannot write {target}: {target.parent} does not exist")
    settings = ctx.settings
    try:
        result = run_suite(config, settings, settings.bootstrap_servers, ctx.err,
                           config_file=args.config)
    except (BenchError, BrokerError) as exc:
        raise CliError(str(exc)) from None
    render(result, ctx.out)
    if target is not None:
        try:
            target.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2
                                            | orjson.OPT_SERIALIZE_NUMPY))
        except OSError as exc:
            raise CliError(f"cannot write {target}: {exc.strerror}") from None
        ctx.out.print(f"wrote {target}")
    return 0
