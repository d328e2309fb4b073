"""`streamrisk worker market|orders|scopes`: run a risk worker in a consumer group.

`scopes` is the desk/firm aggregation stage (`engine.scope_risk`): it consumes
`risk.scope-accounts` (what the order workers publish per account and scope) and publishes
`risk.scopes`, desk/firm breaches and trading-state changes.

The processor comes from a small factory table, imported lazily, so a build without one of
the workers still runs the other. `--processor module:Class` (hidden, for tests and for
plugging in a processor of your own) runs any class implementing
`engine.processor.Processor`. A processor class is built with `Class.from_settings(settings)`
when it has that method, else with `Class()`.
"""

from __future__ import annotations

import argparse
from typing import Any

from consumers.cli.base import CliError, Context, settings_from_args

NAME = "worker"
HELP = "run a risk worker: consume, process, produce with exactly-once checkpoints"

PROCESSORS: dict[str, tuple[str, str]] = {
    "market": ("engine.market_risk", "MarketRiskProcessor"),
    "orders": ("engine.order_risk", "OrderRiskProcessor"),
    "scopes": ("engine.scope_risk", "ScopeRiskProcessor"),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("kind", nargs="?", choices=sorted(PROCESSORS),
                        help="which worker to run")
    parser.add_argument("--group", metavar="G",
                        help="consumer group (default <prefix><worker name>)")
    parser.add_argument("--guarantee", choices=("exactly-once", "at-least-once"),
                        help="exactly-once needs broker transactions (default exactly-once)")
    parser.add_argument("--commit-interval", type=int, metavar="MS",
                        help="checkpoint every MS milliseconds (default 500)")
    parser.add_argument("--metrics-port", type=int, metavar="P",
                        help="serve metrics on this port (loopback)")
    parser.add_argument("--instance-id", metavar="ID",
                        help="static group membership: a restart with the same id takes its "
                             "partitions back without a rebalance")
    parser.add_argument("--processor", metavar="MODULE:CLASS", help=argparse.SUPPRESS)
    parser.add_argument("--exit-when-caught-up", action="store_true", help=argparse.SUPPRESS)
    # Benchmark probe: batch/checkpoint/restore times as JSON lines (consumers.bench.probe).
    parser.add_argument("--stats", metavar="FILE", help=argparse.SUPPRESS)


def load_processor_class(spec: str) -> Any:
    """`package.module:Class` -> the class; CliError with one line when it is not there."""
    import importlib

    module_name, _, class_name = spec.partition(":")
    if not module_name or not class_name:
        raise CliError(f"--processor wants MODULE:CLASS, got {spec!r}", 2)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name and module_name.startswith(exc.name):
            raise CliError(f"processor module {module_name} is not available "
                           "in this build") from None
        raise
    cls = getattr(module, class_name, None)
    if cls is None:
        raise CliError(f"{module_name} has no processor class {class_name}")
    return cls


def resolve(kind: str | None, spec: str | None) -> Any:
    if spec:
        return load_processor_class(spec)
    if kind is None:
        raise CliError("name the worker to run: streamrisk worker "
                       f"{'|'.join(PROCESSORS)}", 2)
    module_name, class_name = PROCESSORS[kind]
    try:
        return load_processor_class(f"{module_name}:{class_name}")
    except CliError:
        raise CliError(f"the {kind} worker is not available yet in this build "
                       f"({module_name}.{class_name} not found)") from None


def build_processor(cls: Any, settings: Any) -> Any:
    from engine.processor import Processor

    factory = getattr(cls, "from_settings", None)
    try:
        processor = factory(settings) if callable(factory) else cls()
    except ValueError as exc:  # a bad [market], [orders] or [scopes] section
        raise CliError(str(exc)) from None
    if not isinstance(processor, Processor):
        raise CliError(f"{cls.__module__}.{cls.__name__} does not implement the processor "
                       "protocol (engine.processor.Processor)")
    return processor


def run(ctx: Context) -> int:
    args = ctx.args
    worker_flags = {"guarantee": args.guarantee, "commit_interval_ms": args.commit_interval,
                    "metrics_port": args.metrics_port}
    worker_flags = {k: v for k, v in worker_flags.items() if v is not None}
    settings = settings_from_args(args, worker=worker_flags or None)
    ctx._settings = settings
    ctx.require_bootstrap()
    cls = resolve(args.kind, args.processor)

    from consumers.runtime import shutdown
    from consumers.runtime.worker import Worker, WorkerConfig, WorkerError

    _log_to_stderr()
    processor = build_processor(cls, settings)
    try:
        config = WorkerConfig.from_settings(settings, processor, group=args.group,
                                            instance_id=args.instance_id)
    except ValueError as exc:
        raise CliError(str(exc)) from None
    worker = Worker(processor, settings, config)
    worker.exit_when_caught_up = args.exit_when_caught_up
    recorder = None
    if args.stats:
        from consumers.bench.probe import StatsRecorder

        recorder = StatsRecorder(args.stats)
        worker.metrics.add_listener(recorder)
    if settings.worker.metrics_port is not None:
        _start_metrics(ctx, worker, settings)
    restore = shutdown.install(worker.stop)
    ctx.err.print(f"{processor.name}: group {config.group}, {config.guarantee}, input "
                  f"{settings.topic(config.input_topic)}", markup=False, highlight=False)
    try:
        worker.run()
    except WorkerError as exc:
        raise CliError(str(exc)) from None
    finally:
        restore()
        if recorder is not None:
            recorder.close()
    summary = worker.metrics.summary()
    if worker.join is not None:  # how the event-time hold ended (only unaligned ones differ)
        js = worker.join.stats
        summary += (f"; event-time join: {js.released_aligned} aligned, "
                    f"{js.released_by_timeout} released by wait or idleness, "
                    f"{js.max_held} held at most")
    ctx.err.print(f"{processor.name}: stopped: {summary}", markup=False,
                  highlight=False)
    return 0


def _start_metrics(ctx: Context, worker: Any, settings: Any) -> None:
    """Hand the metrics to an exporter when the build has one (`consumers.metrics`)."""
    import importlib

    try:
        exporter = importlib.import_module("consumers.metrics")
    except ModuleNotFoundError:
        ctx.err.print("warning: no metrics exporter in this build; --metrics-port ignored",
                      markup=False)
        return
    try:
        exporter.serve(worker.metrics, settings.worker.metrics_host,
                       settings.worker.metrics_port)
    except exporter.MetricsServerError as exc:  # port in use, no such address...
        raise CliError(str(exc)) from None


def _log_to_stderr() -> None:
    """Recoveries, refused snapshots and rebalances, one line each on stderr (and the
    routine ones too with STREAMRISK_DEBUG set)."""
    import logging
    import os

    logger = logging.getLogger("streamrisk.runtime")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG if os.environ.get("STREAMRISK_DEBUG") else logging.INFO)
        logger.propagate = False
