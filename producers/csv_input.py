"""CSV files with a column mapping, turned into Bar, Trade or Quote events.

A user's own data (a daily OHLC download, a tick file) maps onto event fields with
`--columns ts=date,open=Open,...`: each `field=COLUMN` names the CSV header column holding
that field. Rows become events with a deterministic id from their content
(`schemas.ids.content_event_id(kind, symbol, ts)`, plus an occurrence number when several
rows share a symbol and time), `ts_init = ts_event` (the data is historical, so a replay is
reproducible), `source = "csv:<file name>"` and `seq` counting the good rows.

A row that cannot become a valid event is reported as a `CsvRowError` with its line number
(the header is line 1) and skipped; the good rows are all kept.

Timestamps: ISO dates (`2013-01-02`, midnight UTC), ISO date-times (`2013-01-02T14:30:00Z`,
`2013-01-02 14:30:00`, naive ones are UTC) or epoch numbers in seconds, milliseconds,
microseconds or nanoseconds (told apart by magnitude).

>>> parse_timestamp("2013-01-02")
1357084800000000000
>>> parse_timestamp("1357084800") == parse_timestamp("1357084800000") == 1357084800000000000
True
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from schemas.codec import describe_validation_error
from schemas.common import Envelope
from schemas.ids import content_event_id
from schemas.market import Bar, Quote, Trade

KINDS: dict[str, type[Envelope]] = {"bar": Bar, "trade": Trade, "quote": Quote}
REQUIRED = {"bar": ("ts", "open", "high", "low", "close"), "trade": ("ts", "price", "qty"),
            "quote": ("ts", "bid", "ask")}
OPTIONAL = {"bar": ("volume", "interval_s", "symbol"),
            "trade": ("aggressor", "trade_id", "venue", "symbol"),
            "quote": ("bid_size", "ask_size", "venue", "symbol")}
_NUMERIC = {"open", "high", "low", "close", "volume", "interval_s", "price", "qty", "bid", "ask",
            "bid_size", "ask_size"}
_DATE_ONLY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
DAY_S = 86_400.0


class CsvError(ValueError):
    """The file or the mapping cannot be used at all (one readable line)."""


@dataclass(frozen=True)
class CsvRowError:
    line: int
    reason: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.reason}"


@dataclass(frozen=True)
class CsvMapping:
    """How to read one CSV file: the event kind, `field -> column`, and the symbol (fixed,
    or a `symbol` column)."""

    kind: str
    columns: dict[str, str]
    symbol: str | None = None
    bar_interval_s: float | None = None  # default: one day for date-only stamps, else 60 s

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise CsvError(f"unknown kind {self.kind!r} (use one of: {', '.join(KINDS)})")
        allowed = REQUIRED[self.kind] + OPTIONAL[self.kind]
        for name in self.columns:
            if name not in allowed:
                raise CsvError(f"{self.kind} has no field {name!r} (fields: {', '.join(allowed)})")
        missing = [f for f in REQUIRED[self.kind] if f not in self.columns]
        if missing:
            raise CsvError(f"--columns must map {', '.join(missing)} for {self.kind} rows "
                           f"(e.g. {missing[0]}=COLUMN)")
        if self.symbol is None and "symbol" not in self.columns:
            raise CsvError("give --symbol S or map a symbol column (symbol=COLUMN)")


def parse_columns(spec: str) -> dict[str, str]:
    """`ts=date,close=Close` -> {"ts": "date", "close": "Close"}.

    >>> parse_columns("ts=date, close=Adj Close")
    {'ts': 'date', 'close': 'Adj Close'}
    """
    out: dict[str, str] = {}
    for part in spec.split(","):
        if not part.strip():
            continue
        name, sep, column = part.partition("=")
        if not sep or not name.strip() or not column.strip():
            raise CsvError(f"bad column mapping {part.strip()!r}: use FIELD=COLUMN")
        if name.strip() in out:
            raise CsvError(f"field {name.strip()!r} is mapped twice")
        out[name.strip()] = column.strip()
    if not out:
        raise CsvError("--columns is empty: use FIELD=COLUMN,...")
    return out


def parse_timestamp(text: str) -> int:
    """Nanoseconds since the epoch from an ISO date/date-time or an epoch number."""
    value = text.strip()
    if not value:
        raise ValueError("empty timestamp")
    if value.isdigit():  # exact integer arithmetic: nanoseconds do not fit a float
        whole = int(value)
        return whole * _epoch_scale(whole)
    try:
        number = Decimal(value)  # exact: a float would blur the nanoseconds
    except InvalidOperation:
        number = None
    if number is not None:
        if not number.is_finite() or number < 0:
            raise ValueError(f"timestamp {value!r} is negative or not finite")
        return int((number * _epoch_scale(int(number))).to_integral_value())
    try:
        if _DATE_ONLY.match(value):
            moment = datetime.combine(date.fromisoformat(value), datetime.min.time(), UTC)
        else:
            moment = datetime.fromisoformat(value)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=UTC)
    except ValueError:
        raise ValueError(f"cannot read {value!r} as a date, date-time or epoch number") from None
    epoch = datetime(1970, 1, 1, tzinfo=UTC)
    delta = moment - epoch
    return (delta.days * 86_400 + delta.seconds) * 10**9 + delta.microseconds * 1000


def _epoch_scale(magnitude: int) -> int:
    """Nanoseconds per unit of an epoch number: seconds, ms, us or ns by its size."""
    if magnitude < 10**11:  # seconds until the year 5138
        return 10**9
    if magnitude < 10**14:
        return 10**6
    if magnitude < 10**17:
        return 10**3
    return 1


def _number(field: str, text: str) -> float:
    try:
        number = float(text)
    except ValueError:
        raise ValueError(f"{field}: {text!r} is not a number") from None
    if not math.isfinite(number):
        raise ValueError(f"{field}: {text!r} is not a finite number")
    return number


def read_csv_events(path: str | Path, mapping: CsvMapping, *,
                    source: str | None = None) -> Iterator[Envelope | CsvRowError]:
    """Events of a CSV file in file order, with a CsvRowError for each bad row."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8-sig") as fh:
        yield from csv_events(fh, mapping, source=source or f"csv:{path.name}"[:128])


