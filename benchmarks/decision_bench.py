"""Pre-trade decision latency inside the order worker's processor (DESIGN.md section 8:
target p99 under 1 ms).

A seeded synthetic day: `--instruments` random-walk instruments publish an InstrumentRisk
snapshot per tick, `--accounts` accounts send limit orders around the reference price, about
half of them fill (partly, then fully) and most of the rest are cancelled, so every account
keeps a realistic book of open orders; a few replaces and limit configs (firm, desk,
account, strategy, instrument levels) are mixed in. The events are built once, then fed to a
fresh `OrderRiskProcessor` per run; latency is the RiskDecision's `decision_latency_ns`
(time.perf_counter_ns around the gate inside `process`). Throughput is every event through
`process` (decisions, fills, cancels, table events), wall clock.

Prints p50 / p90 / p99 / p99.9 / max of the decision latency and events/s for each run and
the median over runs. `cpu p50/p99` are the thread CPU time of the whole `process` call for
each order (gate plus the account monitoring after it): unlike wall-clock latency they do
not grow when other processes compete for the cores.

Run: `python benchmarks/decision_bench.py [--orders N] [--runs R] [--quick] [--json FILE]`.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumers.bench.measure import percentile
from consumers.bench.workloads import order_day as build_events
from engine.order_risk import OrderRiskProcessor
from schemas.common import Envelope


def one_run(events: list[Envelope], progress: Progress, label: str) -> dict[str, Any]:
    processor = OrderRiskProcessor()
    latencies: list[int] = []
    cpu: list[int] = []
    decisions = accepted = 0
    task = progress.add_task(label, total=len(events))
    gc.collect()
    thread_time = time.thread_time_ns
    start = time.perf_counter()
    for i, event in enumerate(events):
        c0 = thread_time()
        outputs = processor.process(event)
        spent = thread_time() - c0
        for output in outputs:
            value = output.value
            if value.type == "RiskDecision":
                latencies.append(value.decision_latency_ns)  # type: ignore[attr-defined]
                cpu.append(spent)
                decisions += 1
                accepted += value.decision.value == "accept"  # type: ignore[attr-defined]
        if i % 4096 == 0:
            progress.update(task, completed=i)
    elapsed = time.perf_counter() - start
    progress.update(task, completed=len(events))

    def pct(q: float, values: list[int] = latencies) -> float:
        return percentile(values, q) / 1000.0

    snapshot_bytes = [len(processor.snapshot(k) or b"") for k in processor.accounts]
    return {"decisions": decisions, "accepted": accepted, "events": len(events),
            "p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99),
            "p999_us": pct(0.999), "max_us": max(latencies) / 1000.0,
            "cpu_p50_us": pct(0.5, cpu), "cpu_p99_us": pct(0.99, cpu),
            "events_per_s": len(events) / elapsed,
            "snapshot_bytes_median": statistics.median(snapshot_bytes)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--instruments", type=int, default=50)
    parser.add_argument("--accounts", type=int, default=40)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="10k orders, 3 runs")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args()
    if args.quick:
        args.orders, args.runs = 10_000, 3
    console = Console()
    events = build_events(args.orders, args.instruments, args.accounts, args.seed)
    console.print(f"{len(events):,} events ({args.orders:,} orders, {args.instruments} "
                  f"instruments, {args.accounts} accounts), {args.runs} runs")
    results = []
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as progress:
        for run in range(args.runs):
            results.append(one_run(events, progress, f"run {run + 1}/{args.runs}"))
    table = Table(title="decision latency inside OrderRiskProcessor (µs)")
    keys = ("p50_us", "p90_us", "p99_us", "p999_us", "max_us", "cpu_p50_us", "cpu_p99_us",
            "events_per_s")
    table.add_column("run")
    titles = ("p50", "p90", "p99", "p99.9", "max", "cpu p50", "cpu p99", "events/s")
    for title in titles:
        table.add_column(title, justify="right")
    for i, r in enumerate(results, start=1):
        table.add_row(str(i), *(f"{r[k]:,.1f}" for k in keys))
    median = {k: statistics.median(r[k] for r in results) for k in keys}
    table.add_row("median", *(f"{median[k]:,.1f}" for k in keys), style="bold")
    console.print(table)
    first = results[0]
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    console.print(f"load average during the runs: {load} on {os.cpu_count()} cores")
    console.print(f"decisions per run {first['decisions']:,} ({first['accepted']:,} accepted); "
                  f"median account snapshot {first['snapshot_bytes_median']:,.0f} bytes; "
                  f"p99 target 1,000 µs: {'met' if median['p99_us'] < 1000 else 'MISSED'} "
                  f"(ratio {median['p99_us'] / 1000:.2f})")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"runs": results, "median": median, "args": vars(args)}, fh, indent=2)


if __name__ == "__main__":
    main()
