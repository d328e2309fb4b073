"""Turn river's S&P 500 daily returns (river.datasets.SP500Stocks, shipped with river, no
download) into one price CSV per stock: date,open,high,low,close,volume.

The dataset holds daily simple returns in percent (split-adjusted closes, Feb 2013 - Feb
2018) and nothing else, so the prices are reconstructed: the close before the first day is
100 and each close is the previous one times (1 + r / 100); the open is the previous close
(no overnight gap is known), high and low are the larger and smaller of open and close (no
intraday range is known), and volume is 0 (none is known). Only the closes carry
information; they reproduce the dataset's returns exactly (to the printed precision).

Run: `python benchmarks/make_sp500_csv.py [--out tests/data/sp500]`
"""

from __future__ import annotations

import argparse
import csv
import gzip
from pathlib import Path

from river.datasets import SP500Stocks

DEFAULT_OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "sp500"


def read_returns() -> tuple[list[str], dict[str, list[float]]]:
    """Dates and percent returns per ticker, in file order."""
    with gzip.open(SP500Stocks().path, "rt", newline="") as fh:
        rows = list(csv.DictReader(fh))
    tickers = [c for c in rows[0] if c not in ("date", "next_day_return")]
    return [r["date"] for r in rows], {t: [float(r[t]) for r in rows] for t in tickers}


def write_prices(out: Path) -> list[Path]:
    dates, returns = read_returns()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for ticker, rets in returns.items():
        path = out / f"{ticker}.csv"
        prev = 100.0
        with open(path, "w", newline="") as fh:
            w = csv.writer(fh, lineterminator="\n")
            w.writerow(["date", "open", "high", "low", "close", "volume"])
            for date, r in zip(dates, rets, strict=True):
                close = prev * (1.0 + r / 100.0)
                w.writerow([date, f"{prev:.6f}", f"{max(prev, close):.6f}",
                            f"{min(prev, close):.6f}", f"{close:.6f}", 0])
                prev = close
        written.append(path)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    for path in write_prices(args.out):
        print(path)


if __name__ == "__main__":
    main()