def csv_events(lines: io.TextIOBase | Any, mapping: CsvMapping, *,
               source: str = "csv") -> Iterator[Envelope | CsvRowError]:
    """Like `read_csv_events` for an open text stream."""
    reader = csv.reader(lines)
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise CsvError("the CSV file is empty (a header row is needed)") from None
    where: dict[str, int] = {}
    for name, column in mapping.columns.items():
        if column not in header:
            raise CsvError(f"column {column!r} (for {name}) is not in the header "
                           f"({', '.join(header)})")
        where[name] = header.index(column)
    cls = KINDS[mapping.kind]
    seen: dict[tuple[str, int], int] = {}
    seq = 0
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue
        try:
            fields = _row_fields(row, where, mapping)
        except ValueError as exc:
            yield CsvRowError(line, str(exc))
            continue
        symbol, ts = fields["symbol"], fields.pop("ts")
        occurrence = seen.get((symbol, ts), 0)
        seen[(symbol, ts)] = occurrence + 1
        extra = (occurrence,) if occurrence else ()
        try:
            event = cls(event_id=content_event_id(cls.__name__, symbol, ts, *extra),
                        ts_event=ts, ts_init=ts, source=source, seq=seq, **fields)
        except ValidationError as exc:
            yield CsvRowError(line, describe_validation_error(exc, cls.__name__))
            continue
        seq += 1
        yield event


def _row_fields(row: list[str], where: dict[str, int],
                mapping: CsvMapping) -> dict[str, Any]:
    if len(row) <= max(where.values()):
        raise ValueError(f"expected at least {max(where.values()) + 1} columns, got {len(row)}")
    cells = {name: row[index].strip() for name, index in where.items()}
    fields: dict[str, Any] = {}
    for name, text in cells.items():
        if name == "ts":
            fields["ts"] = parse_timestamp(text)
        elif name in _NUMERIC:
            if text == "" and name in OPTIONAL[mapping.kind]:
                continue
            fields[name] = _number(name, text)
        elif text:
            fields[name] = text.lower() if name == "aggressor" else text
    fields.setdefault("symbol", mapping.symbol)
    if not fields["symbol"]:
        raise ValueError("symbol: empty")
    if mapping.kind == "bar":
        fields.setdefault("volume", 0.0)
        if "interval_s" not in fields:
            fields["interval_s"] = mapping.bar_interval_s or (
                DAY_S if _DATE_ONLY.match(cells["ts"]) else 60.0)
    elif mapping.kind == "quote":
        fields.setdefault("bid_size", 0.0)
        fields.setdefault("ask_size", 0.0)
    return fields
