"""`streamrisk publish`: JSONL events on stdin, validated and published to their topics.

Invalid lines are reported on stderr with their line numbers and sent to the dead-letter
topic. Exit codes: 0 all lines valid and delivered, 1 some lines were invalid (each went to
the dead-letter topic; every valid one was published), 3 some messages were not delivered.
"""

from __future__ import annotations

import argparse

from consumers.cli.base import CliError, Context

NAME = "publish"
HELP = "publish JSONL events from stdin; invalid lines go to the dead-letter topic"
BAD_INPUT = 1
DELIVERY_FAILED = 3
INVALID_SHOWN = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = ("reads one event object per line from stdin, e.g. "
                     "`tail -f feed.jsonl | streamrisk publish`")


def run(ctx: Context) -> int:
    import sys

    from producers.kafka import BrokerUnreachable
    from producers.live import publish_lines
    from producers.provision import ProvisionError, ensure_topics
    from producers.publisher import Publisher
    from schemas.codec import DecodeError
    from schemas.topics import CATALOGUE

    ctx.require_bootstrap()
    try:
        ensure_topics(ctx.settings, CATALOGUE)
    except (BrokerUnreachable, ProvisionError) as exc:
        raise CliError(str(exc)) from None

    def on_invalid(line: int, error: DecodeError) -> None:
        if invalid_shown[0] < INVALID_SHOWN:
            ctx.err.print(f"stdin:{line}: {error}", markup=False, soft_wrap=True)
        invalid_shown[0] += 1

    invalid_shown = [0]
    publisher = Publisher(ctx.settings)
    try:
        stats = publish_lines(sys.stdin.buffer, publisher, on_invalid=on_invalid)
    except KeyboardInterrupt:
        ctx.err.print("interrupted: flushing what was read", markup=False)
        raise
    finally:
        result = publisher.close()
    if stats.invalid > INVALID_SHOWN:
        ctx.err.print(f"... and {stats.invalid - INVALID_SHOWN} more invalid lines",
                      markup=False)
    ctx.out.print(f"published {stats.published} events; {stats.invalid} invalid lines sent to "
                  f"{ctx.settings.topic('dlq')}", markup=False, soft_wrap=True)
    if not result.ok:
        raise CliError(f"delivery failed: {result.summary()}", DELIVERY_FAILED)
    if stats.invalid:
        raise CliError(f"{stats.invalid} invalid lines (first shown above) went to "
                       f"{ctx.settings.topic('dlq')}; every valid event was published", BAD_INPUT)
    return 0
