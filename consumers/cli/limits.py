"""`streamrisk limits set | show | diff`: manage limits on the compacted `risk.limits` topic.

* `set FILE --by WHO` publishes every scope of a YAML/TOML limits file (format in
  `engine.limits.load_limits_file`); `set --scope S --metric M --soft X --hard Y --by WHO`
  changes one metric of one scope, keeping the scope's other levels as they are on the
  topic; with `--approver A --expires WHEN` it is a temporary override instead.
* `show` prints the limits in force as the workers see them: every scope's own levels and
  the effective (tightest) levels, read from the topic.
* `diff FILE` compares a file with the topic; exit status 1 when they differ (like diff(1)).

Every change carries who made it (`--by`, or the file's `changed_by`); the workers reject
changes without it and publish every accepted change as an audit record.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, Any

from consumers.cli.base import CliError, Context, require_topic

if TYPE_CHECKING:
    from schemas.control import LimitConfig
    from schemas.settings import Settings

NAME = "limits"
HELP = "set, show and diff risk limits (firm, desk, account, strategy, instrument)"
TOPIC = "risk.limits"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    put = sub.add_parser("set", help="publish limits from a file, or one metric of one scope",
                         description="Publish a YAML/TOML limits file, or change one metric: "
                                     "--scope S --metric M --soft X --hard Y. With --approver "
                                     "and --expires the change is a temporary override.")
    put.add_argument("file", nargs="?", metavar="FILE", help="YAML or TOML limits file")
    put.add_argument("--scope", metavar="KIND:ID", help="e.g. account:ACC-1, desk:EQ, firm:ACME")
    put.add_argument("--metric", metavar="M", help="e.g. order_notional, day_loss")
    put.add_argument("--soft", type=float, metavar="X", help="soft (warning) level")
    put.add_argument("--hard", type=float, metavar="Y", help="hard level")
    put.add_argument("--parent", metavar="KIND:ID", help="parent scope (hierarchy link)")
    put.add_argument("--appetite", type=float, metavar="F",
                     help="client risk appetite factor (scales account and strategy levels)")
    put.add_argument("--approver", metavar="WHO", help="approver of a temporary override")
    put.add_argument("--expires", metavar="WHEN",
                     help="override expiry: ISO-8601 time, duration (30m, 2h, 1d) or ns")
    put.add_argument("--reason", default="", metavar="TEXT", help="why (kept in the audit)")
    put.add_argument("--by", metavar="WHO", help="who makes the change (required unless the "
                                                 "file names changed_by)")
    show = sub.add_parser("show", help="effective limits as read from the risk.limits topic")
    show.add_argument("--scope", action="append", metavar="KIND:ID",
                      help="only these scopes (repeatable)")
    show.add_argument("--json", action="store_true", help="JSON lines instead of a table")
    diff = sub.add_parser("diff", help="compare a limits file with the topic (exit 1 if they "
                                       "differ)")
    diff.add_argument("file", metavar="FILE")


def run(ctx: Context) -> int:
    action = ctx.args.action
    if action == "set":
        return _set(ctx)
    if action == "show":
        return _show(ctx)
    return _diff(ctx)


# --- the topic -------------------------------------------------------------------------------


def read_topic(settings: Settings) -> tuple[dict[str, LimitConfig], int]:
    """The latest LimitConfig of every scope on the compacted topic (audit echoes skipped,
    tombstones and deletions applied), and how many records were unusable."""
    from confluent_kafka import KafkaError, TopicPartition

    from engine.limits import is_audit_record
    from producers.kafka import make_consumer
    from schemas.codec import DecodeError, decode
    from schemas.control import LimitConfig

    name = settings.topic(TOPIC)
    eof: dict[str, Any] = {"enable.partition.eof": True}
    consumer = make_consumer(settings, "streamrisk-limits-cli", read_committed=True, **eof)
    configs: dict[str, LimitConfig] = {}
    bad = 0
    try:
        timeout = settings.connect_timeout_s
        topic = consumer.list_topics(name, timeout=timeout).topics[name]
        assignment, pending = [], set()
        for partition in sorted(topic.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(name, partition),
                                                       timeout=timeout)
            if high > low:
                assignment.append(TopicPartition(name, partition, low))
                pending.add(partition)
        consumer.assign(assignment)
        while pending:
            msg = consumer.poll(timeout)
            if msg is None:
                raise CliError(f"reading {name} timed out after {timeout:g} s")
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    pending.discard(msg.partition())
                    continue
                raise CliError(f"reading {name}: {err.str()}")
            raw_key = msg.key()
            key = raw_key.decode("utf-8", "replace") if isinstance(raw_key, bytes) else raw_key
            if is_audit_record(key):
                continue
            value = msg.value()
            if value is None:  # tombstone: the scope is gone
                if key:
                    configs.pop(key, None)
                continue
            try:
                event = decode(value, settings.max_message_bytes)
            except DecodeError:
                bad += 1
                continue
            if not isinstance(event, LimitConfig) or event.source == "order-worker":
                bad += not isinstance(event, LimitConfig)
                continue
            if event.deleted:
                configs.pop(event.scope, None)
            else:
                configs[event.scope] = event
    finally:
        consumer.close()
    return configs, bad


def _publish(ctx: Context, settings: Settings, configs: list[LimitConfig]) -> None:
    from producers.kafka import DeliveryTracker, command_producer, flush_all
    from schemas.codec import encode

    producer = command_producer(settings)
    tracker = DeliveryTracker()
    name = settings.topic(TOPIC)
    for cfg in configs:
        producer.produce(name, key=cfg.scope.encode(), value=encode(cfg),
                         on_delivery=tracker.on_delivery)
        producer.poll(0)
    left = flush_all(producer, settings.connect_timeout_s + 5)
    if left or tracker.failed:
        reason = tracker.errors[0] if tracker.errors else f"{left} message(s) not delivered"
        raise CliError(f"publishing to {name} failed: {reason}")


# --- set -------------------------------------------------------------------------------------


def _set(ctx: Context) -> int:
    import time

    from engine.limits import LimitsFileError, load_limits_file, validate_config

    args = ctx.args
    now = time.time_ns()
    if args.file and args.scope:
        raise CliError("give either FILE or --scope, not both", 2)
    if args.file:
        try:
            configs = load_limits_file(args.file, ts_event=now, changed_by=args.by,
                                       source="streamrisk-cli")
        except LimitsFileError as exc:
            raise CliError(str(exc), 2) from None
        if not configs:
            raise CliError(f"{args.file} lists no scopes", 2)
        settings = require_topic(ctx, TOPIC)
    elif args.scope:
        _check_one_change(args)  # bad flags fail before any broker round trip
        settings = require_topic(ctx, TOPIC)
        configs = [_one_change(ctx, settings, now)]
    else:
        raise CliError("give a limits FILE or --scope with --metric", 2)
    for cfg in configs:
        reason = validate_config(cfg)
        if reason is not None:
            raise CliError(f"{cfg.scope}: {reason}", 2)
    _publish(ctx, settings, configs)
    for cfg in configs:
        ctx.out.print(f"published {cfg.scope} by {cfg.changed_by} ({cfg.event_id})",
                      markup=False)
    ctx.out.print(f"{len(configs)} limit change(s) published to {settings.topic(TOPIC)}",
                  markup=False)
    return 0


def _check_one_change(args: argparse.Namespace) -> None:
    from engine.limits import METRICS

    if not args.by:
        raise CliError("--by WHO is required: every limit change names who made it", 2)
    if args.metric is not None and args.metric not in METRICS:
        raise CliError(f"unknown metric {args.metric!r} (known: {', '.join(METRICS)})", 2)
    if args.metric is not None and args.soft is None and args.hard is None:
        raise CliError("give --soft and/or --hard for the metric", 2)
    if (args.soft is not None or args.hard is not None) and args.metric is None:
        raise CliError("--soft/--hard need --metric", 2)
    if bool(args.approver) != bool(args.expires):
        raise CliError("a temporary override needs both --approver and --expires", 2)
    if args.approver and args.metric is None:
        raise CliError("an override needs --metric with --soft/--hard", 2)


def _one_change(ctx: Context, settings: Settings, now: int) -> LimitConfig:
    import json

    from pydantic import ValidationError

    from engine.limits import config_content, parse_expiry
    from schemas.codec import describe_validation_error
    from schemas.control import LimitConfig, LimitLevel, LimitOverride
    from schemas.ids import content_event_id

    args = ctx.args
    current, _ = read_topic(settings)
    existing = current.get(args.scope)
    base: dict[str, Any] = {"scope": args.scope}
    if existing is not None:
        base.update(existing.model_dump(include={"parent", "limits", "risk_appetite",
                                                 "override"}))
        if base.get("override") and base["override"]["expires_ts"] <= now:
            base["override"] = None  # an expired override is history, not part of the change
    try:
        if args.parent is not None:
            base["parent"] = args.parent
        if args.appetite is not None:
            base["risk_appetite"] = args.appetite
        if args.metric is not None:
            level = LimitLevel(soft=args.soft, hard=args.hard)
            if args.approver:
                expires = parse_expiry(args.expires, now)
                old = base.get("override")
                keep = dict(old["limits"]) if old and old["expires_ts"] > now else {}
                keep[args.metric] = level
                base["override"] = LimitOverride(
                    limits=keep, approver=args.approver, expires_ts=expires,
                    reason=args.reason or "temporary override from the command line")
            else:
                base["limits"] = {**base.get("limits", {}), args.metric: level}
        cfg = LimitConfig.model_validate({**base, "changed_by": args.by, "reason": args.reason,
                                          "event_id": "pending", "ts_event": now,
                                          "ts_init": now, "source": "streamrisk-cli"})
    except ValidationError as exc:
        raise CliError(describe_validation_error(exc), 2) from None
    except ValueError as exc:
        raise CliError(str(exc), 2) from None
    digest = json.dumps(config_content(cfg), sort_keys=True, default=str)
    return cfg.model_copy(update={"event_id": content_event_id("LimitConfig", cfg.scope, now,
                                                               digest, args.by)})


# --- show ------------------------------------------------------------------------------------

_KIND_ORDER = {"firm": 0, "desk": 1, "account": 2, "strategy": 3, "instrument": 4}


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:,.6g}"


def _show(ctx: Context) -> int:
    import time
    from datetime import UTC, datetime

    import orjson
    from rich.table import Table

    from engine.limits import LimitBook
    from engine.order_config import OrderConfig
    from schemas.common import scope_kind

    settings = require_topic(ctx, TOPIC)
    configs, bad = read_topic(settings)
    book = LimitBook(defaults=dict(OrderConfig().default_limits))
    rejected = []
    for cfg in configs.values():
        result = book.apply(cfg)
        if not result.accepted:
            rejected.append(f"{cfg.scope}: {result.reason}")
    now = time.time_ns()  # display only: which overrides are in force right now
    wanted = set(ctx.args.scope or [])
    scopes = sorted((s for s in book.configs if not wanted or s in wanted),
                    key=lambda s: (_KIND_ORDER[scope_kind(s)], s))
    rows: list[dict[str, Any]] = []
    if not wanted:
        for metric, level in sorted(book.defaults.items()):
            rows.append({"scope": "(default)", "parent": None, "metric": metric,
                         "soft": level.soft, "hard": level.hard, "effective_soft": level.soft,
                         "effective_hard": level.hard, "effective_source": "default",
                         "appetite": None, "override": None, "changed_by": None})
    for scope in scopes:
        cfg = book.configs[scope]
        own = book.levels(scope, now)
        ov = cfg.override
        active_ov = ov is not None and now < ov.expires_ts
        for metric in sorted(set(cfg.limits) | set(ov.limits if ov else {})):
            mine = own.get(metric)
            eff = book.effective(scope, metric, now)
            note = None
            if ov is not None and metric in ov.limits:
                until = datetime.fromtimestamp(ov.expires_ts / 1e9, UTC).strftime(
                    "%Y-%m-%d %H:%M:%SZ")
                state = "until" if active_ov else "expired"
                note = f"{state} {until}, approved by {ov.approver}"
            rows.append({"scope": scope, "parent": cfg.parent, "metric": metric,
                         "soft": mine.soft if mine else None,
                         "hard": mine.hard if mine else None,
                         "effective_soft": eff.soft, "effective_hard": eff.hard,
                         "effective_source": eff.hard_source, "appetite": cfg.risk_appetite,
                         "override": note, "changed_by": cfg.changed_by})
    if ctx.args.json:
        import sys

        for row in rows:
            sys.stdout.write(orjson.dumps(row).decode() + "\n")
    else:
        table = Table(title=f"limits on {settings.topic(TOPIC)} (soft / hard)")
        table.add_column("scope", no_wrap=True)
        table.add_column("metric", no_wrap=True)
        table.add_column("own", justify="right")
        table.add_column("effective", justify="right")
        table.add_column("notes", overflow="fold")
        for row in rows:
            notes = []
            if row["parent"]:
                notes.append(f"parent {row['parent']}")
            if row["effective_source"] and row["effective_source"] != row["scope"]:
                notes.append(f"hard from {row['effective_source']}")
            if row["appetite"] not in (None, 1.0):
                notes.append(f"appetite x{row['appetite']:g}")
            if row["override"]:
                notes.append(f"override {row['override']}")
            if row["changed_by"]:
                notes.append(f"by {row['changed_by']}")
            table.add_row(row["scope"], row["metric"],
                          f"{_fmt(row['soft'])} / {_fmt(row['hard'])}",
                          f"{_fmt(row['effective_soft'])} / {_fmt(row['effective_hard'])}",
                          "; ".join(notes))
        ctx.out.print(table)
    for line in rejected:
        ctx.err.print(f"ignored (a worker would reject it): {line}", markup=False)
    if bad:
        ctx.err.print(f"skipped {bad} record(s) that are not valid LimitConfig events",
                      markup=False)
    return 0


# --- diff ------------------------------------------------------------------------------------


def _diff(ctx: Context) -> int:
    import time

    from rich.table import Table

    from engine.limits import LimitsFileError, diff_configs, load_limits_file

    try:
        wanted = load_limits_file(ctx.args.file, ts_event=time.time_ns(), changed_by="diff")
    except LimitsFileError as exc:
        raise CliError(str(exc), 2) from None
    settings = require_topic(ctx, TOPIC)
    current, _ = read_topic(settings)
    diffs = diff_configs(current, wanted)
    if not diffs:
        ctx.out.print(f"no differences between {ctx.args.file} and {settings.topic(TOPIC)}",
                      markup=False)
        return 0
    table = Table(title=f"{settings.topic(TOPIC)} vs the file (soft / hard)")
    table.add_column("scope", no_wrap=True)
    table.add_column("field", no_wrap=True)
    table.add_column("on the topic", overflow="fold")
    table.add_column("in the file", overflow="fold")
    for d in diffs:
        table.add_row(d.scope, d.field, _value(d.current), _value(d.wanted))
    ctx.out.print(table)
    ctx.out.print(f"{len(diffs)} difference(s) between {ctx.args.file} and the topic",
                  markup=False)
    return 1


def _value(value: Any) -> str:
    if isinstance(value, dict) and set(value) <= {"soft", "hard"}:
        return f"{_fmt(value.get('soft'))} / {_fmt(value.get('hard'))}"
    return "-" if value is None else str(value)
