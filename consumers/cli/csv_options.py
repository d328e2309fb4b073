"""The CSV input options that `replay` and `evaluate` share (--format, --kind, --symbol,
--columns, --bar-interval), turned into a `CsvMapping`."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from producers.csv_input import CsvMapping


def csv_mapping(args: argparse.Namespace, path: Path) -> CsvMapping | None:
    """The mapping for a CSV input (`--format csv`, or a *.csv file without --format), None
    for a recording. Raises CsvError (a ValueError) for options that do not fit the format.

    >>> ns = argparse.Namespace(format=None, kind=None, columns=None, symbol=None,
    ...                         bar_interval=None)
    >>> csv_mapping(ns, Path("day.jsonl")) is None
    True
    """
    from producers.csv_input import CsvError, CsvMapping, parse_columns

    fmt = args.format or ("csv" if path.suffix.lower() == ".csv" else "jsonl")
    if fmt == "csv":
        if not args.kind or not args.columns:
            raise CsvError("CSV input needs --kind and --columns")
        return CsvMapping(args.kind, parse_columns(args.columns), args.symbol,
                          args.bar_interval)
    if args.kind or args.columns or args.symbol:
        raise CsvError("--kind, --columns and --symbol are for CSV input (--format csv)")
    return None
