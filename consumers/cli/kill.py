"""`streamrisk kill --scope SCOPE`: the kill switch.

Publishes a TradingStateCommand(kill) to `risk.control`. The order workers halt the scope
(only cancels pass), emit a MassCancel for its open orders and a TradingStateChanged naming
who issued it. The command is audited: `--by` (default: the operating-system user) and
`--reason` travel with it, and the workers reject commands that name nobody.
"""

from __future__ import annotations

import argparse

from consumers.cli.base import CliError, Context, require_topic

NAME = "kill"
HELP = "kill switch: halt a scope (firm, desk, account, strategy, instrument) and cancel its orders"
TOPIC = "risk.control"


def add_command_arguments(parser: argparse.ArgumentParser, verb: str) -> None:
    parser.add_argument("--scope", required=True, metavar="KIND:ID",
                        help="firm:F, desk:D, account:A, strategy:A/S or instrument:SYM")
    parser.add_argument("--by", metavar="WHO",
                        help="who issues the command (default: the operating-system user)")
    parser.add_argument("--reason", metavar="TEXT",
                        help=f"why (kept in the audit; default: '{verb} from the command line')")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_command_arguments(parser, "kill switch")


def publish_command(ctx: Context, what: str, default_reason: str) -> int:
    """Build, validate and publish one TradingStateCommand; print its id."""
    import getpass
    import time

    from pydantic import ValidationError

    from producers.kafka import DeliveryTracker, command_producer, flush_all
    from schemas.codec import describe_validation_error, encode
    from schemas.control import StateCommand, TradingStateCommand
    from schemas.ids import content_event_id

    args = ctx.args
    who = args.by
    if who is None:
        try:
            who = getpass.getuser()
        except (KeyError, OSError):
            who = ""
    if not who or not who.strip():
        raise CliError("cannot tell who issues the command: pass --by WHO", 2)
    reason = args.reason if args.reason is not None else default_reason
    now = time.time_ns()
    try:
        cmd = TradingStateCommand(
            event_id=content_event_id("TradingStateCommand", args.scope, now, what, who),
            ts_event=now, ts_init=now, source="streamrisk-cli", scope=args.scope,
            command=StateCommand(what), issued_by=who, reason=reason)
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc), 2) from None
    settings = require_topic(ctx, TOPIC)
    topic = settings.topic(TOPIC)
    producer = command_producer(settings)
    tracker = DeliveryTracker()
    producer.produce(topic, key=cmd.scope.encode(), value=encode(cmd),
                     on_delivery=tracker.on_delivery)
    left = flush_all(producer, settings.connect_timeout_s + 5)
    if left or tracker.failed:
        detail = tracker.errors[0] if tracker.errors else "not acknowledged by the broker"
        raise CliError(f"publishing the {what} command to {topic} failed: {detail}")
    ctx.out.print(f"{what} {cmd.scope} by {who}: published to {topic} ({cmd.event_id})",
                  markup=False)
    return 0


def run(ctx: Context) -> int:
    return publish_command(ctx, "kill", "kill switch from the command line")
