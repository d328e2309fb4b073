"""`streamrisk webhook URL`: forward risk alerts to an HTTP endpoint, at least once."""

from __future__ import annotations

import argparse

from consumers.cli.base import CliError, Context

NAME = "webhook"
HELP = "POST risk alerts to a URL with retries; commits only what was delivered"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("url", metavar="URL",
                        help="http(s) endpoint; a bearer token, if needed, comes from "
                             "STREAMRISK_WEBHOOK_TOKEN (never put secrets on the command line)")
    parser.add_argument("--severity", nargs="+", metavar="LEVEL",
                        help="forward only these severities (info, warning, critical)")
    parser.add_argument("--group", default="streamrisk-webhook", metavar="G",
                        help="consumer group holding the delivered position "
                             "(default streamrisk-webhook; one per receiver)")
    parser.add_argument("--from-beginning", action="store_true",
                        help="a new group starts at the oldest retained alert (default: new "
                             "alerts only); an existing group always resumes where it stopped")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S",
                        help="seconds to wait for the receiver per request (default 10)")
    parser.add_argument("--max-attempts", type=int, default=0, metavar="N",
                        help="give up (exit 1, alert not committed) after N failed attempts at "
                             "one alert; default 0 retries until delivered")
    parser.add_argument("--backoff-max", type=float, default=30.0, metavar="S",
                        help="longest wait between retries, in seconds (default 30)")


def run(ctx: Context) -> int:
    import os
    import signal
    import threading

    from consumers.subscribers.filters import SEVERITIES
    from consumers.subscribers.webhook import (
        TOKEN_ENV,
        DeliveryPolicy,
        WebhookError,
        WebhookForwarder,
        check_url,
        redact_url,
    )
    from producers.kafka import BrokerUnreachable, check_reachable

    args = ctx.args
    try:
        check_url(args.url)
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    severities = frozenset(v.strip() for raw in args.severity or [] for v in raw.split(",")
                           if v.strip())
    bad = sorted(severities - set(SEVERITIES))
    if bad:
        raise CliError(f"unknown severity {', '.join(bad)}: choose from {', '.join(SEVERITIES)}",
                       2)
    if args.timeout <= 0 or args.max_attempts < 0 or args.backoff_max <= 0:
        raise CliError("--timeout and --backoff-max must be positive, --max-attempts >= 0", 2)
    ctx.require_bootstrap()
    try:
        check_reachable(ctx.settings)
    except BrokerUnreachable as exc:
        raise CliError(str(exc)) from None
    policy = DeliveryPolicy(timeout_s=args.timeout, max_attempts=args.max_attempts,
                            backoff_max_s=args.backoff_max,
                            backoff_initial_s=min(0.5, args.backoff_max))
    forwarder = WebhookForwarder(ctx.settings, args.url, group_id=args.group,
                                 severities=severities, policy=policy,
                                 token=os.environ.get(TOKEN_ENV) or None,
                                 from_beginning=args.from_beginning)
    stop = threading.Event()
    # SIGTERM (docker stop, kubectl) stops like Ctrl-C: commit what was delivered, then exit.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    ctx.err.print(f"forwarding alerts from {ctx.settings.topic('risk.alerts')} to "
                  f"{redact_url(args.url)} (group {args.group}); Ctrl-C to stop", markup=False)
    try:
        stats = forwarder.run(stop)
    except KeyboardInterrupt:
        stop.set()
        stats = forwarder.stats
    except WebhookError as exc:
        raise CliError(str(exc)) from None
    ctx.err.print(f"delivered {stats.delivered} alert(s) in {stats.attempts} request(s); "
                  f"{stats.filtered} filtered, {stats.skipped} not alerts", markup=False)
    return 0
