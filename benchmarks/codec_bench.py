"""Codec cost: encode and decode time per event (µs) for every market and order event type.

Each figure is the median of several repetitions in this one process; a repetition times a
tight loop of N calls on one representative event (realistic field values, optional fields
filled as a live feed would) and divides by N. Decode includes the size cap, JSON parsing and
full model validation: what a worker pays per input message.

Run: `python benchmarks/codec_bench.py [--reps 5] [--iterations 20000] [--quick] [--json F]`.
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import orjson
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from schemas.codec import decode, encode
from schemas.common import Envelope, Side
from schemas.market import (
    Bar,
    BookTop,
    InstrumentPhase,
    InstrumentStatus,
    NewsSentiment,
    PriceLevel,
    Quote,
    Trade,
)
from schemas.orders import (
    ExecType,
    ExecutionReport,
    MassCancel,
    OrderCancel,
    OrderNew,
    OrderReplace,
    OrdType,
    TimeInForce,
)

T0 = 1_704_205_800_000_000_000


def _env(n: int) -> dict[str, Any]:
    return {"event_id": f"bench-{n:08d}", "ts_event": T0 + n * 1_000_000,
            "ts_init": T0 + n * 1_000_000 + 35_000, "source": "sim-feed", "seq": n}


def sample_events() -> list[Envelope]:
    """One representative event of each market and order type."""
    book = [PriceLevel(price=189.50 - i * 0.01, size=100 * (i + 1)) for i in range(5)]
    asks = [PriceLevel(price=189.52 + i * 0.01, size=100 * (i + 1)) for i in range(5)]
    return [
        Trade(**_env(1), symbol="ACME", price=189.51, qty=300, aggressor=Side.BUY,
              trade_id="T-1029384", venue="XNAS"),
        Quote(**_env(2), symbol="ACME", bid=189.50, ask=189.52, bid_size=400, ask_size=700,
              venue="XNAS"),
        Bar(**_env(3), symbol="ACME", open=189.1, high=189.9, low=188.7, close=189.51,
            volume=182_300, interval_s=60),
        BookTop(**_env(4), symbol="ACME", bids=book, asks=asks),
        InstrumentStatus(**_env(5), symbol="ACME", status=InstrumentPhase.TRADING, tick_size=0.01,
                         lot_size=1, min_qty=1, max_qty=100_000, ref_price=189.2,
                         adv=52_000_000, currency="USD", sector="tech"),
        NewsSentiment(**_env(6), symbol="ACME", sentiment=-0.62, relevance=0.9,
                      headline="ACME misses earnings estimates", provider="newswire"),
        OrderNew(**_env(7), account="ACC-0007", symbol="ACME", side=Side.BUY,
                 ord_type=OrdType.LIMIT, price=189.50, qty=500, strategy="momo",
                 cl_ord_id="ACC-0007-000123", time_in_force=TimeInForce.DAY),
        OrderCancel(**_env(8), account="ACC-0007", cl_ord_id="ACC-0007-000124",
                    orig_cl_ord_id="ACC-0007-000123", symbol="ACME"),
        OrderReplace(**_env(9), account="ACC-0007", symbol="ACME", side=Side.BUY, price=189.48,
                     qty=400, strategy="momo", cl_ord_id="ACC-0007-000125",
                     orig_cl_ord_id="ACC-0007-000123"),
        ExecutionReport(**_env(10), account="ACC-0007", cl_ord_id="ACC-0007-000125",
                        exec_id="X-99812", exec_type=ExecType.PARTIAL_FILL, symbol="ACME",
                        side=Side.BUY, last_px=189.48, last_qty=200, leaves_qty=200,
                        cum_qty=200, avg_px=189.48, counterparty="CP-ATLAS"),
        MassCancel(**_env(11), account="ACC-0007", scope="account:ACC-0007", symbol="ACME",
                   reason="kill switch", requested_by="risk-desk"),
    ]


def per_call_us(fn: Callable[[], object], iterations: int) -> float:
    gc.disable()  # a collection landing in one repetition would skew it
    try:
        start = time.perf_counter_ns()
        for _ in range(iterations):
            fn()
        elapsed = time.perf_counter_ns() - start
    finally:
        gc.enable()
    return elapsed / iterations / 1000


def measure(events: list[Envelope], reps: int, iterations: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  TimeElapsedColumn(), transient=True) as progress:
        task = progress.add_task("codec", total=len(events) * reps)
        for event in events:
            data = encode(event)
            assert decode(data) == event
            enc: list[float] = []
            dec: list[float] = []
            for _ in range(reps):
                progress.update(task, description=f"{event.type:<16}")
                enc.append(per_call_us(partial(encode, event), iterations))
                dec.append(per_call_us(partial(decode, data), iterations))
                progress.advance(task)
            rows.append({"type": event.type, "bytes": len(data),
                         "encode_us": statistics.median(enc),
                         "decode_us": statistics.median(dec),
                         "encode_us_runs": enc, "decode_us_runs": dec})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=5, help="repetitions (median taken)")
    parser.add_argument("--iterations", type=int, default=20_000,
                        help="calls timed per repetition")
    parser.add_argument("--quick", action="store_true", help="3 reps of 2000 calls")
    parser.add_argument("--json", metavar="FILE", help="also write the figures as JSON")
    args = parser.parse_args(argv)
    reps, iterations = (3, 2000) if args.quick else (args.reps, args.iterations)

    rows = measure(sample_events(), reps, iterations)
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
