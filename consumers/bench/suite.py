"""The benchmark suite: configurations, the run, the JSON and the table.

`run_suite(config, base_settings, bootstrap_servers)` measures everything once, in this
order (in-process first, so worker processes never compete with it), and returns the result
dict: the figures of DESIGN.md section 8 under their fixed keys, `scaling`, and `details`
(every repetition, the conditions of each measurement and secondary figures).
"""

from __future__ import annotations

import os
import platform
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress, TaskID
from rich.table import Table

from consumers.bench import broker_runs, inprocess
from consumers.bench.cluster import bootstrap
from consumers.bench.measure import median, progress_bar
from consumers.bench.workloads import codec_samples, market_messages, order_day
from schemas.settings import Settings

KEYS: tuple[str, ...] = (
    "inprocess_events_per_s", "kafka_events_per_s", "kafka_to_inprocess_ratio",
    "two_workers_speedup", "alert_latency_p50_ms", "alert_latency_p99_ms",
    "decision_latency_p50_ms", "decision_latency_p99_ms", "bytes_per_instrument",
    "bytes_per_account", "restore_s_1000_instruments", "codec_decode_us", "codec_encode_us",
)
"""The headline figures, each the median of the run's repetitions."""

TARGETS: dict[str, tuple[str, float]] = {
    "kafka_to_inprocess_ratio": (">=", 0.85),
    "two_workers_speedup": (">=", 1.7),
    "alert_latency_p99_ms": ("<", 50.0),
    "decision_latency_p99_ms": ("<", 1.0),
    "restore_s_1000_instruments": ("<", 10.0),
}
"""DESIGN.md section 8."""


@dataclass(frozen=True)
class BenchConfig:
    name: str
    reps: int
    """Repetitions of every throughput measurement (the median is reported)."""
    instruments: int = 32
    warmup_events: int = 2000
    rep_events: int = 4000
    latency_rate: float = 5000.0
    latency_seconds: float = 4.0
    latency_commit_ms: int = 500
    """Commit interval of the latency worker: the worker's default. Alerts are urgent
    outputs (`worker.urgent_topics`): they commit at the end of their batch while the
    worker keeps up, and wait for this interval when it is behind."""
    crossed_every: int = 20
    latency_wide_instruments: int = 1000
    """Also time alerts over this many instruments at `latency_wide_rate` (0: skip): the
    work a worker does per key, snapshots above all, must not stall it as keys grow."""
    latency_wide_rate: float = 1000.0
    latency_at_least_once: bool = False
    """Also time alerts with an at-least-once worker (outputs visible before the commit)."""
    decision_orders: int = 5000
    decision_accounts: int = 40
    decision_instruments: int = 50
    restore_instruments: int = 1000
    restore_reps: int = 3
    restore_versions: int = 1
    codec_iterations: int = 2000
    scaling_instruments: tuple[int, ...] = (10, 100, 1000)
    scaling_events: int = 2000
    scaling_reps: int = 2
    scaling_accounts: tuple[int, ...] = (10, 100)
    scaling_orders: int = 1500
    latency_segments: int = 3
    seed: int = 1


QUICK = BenchConfig("quick", reps=3, latency_seconds=3.0, decision_orders=2000)
FULL = BenchConfig("full", reps=5, warmup_events=3000, rep_events=12_000,
                   latency_seconds=8.0, latency_at_least_once=True,
                   decision_orders=10_000, restore_reps=5,
                   restore_versions=2, codec_iterations=5000,
                   scaling_instruments=(10, 100, 1000, 10_000), scaling_events=6000,
                   scaling_reps=3, scaling_accounts=(10, 100, 1000), scaling_orders=4000,
                   latency_segments=5)
SMALLEST = BenchConfig("smallest", reps=2, instruments=8, warmup_events=300,
                       rep_events=600, latency_rate=1000.0, latency_seconds=1.0,
                       decision_orders=300, latency_wide_instruments=100,
                       latency_wide_rate=500.0, decision_accounts=8, decision_instruments=10,
                       restore_instruments=40,
                       restore_reps=1, codec_iterations=200, scaling_instruments=(10, 40),
                       scaling_events=300, scaling_reps=1, scaling_accounts=(5, 10),
                       scaling_orders=100,
                       latency_segments=2)
