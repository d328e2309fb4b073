"""Cost per event of each market model and of the whole default market risk stack,
in-process (no broker): median of several runs in one process.

The input is the simulator's market stream (quotes, trades, bars, news, reference data) for a
few instruments, turned once into feature observations. Each model then runs over the
observations of every instrument, score-then-learn as the processor does; the stack runs
`MarketRiskProcessor.process` over the events themselves (features, every model,
validation, alerts and building the output events). Also reported: the pickled state
size per instrument (what one changelog snapshot carries).

Two clocks: wall time (what a dedicated core gives) and CPU time of this process (what the
work costs even when other processes share the cores and stretch the wall clock); both are
medians over the runs.

Run: `python benchmarks/models_bench.py [--seconds S] [--instruments N] [--runs R] [--quick]`
"""

from __future__ import annotations

import argparse
import pickle
import statistics
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from consumers.bench.measure import Clock
from engine.features import InstrumentFeatures, MarketObs
from engine.market_config import MarketRiskConfig
from engine.market_risk import MarketRiskProcessor
from engine.models import (
    EwmaVol,
    FilteredHistoricalVar,
    ModelAdapter,
    OnlineQuantileVar,
    PageHinkleyRegime,
    ParametricVar,
    RobustZScoreAnomaly,
    TailRiskPredictor,
)
from producers.simulator import SimConfig, Simulation
from schemas.common import Envelope

MODELS: dict[str, Callable[[], ModelAdapter[Any]]] = {
    "ewma_vol": EwmaVol,
    "var parametric": ParametricVar,
    "var fhs": FilteredHistoricalVar,
    "var quantile (P2)": OnlineQuantileVar,
    "anomaly (robust z)": lambda: RobustZScoreAnomaly(exclude=("ret",)),
    "regime (Page-Hinkley)": PageHinkleyRegime,
    "tail (logistic)": TailRiskPredictor,
}


def market_events(seconds: float, instruments: int) -> list[Envelope]:
    sim = Simulation(SimConfig(seed=7, instruments=instruments, accounts=0,
                               duration_s=seconds))
    return [e.event for e in sim if e.topic == "market"]


def observations(events: list[Envelope]) -> dict[str, list[MarketObs]]:
    feats: dict[str, InstrumentFeatures] = {}
    out: dict[str, list[MarketObs]] = {}
    for ev in events:
        sym = ev.symbol  # type: ignore[attr-defined]
        f = feats.setdefault(sym, InstrumentFeatures())
        out.setdefault(sym, []).append(f.update(ev))
    return out


def time_features(events: list[Envelope]) -> Clock:
    feats: dict[str, InstrumentFeatures] = {}
    clock = Clock()
    clock.start()
    for ev in events:
        sym = ev.symbol  # type: ignore[attr-defined]
        f = feats.get(sym)
        if f is None:
            f = feats[sym] = InstrumentFeatures()
        f.update(ev)
    clock.stop()
    return clock


def time_model(factory: Callable[[], ModelAdapter[Any]],
               obs: dict[str, list[MarketObs]]) -> tuple[Clock, int]:
    """Score-then-learn over every observation; pickled bytes per instrument (largest)."""
    clock = Clock()
    size = 0
    for stream in obs.values():
        model = factory()
        score, learn = model.score_one, model.learn_one
        clock.start()
        for x in stream:
            score(x)
            learn(x)
        clock.stop()
        size = max(size, len(pickle.dumps(model)))
    return clock, size


def time_stack(events: list[Envelope]) -> tuple[Clock, int, int]:
    proc = MarketRiskProcessor(MarketRiskConfig())
    process = proc.process
    outputs = 0
    clock = Clock()
    clock.start()
    for ev in events:
        outputs += len(process(ev))
    clock.stop()
    size = max(len(proc.snapshot(k) or b"") for k in proc.symbols())
    return clock, outputs, size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=600.0,
                        help="simulated seconds of market data (default 600)")
    parser.add_argument("--instruments", type=int, default=8)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="120 s, 3 runs")
    args = parser.parse_args()
    if args.quick:
        args.seconds, args.runs = 120.0, 3
    console = Console()
    events = market_events(args.seconds, args.instruments)
    obs = observations(events)
    n = len(events)
    returns = sum(1 for s in obs.values() for x in s if x.ret is not None)
    console.print(f"{n} market events ({returns} returns), {args.instruments} instruments, "
                  f"{args.seconds:.0f} simulated s; median of {args.runs} runs")

    timings: dict[str, list[Clock]] = {name: [] for name in ["features", *MODELS, "stack"]}
    sizes: dict[str, int] = {}
    outputs = 0
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs", total=args.runs)
        for _ in range(args.runs):
            timings["features"].append(time_features(events))
            for name, factory in MODELS.items():
                clock, sizes[name] = time_model(factory, obs)
                timings[name].append(clock)
            clock, outputs, sizes["stack"] = time_stack(events)
            timings["stack"].append(clock)
            bar.advance(task)

    table = Table(title="market models, in-process, per market event "
                        f"(median of {args.runs} runs)")
    table.add_column("component")
    table.add_column("µs CPU / event", justify="right")
    table.add_column("events/s (CPU)", justify="right")
    table.add_column("events/s (wall)", justify="right")
    table.add_column("share of stack", justify="right")
    table.add_column("state bytes / instrument", justify="right")
    stack_cpu = statistics.median(c.cpu for c in timings["stack"])
    for name, clocks in timings.items():
        cpu = statistics.median(c.cpu for c in clocks)
        wall = statistics.median(c.wall for c in clocks)
        table.add_row(name, f"{cpu / n * 1e6:.1f}", f"{n / cpu:,.0f}", f"{n / wall:,.0f}",
                      f"{cpu / stack_cpu:.0%}", f"{sizes[name]:,}" if name in sizes else "")
    console.print(table)
    walls = [c.wall for c in timings["stack"]]
    console.print(f"default stack: {n / statistics.median(walls):,.0f} events/s wall "
                  f"(best {n / min(walls):,.0f}), {n / stack_cpu:,.0f} events/s of CPU time; "
                  f"{outputs / n:.2f} outputs per event")


if __name__ == "__main__":
    main()
