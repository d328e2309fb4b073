"""Alert latency against the input rate, and who uses the machine's cores at each rate.

    python benchmarks/latency_curve.py [--rates 250,500,...] [--seconds S] [--instruments N]
                                       [--quick] [--png FILE] [--json FILE]
                                       [--bootstrap-servers HOST:PORT] [--config FILE]

At each rate one market worker (exactly-once, its default commit interval; alerts are urgent
outputs, committed at the end of their batch) gets the same kind of stream `streamrisk bench`
times: the benchmark publishes at that rate and reads `risk.alerts` read-committed, event
produced -> alert consumed. Next to p50/p99 it prints the CPU each process used meanwhile:
the worker's Python thread, its other (librdkafka) threads, the broker when this script
started it, and this process (publisher and alert reader), in cores. On a small machine the
rate where p99 leaves its target is where those together fill the cores, often well before
the worker's own thread is busy. `--png` draws both. Without --bootstrap-servers (or
KAFKA_BOOTSTRAP) an embedded broker is started and stopped.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import orjson
from rich.console import Console
from rich.table import Table

from consumers.bench import broker_runs
from consumers.bench.cluster import bootstrap
from consumers.bench.measure import progress_bar
from consumers.bench.workloads import market_messages
from schemas.settings import Settings, load_settings

TARGET_P99_MS = 50.0
WARMUP_EVENTS = 2000
PROCESSES = {"worker_main_thread": "worker: Python thread",
             "worker_other_threads": "worker: other threads",
             "broker": "broker", "bench": "publisher and alert reader"}


def measure(rates: list[float], seconds: float, instruments: int, base: Settings,
            servers: str | None, console: Console) -> list[dict[str, Any]]:
    """One latency run per rate, on one broker; each run's figures."""
    points = []
    with bootstrap(servers) as kafka, progress_bar(console) as progress:
        task = progress.add_task("alert latency by rate", total=sum(int(r * seconds)
                                                                    for r in rates))
        for i, rate in enumerate(rates):
            stream = market_messages(WARMUP_EVENTS + int(rate * seconds),
                                     instruments=instruments, seed=11 + i, crossed_every=20)
            with tempfile.TemporaryDirectory(prefix="streamrisk-curve-") as workdir:
                run = broker_runs.alert_latency(
                    base, kafka, stream[:WARMUP_EVENTS], stream[WARMUP_EVENTS:], rate,
                    base.worker.commit_interval_ms, 3, Path(workdir),
                    tick=lambda n: progress.advance(task, n))
            points.append({"rate": rate, **run})
    return points


def highest_rate_within(points: list[dict[str, Any]], p99_ms: float) -> float | None:
    """The highest achieved rate whose p99 was under `p99_ms`, every lower rate's too."""
    best = None
    for point in sorted(points, key=lambda p: p["rate"]):
        if point["p99_ms"] >= p99_ms:
            break
        best = point["rate_achieved"]
    return best


def table(points: list[dict[str, Any]], cores: int) -> Table:
    out = Table(title=f"alert latency and CPU by input rate (cores of {cores})")
    for title in ("events/s", "p50 ms", "p99 ms", "worker busy", *PROCESSES.values(), "all"):
        out.add_column(title, justify="right")
    for p in points:
        busy = p["cores_by_process"]
        out.add_row(f"{p['rate_achieved']:,.0f}", f"{p['p50_ms']:,.1f}", f"{p['p99_ms']:,.1f}",
                    f"{p['worker_busy_share']:.0%}", *(f"{busy[k]:.2f}" for k in PROCESSES),
                    f"{busy['total']:.2f}")
    return out


def plot(points: list[dict[str, Any]], cores: int, path: Path) -> None:
    """Latency percentiles (log scale, the target drawn) over the cores each process used."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rates = [p["rate_achieved"] for p in points]
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(8, 7), sharex=True)
    top.plot(rates, [p["p50_ms"] for p in points], "o-", label="p50")
    top.plot(rates, [p["p99_ms"] for p in points], "s-", label="p99")
    top.axhline(TARGET_P99_MS, color="grey", linestyle="--", label="p99 target")
    top.set_yscale("log")
    top.set_ylabel("event -> alert (ms)")
    top.legend()
    top.grid(alpha=0.3)
    width = 0.6 * min((b - a for a, b in itertools.pairwise(rates)), default=500)
    base = [0.0] * len(points)
    for key, label in PROCESSES.items():
        values = [p["cores_by_process"][key] for p in points]
        bottom.bar(rates, values, width, bottom=base, label=label)
        base = [b + v for b, v in zip(base, values, strict=True)]
    bottom.axhline(cores, color="grey", linestyle="--", label=f"{cores} cores")
    bottom.set_xlabel("input rate (events/s)")
    bottom.set_ylabel("cores used")
    bottom.legend(fontsize="small")
    fig.suptitle("streamrisk: one market worker, exactly-once")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", default="250,500,1000,2000,3000,4000,5000",
                        help="events/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed seconds per rate")
    parser.add_argument("--instruments", type=int, default=32)
    parser.add_argument("--quick", action="store_true", help="500, 2000, 5000/s for 2 s")
    parser.add_argument("--png", metavar="FILE", help="draw the curve and the CPU")
    parser.add_argument("--json", metavar="FILE")
    parser.add_argument("--bootstrap-servers", metavar="HOST:PORT",
                        default=os.environ.get("KAFKA_BOOTSTRAP"))
    parser.add_argument("--config", metavar="FILE", help="a streamrisk config file")
    args = parser.parse_args(argv)
    try:
        rates = [float(r) for r in ("500,2000,5000" if args.quick else args.rates).split(",")]
    except ValueError:
        parser.error(f"--rates: not a list of numbers: {args.rates!r}")
    if not rates or min(rates) <= 0 or args.seconds <= 0 or args.instruments <= 0:
        parser.error("rates, --seconds and --instruments must be positive")
    seconds = 2.0 if args.quick else args.seconds
    base = load_settings(args.config) if args.config else Settings()
    console = Console(stderr=True)
    cores = os.cpu_count() or 1
    points = measure(rates, seconds, args.instruments, base, args.bootstrap_servers, console)
    Console().print(table(points, cores))
    best = highest_rate_within(points, TARGET_P99_MS)
    Console().print(f"p99 under {TARGET_P99_MS:g} ms up to "
                    + (f"{best:,.0f} events/s" if best else "none of these rates"))
    if args.png:
        plot(points, cores, Path(args.png))
        Console().print(f"wrote {args.png}")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(
            {"cores": cores, "instruments": args.instruments, "seconds": seconds,
             "highest_rate_p99_within_target": best, "points": points},
            option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