CONFIGS = {c.name: c for c in (QUICK, FULL, SMALLEST)}


class Steps:
    """One progress bar per step of the suite, plus the wall time each step took."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self.seconds: dict[str, float] = {}

    @contextmanager
    def step(self, name: str, total: float) -> Iterator[Callable[[int], None]]:
        task: TaskID = self.progress.add_task(name, total=total)
        start = time.perf_counter()

        def tick(n: int) -> None:
            self.progress.advance(task, n)

        try:
            yield tick
        finally:
            self.progress.update(task, completed=total)
            self.seconds[name] = round(time.perf_counter() - start, 2)


def run_suite(config: BenchConfig, base: Settings, servers: str | None = None,
              console: Console | None = None, config_file: str | None = None,
              ) -> dict[str, Any]:
    """Every measurement of `config`; see the module docstring."""
    started = time.perf_counter()
    details: dict[str, Any] = {"config": asdict(config)}
    result: dict[str, Any] = {}
    c = config
    stream = market_messages(c.warmup_events + c.reps * c.rep_events,
                             instruments=c.instruments, seed=c.seed)
    warmup = stream[:c.warmup_events]
    reps = [stream[c.warmup_events + i * c.rep_events:c.warmup_events + (i + 1) * c.rep_events]
            for i in range(c.reps)]
    with progress_bar(console) as progress, tempfile.TemporaryDirectory(
            prefix="streamrisk-bench-") as tmp:
        steps = Steps(progress)
        workdir = Path(tmp)
        # --- in-process -----------------------------------------------------------------
        with steps.step("codec", len(codec_samples()) * c.reps) as tick:
            rows = inprocess.codec_costs(c.reps, c.codec_iterations, tick)
        result["codec_encode_us"] = median(r["encode_us"] for r in rows)
        result["codec_decode_us"] = median(r["decode_us"] for r in rows)
        details["codec"] = rows
        with steps.step("state per instrument", 3) as tick:
            template = inprocess.warm_template(base)
            tick(1)
            symbols = [f"W{i:03d}" for i in range(min(50, c.restore_instruments))]
            probe = inprocess.build_processor("market", base)
            inprocess.clone_instruments(probe, template, symbols)  # type: ignore[arg-type]
            runner = inprocess.runner_for(probe, base)
            for i, symbol in enumerate(symbols):
                runner.key_partition[symbol] = i % 8
                runner.dedup.restore(symbol, template.dedup)
            warm = inprocess.state_size(runner, base,
                                        lambda: inprocess.build_processor("market", base))
            tick(2)
        result["bytes_per_instrument"] = round(warm.memory_bytes)
        details["instrument_state"] = {
            "memory_bytes": warm.memory_bytes, "snapshot_bytes": warm.snapshot_bytes,
            "restore_us_in_process": warm.restore_us,
            "note": "warm instrument: every bounded window of its models full"}
        orders = order_day(c.decision_orders, c.decision_instruments, c.decision_accounts,
                           seed=c.seed)
        with steps.step("orders in-process", len(orders)) as tick:
            decisions = inprocess.decision_run(orders, base, tick)
            accounts = inprocess.account_state(decisions, base)
        result["bytes_per_account"] = round(accounts.memory_bytes)
        details["account_state"] = asdict(accounts)
        cpu = inprocess.latency_ms(decisions.cpu_ns, c.latency_segments)
        details["decisions_in_process"] = {
            **inprocess.latency_ms(decisions.latencies_ns, c.latency_segments),
            "cpu_p50_ms": cpu["p50_ms"], "cpu_p99_ms": cpu["p99_ms"],
            "events_per_s": decisions.events_per_s, "events": decisions.events}
        sizes = len(c.scaling_instruments) * c.scaling_reps + len(c.scaling_accounts)
        with steps.step("scaling", sizes) as tick:
            inst = inprocess.instrument_scaling(base, template, c.scaling_instruments,
                                                c.scaling_events, c.scaling_reps, tick)
            accs = inprocess.account_scaling(base, c.scaling_accounts, c.scaling_orders, tick)
        result["scaling"] = {"instruments": [asdict(p) for p in inst],
                             "accounts": [asdict(p) for p in accs]}
        # --- through the broker -----------------------------------------------------------
        with bootstrap(servers) as kafka:
            with steps.step("start worker groups x1, x2", 2) as tick:
                groups: list[broker_runs.MarketGroup] = []
                try:
                    for n in (1, 2):  # all three processes start together
                        groups.append(broker_runs.MarketGroup(base, kafka, n, workdir,
                                                              config_file=config_file))
                    # frozen only once both are ready: a group frozen while the other joins
                    # and warms up can outlast max.poll.interval.ms (30 s in the test
                    # profile) on a slow machine, and lose its partitions
                    for group in groups:
                        group.ready(warmup)
                        tick(1)
                    for group in groups:
                        group.freeze()
                except BaseException:
                    for group in groups:
                        group.close()
                    raise
            # Interleaved: in-process, one worker, two workers, for each repetition, with the
            # groups not being measured frozen, so all three see the same machine.
            market = inprocess.InProcessMarket(base)
            try:
                with steps.step("market: in-process, x1, x2", len(stream) + 2 * c.reps,
                                ) as tick:
                    market.warm(warmup, tick)
                    for rep in reps:
                        market.rep(rep, tick)
                        for group in groups:
                            group.thaw()
                            group.rep(rep)
                            group.freeze()
                            tick(1)
            finally:
                for group in groups:
                    details[f"kafka_x{len(group.procs)}"] = asdict(group.close())
            with steps.step("market: processor alone", len(stream) - len(warmup)) as tick:
                only = inprocess.process_only_rates(base, warmup, reps, tick)
            result["inprocess_events_per_s"] = median(market.rates)
            live = inprocess.state_size(market.runner, base,
                                        lambda: inprocess.build_processor("market", base))
            details["inprocess"] = {
                "events_per_s_runs": market.rates, "cpu_events_per_s_runs": market.cpu_rates,
                "cpu_us_per_event": 1e6 / median(market.cpu_rates),
                "process_only_events_per_s": median(only), "process_only_runs": only,
                "instruments": c.instruments, "events_per_rep": c.rep_events,
                "warmup_events": c.warmup_events, "state_after_stream": asdict(live)}
            one = details["kafka_x1"]["rates"]
            two = details["kafka_x2"]["rates"]
            result["kafka_events_per_s"] = median(one)
            result["kafka_to_inprocess_ratio"] = median(one) / result["inprocess_events_per_s"]
            result["two_workers_speedup"] = median(two) / median(one)
            details["cpu_per_event_us"] = {
                "one_worker": median_by_key(details["kafka_x1"]["cpu_by_process_us"]),
                "two_workers": median_by_key(details["kafka_x2"]["cpu_by_process_us"])}
            # One worker, the broker and the benchmark already keep part of the machine
            # busy: at the same cost per event, two workers have room for what is left.
            details["two_workers_cpu_estimate"] = ((os.cpu_count() or 1)
                                                   / median(details["kafka_x1"]["cores_busy"]))
            details["ratios_per_rep"] = {
                "kafka_to_inprocess": [k / i for k, i in zip(one, market.rates, strict=True)],
                "two_workers_speedup": [t / o for t, o in zip(two, one, strict=True)],
                "cpu_kafka_to_inprocess": 1e6 / median(market.cpu_rates)
                / median(details["kafka_x1"]["cpu_us_per_event"])}
            timed = market_messages(c.warmup_events + int(c.latency_rate * c.latency_seconds),
                                    instruments=c.instruments, seed=c.seed + 1,
                                    crossed_every=c.crossed_every)
            with steps.step("alert latency", len(timed) - c.warmup_events) as tick:
                latency = broker_runs.alert_latency(
                    base, kafka, timed[:c.warmup_events], timed[c.warmup_events:],
                    c.latency_rate, c.latency_commit_ms, c.latency_segments, workdir,
                    config_file=config_file, tick=tick)
            result["alert_latency_p50_ms"] = latency["p50_ms"]
            result["alert_latency_p99_ms"] = latency["p99_ms"]
            details["alert_latency"] = latency
            # The same path at half of what one worker sustained above: no backlog, so this
            # is the latency of the path itself (consume, models, transaction, read back).
            light = min(c.latency_rate, 0.5 * result["kafka_events_per_s"])
            light_events = int(light * c.latency_seconds)
            with steps.step(f"alert latency at {light:,.0f}/s", light_events) as tick:
                details["alert_latency_half_capacity"] = broker_runs.alert_latency(
                    base, kafka, timed[:c.warmup_events],
                    timed[c.warmup_events:c.warmup_events + light_events], light,
                    c.latency_commit_ms, c.latency_segments, workdir,
                    config_file=config_file, tick=tick)
            if c.latency_wide_instruments:
                wide = market_messages(
                    c.warmup_events + int(c.latency_wide_rate * c.latency_seconds),
                    instruments=c.latency_wide_instruments, seed=c.seed + 2,
                    crossed_every=c.crossed_every)
                with steps.step(f"alert latency, {c.latency_wide_instruments:,} instruments",
                                len(wide) - c.warmup_events) as tick:
                    details["alert_latency_wide"] = {
                        "instruments": c.latency_wide_instruments,
                        **broker_runs.alert_latency(
                            base, kafka, wide[:c.warmup_events], wide[c.warmup_events:],
                            c.latency_wide_rate, c.latency_commit_ms, c.latency_segments,
                            workdir, config_file=config_file, tick=tick)}
            if c.latency_at_least_once:
                with steps.step("alert latency, at-least-once",
                                len(timed) - c.warmup_events) as tick:
                    details["alert_latency_at_least_once"] = broker_runs.alert_latency(
                        base, kafka, timed[:c.warmup_events], timed[c.warmup_events:],
                        c.latency_rate, c.latency_commit_ms, c.latency_segments, workdir,
                        guarantee="at-least-once", config_file=config_file, tick=tick)
            with steps.step("order worker", 3) as tick:
                worker = broker_runs.worker_decisions(base, kafka, orders, c.latency_segments,
                                                      workdir, config_file=config_file,
                                                      tick=tick)
            result["decision_latency_p50_ms"] = worker["p50_ms"]
            result["decision_latency_p99_ms"] = worker["p99_ms"]
            details["decisions_in_worker"] = worker
            with steps.step(f"restore {c.restore_instruments} instruments",
                            c.restore_reps + 1) as tick:
                restore = broker_runs.restore_runs(
                    base, kafka, template, c.restore_instruments, c.restore_reps, workdir,
                    versions=c.restore_versions, config_file=config_file, tick=tick)
            result["restore_s_1000_instruments"] = median(restore["seconds"])
            details["restore"] = restore
    details["steps_s"] = steps.seconds
    details["total_s"] = round(time.perf_counter() - started, 1)
    details["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count(),
                          "load_average": os.getloadavg()}
    ordered = {key: result[key] for key in KEYS}
    ordered["scaling"] = result["scaling"]
    ordered["details"] = details
    return ordered


def median_by_key(rows: Sequence[dict[str, float]]) -> dict[str, float]:
    """The median of each key over rows with the same keys."""
    return {key: median(row[key] for row in rows) for key in rows[0]} if rows else {}


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    out = {}
    for key, (op, bound) in TARGETS.items():
        value = result[key]
        out[key] = value >= bound if op == ">=" else value < bound
    return out


CPU_COLUMNS = {"worker_main_thread": "worker: Python thread",
               "worker_other_threads": "worker: other threads", "broker": "broker",
               "bench": "benchmark", "total": "all"}


def render_cpu(details: dict[str, Any], console: Console) -> None:
    """Where the machine's CPU went, per event, in each step that measured it."""
    rows: list[tuple[str, dict[str, float], str]] = []
    for name, key, workers in (("one worker", "one_worker", "kafka_x1"),
                               ("two workers", "two_workers", "kafka_x2")):
        per_event = details.get("cpu_per_event_us", {}).get(key)
        if per_event:
            rows.append((name, per_event, f"{median(details[workers]['cores_busy']):.2f}"))
    for name, key in (("alert latency", "alert_latency"),
                      ("at half capacity", "alert_latency_half_capacity"),
                      ("over many instruments", "alert_latency_wide")):
        step = details.get(key)
        if step and "cpu_by_process_us" in step:
            rows.append((f"{name}, {step['rate_achieved']:,.0f}/s", step["cpu_by_process_us"],
                         f"{step['cores_by_process']['total']:.2f}"))
    if not rows:
        return
    cores = details["machine"]["cpus"]
    table = Table(title=f"CPU per event by process (µs; the broker only when the benchmark "
                        f"started it), {cores} cores")
    table.add_column("step")
    for title in (*CPU_COLUMNS.values(), "cores busy"):
        table.add_column(title, justify="right")
    for name, per_event, busy in rows:
        table.add_row(name, *(f"{per_event[k]:,.0f}" for k in CPU_COLUMNS), busy)
    console.print(table)
    room = details.get("two_workers_cpu_estimate")
    if room is not None:
        console.print(f"one worker's run keeps {cores / room:.2f} of {cores} cores busy: at "
                      f"the same CPU per event, two workers have room for about {room:.2f}x")


