"""`streamrisk evaluate FILE --out DIR`: run a recording or a CSV file through the market risk
engine in-process (no broker) and write what a quant reads. A recording with `orders` goes
through both stages (`engine.pipeline.Pipeline`: market risk, then order risk reading the
instrument risk as of each order's event time), as the two workers would through Kafka:

- DIR/outputs.jsonl: every output, in the recording format (the same as the market worker
  publishes through Kafka for the same input);
- DIR/report.json: VaR backtests per instrument and method (exceedances, Kupiec POF,
  Christoffersen independence and conditional coverage, Basel zone, rolling and since
  start), a pooled summary per method, alerts by reason, throughput, and with `--labels`
  the alerts scored against the labelled windows (recall, precision, delay per scenario);
- DIR/plots/*.png and DIR/report.html (self-contained, plots embedded).
- with orders, also in DIR/outputs.jsonl: decisions, breaches, state changes, account
  snapshots and mass cancels; in the report (`orders`): decisions, denial reasons, breaches
  and state changes, and with `--labels` each kind scored against the account scenarios
  (`engine.order_evaluation`).

A market-only recording or CSV file goes through the market engine alone (exactly the market
worker's outputs); other topics are counted as ignored. Exit codes: 0 done, 1 some input
lines or rows were bad (reported and skipped; the rest was evaluated), 2 bad options or
unreadable input.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumers.cli.base import CliError, Context

if TYPE_CHECKING:
    from engine.market_config import MarketRiskConfig
    from producers.replay import BadLine
    from schemas.recording import RecordedMessage

ORDER_TOPICS = frozenset({"risk.decisions", "risk.breaches", "risk.states"})

NAME = "evaluate"
HELP = "run a recording or CSV through the market risk engine in-process; write a report"
BAD_INPUT = 1
BAD_LINES_SHOWN = 20


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", metavar="FILE", help="recording (.jsonl, .gz, .zst) or CSV file")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory for the report")
    parser.add_argument("--labels", metavar="FILE",
                        help="scenario labels (JSONL, as written by simulate --labels)")
    parser.add_argument("--market-config", metavar="FILE",
                        help="model parameters and thresholds (YAML or JSON, "
                             "engine.market_config.MarketRiskConfig)")
    parser.add_argument("--grace", type=float, default=10.0, metavar="S",
                        help="seconds after a labelled window in which an alert still counts "
                             "as its detection (default 10)")
    parser.add_argument("--max-plots", type=int, default=6, metavar="N",
                        help="instruments to plot (labelled ones first; default 6)")
    csv = parser.add_argument_group("CSV input (as for replay)")
    csv.add_argument("--format", choices=("jsonl", "csv"),
                     help="input format (default: csv for *.csv files, else jsonl)")
    csv.add_argument("--kind", choices=("bar", "trade", "quote"), help="event kind of each row")
    csv.add_argument("--symbol", metavar="S", help="instrument of every row")
    csv.add_argument("--columns", metavar="MAP",
                     help="FIELD=COLUMN,... e.g. ts=date,open=open,high=high,low=low,"
                          "close=close,volume=volume")
    csv.add_argument("--bar-interval", type=float, metavar="S",
                     help="bar length in seconds (default: 86400 for date-only timestamps)")


def load_market_config(path: str | None, section: dict[str, Any] | None = None,
                       ) -> MarketRiskConfig:
    """The file's configuration, else the settings' `[market]` section."""
    from pydantic import ValidationError

    from engine.config_sections import from_section
    from engine.market_config import MarketRiskConfig

    if path is None:
        try:
            return from_section(MarketRiskConfig, section or {}, "market")
        except ValueError as exc:
            raise CliError(str(exc), 2) from None
    file = Path(path)
    if not file.is_file():
        raise CliError(f"no such market config file: {file}", 2)
    try:
        if file.suffix.lower() == ".json":
            import orjson

            data = orjson.loads(file.read_bytes())
        else:
            import yaml

            data = yaml.safe_load(file.read_text(encoding="utf-8")) or {}
        return MarketRiskConfig.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise CliError(f"{file}: {where}: {first['msg']}", 2) from None
    except ValueError as exc:  # JSON and YAML parse errors
        raise CliError(f"{file}: not valid {file.suffix.lstrip('.') or 'YAML'}: "
                       f"{str(exc).splitlines()[0]}", 2) from None


def _has_orders(path: Path) -> bool:
    """Whether a recording holds `orders` messages (then both stages run)."""
    from producers.replay import RecordingFile
    from schemas.recording import RecordedMessage

    try:
        source = RecordingFile(path)
    except OSError:
        return False  # reported when the file is read for real
    try:
        return any(isinstance(item, RecordedMessage) and item.topic == "orders"
                   for item in source.lines())
    except Exception:  # noqa: BLE001 - unreadable input is reported by the real read
        return False
    finally:
        source.close()


def _pipeline(market: Any, settings: Any) -> Any:
    from engine.order_risk import OrderRiskProcessor
    from engine.pipeline import Pipeline
    from engine.scope_risk import ScopeRiskProcessor

    try:
        orders = OrderRiskProcessor.from_settings(settings)
        scopes = ScopeRiskProcessor.from_settings(settings)
    except ValueError as exc:  # a bad [orders] or [scopes] section
        raise CliError(str(exc), 2) from None
    return Pipeline(market, orders, scopes, max_message_bytes=settings.max_message_bytes,
                    dedup_per_key=settings.worker.dedup_per_key)


def run(ctx: Context) -> int:
    import time

    import orjson

    from consumers.cli.csv_options import csv_mapping
    from consumers.evaluation_report import (
        InstrumentSeries,
        plot_anomaly,
        plot_var_bands,
        plot_vol_regime,
        write_html,
    )
    from engine.driver import Driver
    from engine.evaluation import NS, backtest_table, method_summary, score_labels
    from engine.market_risk import MarketRiskProcessor, ReturnTrace
    from engine.pipeline import Pipeline
    from producers.csv_input import CsvError
    from producers.replay import BadLine, RecordingFile, csv_lines
    from producers.simulator.labels import Label, read_labels

    args = ctx.args
    path = Path(args.file)
    if not path.is_file():
        raise CliError(f"no such file: {path}", 2)
    if args.max_plots < 0 or args.grace < 0:
        raise CliError("--max-plots and --grace must not be negative", 2)
    try:
        mapping = csv_mapping(args, path)
    except (ValueError, CsvError) as exc:
        raise CliError(str(exc), 2) from None
    fmt = "jsonl" if mapping is None else "csv"
    labels: list[Label] = []
    if args.labels:
        try:
            labels = read_labels(args.labels)
        except OSError as exc:
            raise CliError(f"cannot read labels {args.labels}: {exc.strerror}", 2) from None
        except (ValueError, KeyError, TypeError) as exc:
            raise CliError(f"{args.labels}: not a labels file ({exc})", 2) from None
    config = load_market_config(args.market_config, ctx.settings.market)
    out_dir = Path(args.out)
    try:
        (out_dir / "plots").mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CliError(f"cannot create {out_dir}: {exc.strerror}", 2) from None

    traces: dict[str, list[ReturnTrace]] = {}

    def on_trace(trace: ReturnTrace) -> None:
        traces.setdefault(trace.symbol, []).append(trace)

    series: dict[str, InstrumentSeries] = {}
    alerts: list[dict[str, Any]] = []
    order_outputs: list[tuple[str, dict[str, Any]]] = []

    def on_output(emitted: Any) -> None:
        if emitted.topic == "risk.instruments":
            value = orjson.loads(emitted.value)
            series.setdefault(value["symbol"], InstrumentSeries()).add_risk(value)
        elif emitted.topic in ORDER_TOPICS:
            order_outputs.append((emitted.topic, orjson.loads(emitted.value)))
        elif emitted.topic == "risk.alerts":
            value = orjson.loads(emitted.value)
            if value.get("entity_kind") in ("account", "scope"):  # from the order stage
                order_outputs.append((emitted.topic, value))
                return
            alerts.append(value)
            entity = value["entity"].rsplit("/", 1)[-1]
            series.setdefault(entity, InstrumentSeries()).alerts.append(
                (int(value["ts_event"]), value["reason_code"], value["severity"]))

    bad: list[BadLine] = []

    def messages(lines: Iterator[RecordedMessage | BadLine]) -> Iterator[RecordedMessage]:
        for item in lines:
            if isinstance(item, BadLine):
                bad.append(item)
                if len(bad) <= BAD_LINES_SHOWN:
                    ctx.err.print(f"{path}:{item.line}: {item.reason}", markup=False,
                                  soft_wrap=True)
            else:
                yield item

    proc = MarketRiskProcessor(config, trace=on_trace)
    driver = (_pipeline(proc, ctx.settings) if mapping is None and _has_orders(path)
              else Driver.from_settings(proc, ctx.settings))
    source: RecordingFile | None = None
    try:
        if mapping is None:
            source = RecordingFile(path)
            lines = source.lines()
        else:
            lines = csv_lines(path, mapping)
        result = driver.run(messages(lines), out=out_dir / "outputs.jsonl",
                            on_output=on_output, progress=ctx.err.is_terminal)
    except CsvError as exc:
        raise CliError(str(exc), 2) from None
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}", 2) from None
    finally:
        if source is not None:
            source.close()

    started = time.perf_counter()
    table = backtest_table(proc)
    first_ts = min((s.ts[0] for s in series.values() if s.ts), default=0)
    last_ts = max((s.ts[-1] for s in series.values() if s.ts), default=0)
    hours = (last_ts - first_ts) / NS / 3600 if last_ts > first_ts else None
    from collections import Counter

    report: dict[str, Any] = {
        "input": str(path), "format": fmt, "events": result.events,
        "processed": getattr(driver, "processed", driver.runner.stats.processed),
        "ignored": result.ignored,
        "bad_lines": len(bad), "dead_letters": dict(result.dead_letters),
        "outputs": result.outputs, "outputs_by_topic": dict(result.by_topic),
        "elapsed_s": result.elapsed_s, "events_per_s": result.events_per_s,
        "primary": config.var.primary, "config": config.model_dump(mode="json"),
        "methods": method_summary(table), "backtest": table,
        "alerts_by_reason": dict(Counter(a["reason_code"] for a in alerts)),
        "tail_metrics": {s: st.tail.metrics() for s in proc.symbols()
                         if (st := proc.state(s)) is not None},
    }
    if labels:
        report["labels"] = score_labels(alerts, labels, entities=set(proc.symbols()),
                                        grace_ns=int(args.grace * NS), hours=hours)
    if isinstance(driver, Pipeline):
        from engine.order_evaluation import evaluate_orders

        report["orders"] = evaluate_orders(order_outputs, labels,
                                           grace_ns=int(args.grace * NS), hours=hours)
    labelled = [lb.entity for lb in labels if lb.entity in series]
    order = list(dict.fromkeys(labelled + [s for s in proc.symbols() if s not in labelled]))
    plots: dict[str, list[Path]] = {}
    for symbol in order[:args.max_plots]:
        files = []
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in symbol)
        if traces.get(symbol):
            files.append(plot_var_bands(symbol, traces[symbol],
                                        out_dir / "plots" / f"{safe}_var.png"))
        if symbol in series and series[symbol].ts:
            mine = [lb for lb in labels if lb.entity == symbol]
            files.append(plot_anomaly(symbol, series[symbol], mine,
                                      out_dir / "plots" / f"{safe}_anomaly.png",
                                      config.alerts.anomaly_threshold))
            files.append(plot_vol_regime(symbol, series[symbol],
                                         out_dir / "plots" / f"{safe}_vol_regime.png"))
        plots[symbol] = files
    report["plots"] = {s: [str(f.relative_to(out_dir)) for f in fs] for s, fs in plots.items()}
    report["report_seconds"] = time.perf_counter() - started
    (out_dir / "report.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    write_html(report, plots, out_dir / "report.html")

    _print_summary(ctx, report)
    if bad:
        raise CliError(f"{len(bad)} bad lines in {path} were skipped (first at line "
                       f"{bad[0].line}); everything else was evaluated", BAD_INPUT)
    return 0


def _print_summary(ctx: Context, report: dict[str, Any]) -> None:
    from rich.table import Table

    table = Table(title=f"VaR 99 backtest per method (primary: {report['primary']})")
    for col in ("method", "instruments", "obs", "exceed.", "rate", "green/yellow/red"):
        table.add_column(col, justify="left" if col == "method" else "right")
    for method, s in report["methods"].items():
        z = s["zones"]
        table.add_row(method, str(s["instruments"]), str(s["observations"]),
                      str(s["exceedances"]), f"{s['rate']:.3%}" if s["rate"] is not None else "-",
                      f"{z.get('green', 0)}/{z.get('yellow', 0)}/{z.get('red', 0)}")
    ctx.out.print(table)
    scoring = report.get("labels")
    if scoring:
        o = scoring["overall"]
        ctx.out.print(f"labels: {o['detected']}/{o['labels']} detected, precision "
                      f"{o['precision'] if o['precision'] is None else round(o['precision'], 3)}"
                      f", {o['false_alarms']} false alarms", markup=False)
    orders = report.get("orders")
    if orders:
        line = (f"orders: {orders['decisions'].get('accept', 0)} accepted, "
                f"{orders['decisions'].get('deny', 0)} denied, "
                f"{sum(orders['breaches'].values())} breaches, "
                f"{sum(orders['state_changes'].values())} state changes")
        scored = orders.get("scoring", {}).get("any")
        if scored:
            o = scored["overall"]
            line += f"; account scenarios: {o['detected']}/{o['labels']} detected"
        ctx.out.print(line, markup=False)
    ctx.out.print(f"{report['events']} events, {report['outputs']} outputs, "
                  f"{report['events_per_s']:,.0f} events/s; report in "
                  f"{Path(report['input']).name} -> {ctx.args.out}/report.html", markup=False,
                  soft_wrap=True)
