"""Codec cost: encode and decode time per event (µs) for every market and order event type.

Each figure is the median of several repetitions in this one process; a repetition times a
tight loop of N calls on one representative event (realistic field values, optional fields
filled as a live feed would) and divides by N. Decode includes the size cap, JSON parsing and
full model validation: what a worker pays per input message.

Run: `python benchmarks/codec_bench.py [--reps 5] [--iterations 20000] [--quick] [--json F]`.
"""

from __future__ import annotations

import argparse
import platform
import statistics
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.table import Table

from consumers.bench.inprocess import codec_costs
from consumers.bench.measure import progress_bar
from consumers.bench.workloads import codec_samples


def measure(reps: int, iterations: int) -> list[dict[str, Any]]:
    events = codec_samples()
    with progress_bar() as progress:
        task = progress.add_task("codec", total=len(events) * reps)
        return codec_costs(reps, iterations, lambda n: progress.advance(task, n), events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions (median taken)")
    parser.add_argument("--iterations", type=int, default=20_000,
                        help="calls timed per repetition")
    parser.add_argument("--quick", action="store_true", help="3 reps of 2000 calls")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    reps, iterations = (3, 2000) if args.quick else (args.reps, args.iterations)

    rows = measure(reps, iterations)
    console = Console()
    table = Table(title=f"codec cost per event (µs), median of {reps} runs of {iterations:,} "
                        "calls")
    # The best run is shown next to the median: on a shared machine it tells noise apart.
    for column in ("type", "bytes", "encode µs", "(best)", "decode µs", "(best)",
                   "decode events/s"):
        table.add_column(column, justify="left" if column == "type" else "right")
    for row in rows:
        table.add_row(row["type"], str(row["bytes"]), f"{row['encode_us']:.2f}",
                      f"{min(row['encode_us_runs']):.2f}", f"{row['decode_us']:.2f}",
                      f"{min(row['decode_us_runs']):.2f}", f"{1e6 / row['decode_us']:,.0f}")
    console.print(table)
    enc_med = statistics.median(r["encode_us"] for r in rows)
    dec_med = statistics.median(r["decode_us"] for r in rows)
    console.print(f"median over types: encode {enc_med:.2f} µs, decode {dec_med:.2f} µs "
                  f"(python {platform.python_version()}, orjson {orjson.__version__})")
    if args.json:
        Path(args.json).write_bytes(orjson.dumps(
            {"reps": reps, "iterations": iterations, "python": platform.python_version(),
             "median_encode_us": enc_med, "median_decode_us": dec_med, "types": rows},
            option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
