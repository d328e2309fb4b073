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
import random
import statistics
import time
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from engine.order_risk import OrderRiskProcessor
from schemas.common import Envelope, Side
from schemas.control import LimitConfig, LimitLevel
from schemas.orders import ExecType, ExecutionReport, OrderCancel, OrderNew, OrderReplace
from schemas.outputs import InstrumentRisk

MS = 1_000_000


def build_events(orders: int, instruments: int, accounts: int, seed: int) -> list[Envelope]:
    rng = random.Random(seed)
    symbols = [f"SYM{i:03d}" for i in range(instruments)]
    price = {s: rng.uniform(20.0, 400.0) for s in symbols}
    strategies = ["momo", "mm", "arb"]
    events: list[Envelope] = []
    n = 0

    def nid(prefix: str) -> str:
        nonlocal n
        n += 1
        return f"{prefix}{n}"

    def level(soft: float | None, hard: float | None) -> LimitLevel:
        return LimitLevel(soft=soft, hard=hard)

    ts = 1_700_000_000_000_000_000
    events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                              scope="firm:F", changed_by="bench",
                              limits={"order_notional": level(2e6, 1e7),
                                      "gross_exposure": level(5e7, 1e8)}))
    for d in range(3):
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"desk:D{d}", parent="firm:F", changed_by="bench",
                                  limits={"day_loss": level(2e6, 5e6)}))
    for a in range(accounts):
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"account:ACC{a:03d}", parent=f"desk:D{a % 3}",
                                  changed_by="bench", risk_appetite=1.0 + (a % 4) * 0.25,
                                  limits={"position_long": level(5e6, 2e7),
                                          "order_rate": level(200.0, 400.0)}))
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"strategy:ACC{a:03d}/momo", changed_by="bench",
                                  limits={"net_exposure": level(None, 1e7)}))
    for s in symbols[:5]:
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"instrument:{s}", changed_by="bench",
                                  limits={"order_qty": level(None, 50_000.0)}))

    def tick(symbol: str) -> None:
        price[symbol] *= 1.0 + rng.gauss(0.0, 0.0008)
        px = round(price[symbol], 2)
        events.append(InstrumentRisk(
            event_id=nid("ir"), ts_event=ts, ts_init=0, source="bench", symbol=symbol,
            price=px, vol=0.0008, var_95=0.0013, var_99=0.0019, es_975=0.0017,
            var_method="ewma", adv=2_000_000.0, spread_bps=2.0, tick_size=0.01,
            lot_size=1.0))

    for s in symbols:
        tick(s)
    open_orders: dict[str, list[tuple[str, str, Side, float, float, str]]] = {}
    for i in range(orders):
        ts += rng.randint(200_000, 2 * MS)
        if i % 3 == 0:
            tick(rng.choice(symbols))
        account = f"ACC{rng.randrange(accounts):03d}"
        book = open_orders.setdefault(account, [])
        symbol = rng.choice(symbols)
        side = rng.choice((Side.BUY, Side.SELL))
        ref = round(price[symbol], 2)
        px = round(ref * (1 + (-1 if side is Side.BUY else 1) * rng.uniform(0.0001, 0.003)), 2)
        qty = float(rng.choice((100, 200, 300, 500, 1000)))
        strategy = rng.choice(strategies)
        cl = nid("c")
        if book and rng.random() < 0.05:
            old = book.pop(rng.randrange(len(book)))
            events.append(OrderReplace(
                event_id=nid("r"), ts_event=ts, ts_init=0, source="bench", account=account,
                symbol=old[1], side=old[2], qty=old[3], price=round(old[4] * 1.0005, 2),
                strategy=old[5], cl_ord_id=cl, orig_cl_ord_id=old[0]))
            book.append((cl, old[1], old[2], old[3], round(old[4] * 1.0005, 2), old[5]))
        else:
            events.append(OrderNew(event_id=nid("o"), ts_event=ts, ts_init=0, source="bench",
                                   account=account, symbol=symbol, side=side, qty=qty,
                                   price=px, strategy=strategy, cl_ord_id=cl))
            book.append((cl, symbol, side, qty, px, strategy))
        # settle older orders: fills (some in two parts) or cancels, keeping books bounded
        while len(book) > rng.randint(5, 25):
            cl_old, sym, sd, q, p, _ = book.pop(0)
            ts += 1000
            if rng.random() < 0.55:
                part = q / 2 if rng.random() < 0.3 else q
                events.append(ExecutionReport(
                    event_id=nid("f"), ts_event=ts, ts_init=0, source="bench",
                    account=account, cl_ord_id=cl_old, exec_id=nid("x"),
                    exec_type=ExecType.PARTIAL_FILL if part < q else ExecType.FILL,
                    symbol=sym, side=sd, last_px=p, last_qty=part, leaves_qty=q - part,
                    cum_qty=part, counterparty=f"CP{rng.randrange(4)}"))
                if part < q:
                    events.append(ExecutionReport(
                        event_id=nid("f"), ts_event=ts + 1000, ts_init=0, source="bench",
                        account=account, cl_ord_id=cl_old, exec_id=nid("x"),
                        exec_type=ExecType.FILL, symbol=sym, side=sd, last_px=p,
                        last_qty=q - part, leaves_qty=0.0, cum_qty=q))
            else:
                events.append(OrderCancel(event_id=nid("x"), ts_event=ts, ts_init=0,
                                          source="bench", account=account, cl_ord_id=nid("c"),
                                          orig_cl_ord_id=cl_old, symbol=sym))
    return events


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
    latencies.sort()
    cpu.sort()

    def pct(q: float, values: list[int] = latencies) -> float:
        return values[min(len(values) - 1, int(q * len(values)))] / 1000.0

    snapshot_bytes = [len(processor.snapshot(k) or b"") for k in processor.accounts]
    return {"decisions": decisions, "accepted": accepted, "events": len(events),
            "p50_us": pct(0.50), "p90_us": pct(0.90), "p99_us": pct(0.99),
            "p999_us": pct(0.999), "max_us": latencies[-1] / 1000.0,
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
