"""Cost per event of each market model and of the whole default market risk stack,
in-process (no broker): median of several runs in one process.

The input is the simulator's market stream (quotes, trades, bars, news, reference data) for a
few instruments, turned once into feature observations. Each model then runs over the
observations of every instrument, score-then-learn as the processor does; the stack runs
`MarketRiskProcessor.process` over the events themselves (features, every model,
validation, alerts and building the output events). Also reported: the pickled state
size per instrument (what one changelog snapshot carries).

Run: `python benchmarks/models_bench.py [--seconds S] [--instruments N] [--runs R] [--quick]`
"""

from __future__ import annotations

import argparse
import pickle
import statistics
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

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


def time_features(events: list[Envelope]) -> float:
    feats: dict[str, InstrumentFeatures] = {}
    start = time.perf_counter()
    for ev in events:
        sym = ev.symbol  # type: ignore[attr-defined]
        f = feats.get(sym)
        if f is None:
            f = feats[sym] = InstrumentFeatures()
        f.update(ev)
    return time.perf_counter() - start


def time_model(factory: Callable[[], ModelAdapter[Any]],
               obs: dict[str, list[MarketObs]]) -> tuple[float, int]:
    """Seconds for score-then-learn over every observation; pickled bytes per instrument."""
    elapsed = 0.0
    size = 0
    for stream in obs.values():
        model = factory()
        score, learn = model.score_one, model.learn_one
        start = time.perf_counter()
        for x in stream:
            score(x)
            learn(x)
        elapsed += time.perf_counter() - start
        size = max(size, len(pickle.dumps(model)))
    return elapsed, size


def time_stack(events: list[Envelope]) -> tuple[float, int, int]:
    proc = MarketRiskProcessor(MarketRiskConfig())
    process = proc.process
    outputs = 0
    start = time.perf_counter()
    for ev in events:
        outputs += len(process(ev))
    elapsed = time.perf_counter() - start
    size = max(len(proc.snapshot(k) or b"") for k in proc.symbols())
    return elapsed, outputs, size


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

    timings: dict[str, list[float]] = {name: [] for name in ["features", *MODELS, "stack"]}
    sizes: dict[str, int] = {}
    outputs = 0
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TimeElapsedColumn()]
    with Progress(*columns, console=console, transient=True) as bar:
        task = bar.add_task("runs", total=args.runs)
        for _ in range(args.runs):
            timings["features"].append(time_features(events))
            for name, factory in MODELS.items():
                elapsed, sizes[name] = time_model(factory, obs)
                timings[name].append(elapsed)
            elapsed, outputs, sizes["stack"] = time_stack(events)
            timings["stack"].append(elapsed)
            bar.advance(task)

    table = Table(title="market models, in-process (per market event)")
    table.add_column("component")
    table.add_column("µs / event", justify="right")
    table.add_column("events / s", justify="right")
    table.add_column("share of stack", justify="right")
    table.add_column("state bytes / instrument", justify="right")
    stack = statistics.median(timings["stack"])
    for name, values in timings.items():
        med = statistics.median(values)
        table.add_row(name, f"{med / n * 1e6:.1f}", f"{n / med:,.0f}", f"{med / stack:.0%}",
                      f"{sizes[name]:,}" if name in sizes else "")
    console.print(table)
    console.print(f"default stack: {n / stack:,.0f} events/s in-process "
                  f"({outputs / n:.2f} outputs per event; min {n / max(timings['stack']):,.0f}, "
                  f"max {n / min(timings['stack']):,.0f} events/s over {args.runs} runs)")


if __name__ == "__main__":
    main()