def render(result: dict[str, Any], console: Console) -> None:
    """The headline table, the scaling tables and the targets."""
    met = verdicts(result)
    table = Table(title=f"streamrisk bench ({result['details']['config']['name']}): "
                        "medians of the run's repetitions")
    table.add_column("figure")
    table.add_column("value", justify="right")
    table.add_column("target", justify="right")
    for key in KEYS:
        value = result[key]
        text = f"{value:,.3f}" if isinstance(value, float) and value < 100 else f"{value:,.0f}"
        target = ""
        if key in TARGETS:
            op, bound = TARGETS[key]
            target = f"{op} {bound:g}  " + ("[green]met[/]" if met[key] else "[red]missed[/]")
        table.add_row(key, text, target)
    light = result["details"].get("alert_latency_half_capacity")
    if light is not None:
        table.add_row(f"alert latency p50/p99 at {light['rate_achieved']:,.0f}/s (ms)",
                      f"{light['p50_ms']:,.1f} / {light['p99_ms']:,.1f}",
                      "half of one worker's rate")
    wide = result["details"].get("alert_latency_wide")
    if wide is not None:
        table.add_row(f"alert latency p50/p99 at {wide['rate_achieved']:,.0f}/s, "
                      f"{wide['instruments']:,} instruments (ms)",
                      f"{wide['p50_ms']:,.1f} / {wide['p99_ms']:,.1f}", "")
    console.print(table)
    render_cpu(result["details"], console)
    scaling = Table(title="scaling, in-process (events/s: median of repetitions)")
    for column in ("keys", "kind", "events/s", "memory bytes/key", "snapshot bytes/key"):
        scaling.add_column(column, justify="right")
    for kind in ("instruments", "accounts"):
        for point in result["scaling"][kind]:
            scaling.add_row(f"{point['keys']:,}", kind, f"{point['events_per_s']:,.0f}",
                            f"{point['memory_bytes_per_key']:,.0f}",
                            f"{point['snapshot_bytes_per_key']:,.0f}")
    console.print(scaling)
    d = result["details"]
    load = " ".join(f"{x:.2f}" for x in d["machine"]["load_average"])
    console.print(f"load average at the end {load} on {d['machine']['cpus']} cores; "
                  f"{d['total_s']} s in total")
