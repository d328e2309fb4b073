"""CSV with a column mapping -> Bar/Trade/Quote events, bad rows reported by line number."""

from __future__ import annotations

from pathlib import Path

import pytest

from producers.csv_input import (
    CsvError,
    CsvMapping,
    CsvRowError,
    parse_columns,
    parse_timestamp,
    read_csv_events,
)
from schemas.ids import content_event_id
from schemas.market import Bar, Quote, Trade

DAILY = """date,open,high,low,close,volume
2013-01-02,79.12,79.29,77.38,78.43,140129500
2013-01-03,78.27,78.52,77.29,77.44,88241300
2013-01-04,76.71,76.95,75.12,75.29,not-a-number
2013-01-07,74.57,75.61,73.60,74.84,121039100
2013-01-08,75.60,73.00,74.46,75.04,114676800

2013-01-09,74.64,75.00,73.71,73.87,101901100
"""


@pytest.mark.parametrize(("text", "ns"), [
    ("2013-01-02", 1_357_084_800_000_000_000),
    ("2013-01-02T14:30:00Z", 1_357_137_000_000_000_000),
    ("2013-01-02 14:30:00", 1_357_137_000_000_000_000),
    ("2013-01-02T15:30:00+01:00", 1_357_137_000_000_000_000),
    ("1357137000", 1_357_137_000_000_000_000),
    ("1357137000.25", 1_357_137_000_250_000_000),
    ("1357137000123", 1_357_137_000_123_000_000),
    ("1357137000123456", 1_357_137_000_123_456_000),
    ("1357137000123456789", 1_357_137_000_123_456_789),
])
def test_timestamps_in_every_accepted_form(text: str, ns: int) -> None:
    assert parse_timestamp(text) == ns


@pytest.mark.parametrize("text", ["", "yesterday", "2013-13-01", "-5", "nan", "inf"])
def test_bad_timestamps_are_refused(text: str) -> None:
    with pytest.raises(ValueError):
        parse_timestamp(text)


def test_column_mappings_are_checked() -> None:
    assert parse_columns("ts=date,close=Adj Close") == {"ts": "date", "close": "Adj Close"}
    for bad in ("ts", "ts=", "=date", "ts=a,ts=b", ""):
        with pytest.raises(CsvError):
            parse_columns(bad)
    with pytest.raises(CsvError, match="must map open, high, low"):
        CsvMapping("bar", {"ts": "date", "close": "close"}, "X")
    with pytest.raises(CsvError, match="has no field 'price'"):
        CsvMapping("bar", {"ts": "d", "price": "p"}, "X")
    with pytest.raises(CsvError, match="--symbol"):
        CsvMapping("trade", {"ts": "t", "price": "p", "qty": "q"})
    with pytest.raises(CsvError, match="unknown kind"):
        CsvMapping("tick", {"ts": "t"}, "X")


def test_daily_bars_become_bar_events_and_bad_rows_are_reported_by_line(
        tmp_path: Path) -> None:
    path = tmp_path / "aapl.csv"
    path.write_text(DAILY)
    mapping = CsvMapping("bar", parse_columns(
        "ts=date,open=open,high=high,low=low,close=close,volume=volume"), "AAPL")
    items = list(read_csv_events(path, mapping))
    errors = [i for i in items if isinstance(i, CsvRowError)]
    bars = [i for i in items if isinstance(i, Bar)]
    assert [e.line for e in errors] == [4, 6]
    assert "volume" in errors[0].reason and "high" in errors[1].reason
    assert [b.close for b in bars] == [78.43, 77.44, 74.84, 73.87]
    first = bars[0]
    assert first.ts_event == first.ts_init == parse_timestamp("2013-01-02")
    assert first.event_id == content_event_id("Bar", "AAPL", first.ts_event)
    assert first.interval_s == 86_400 and first.volume == 140_129_500
    assert [b.seq for b in bars] == [0, 1, 2, 3] and first.source == "csv:aapl.csv"
    assert list(read_csv_events(path, mapping)) == items  # same file, same events


def test_trades_with_shared_timestamps_get_distinct_ids(tmp_path: Path) -> None:
    path = tmp_path / "ticks.csv"
    path.write_text("t,px,size,side\n1700000000000,10.5,100,BUY\n1700000000000,10.5,100,Sell\n"
                    "1700000000001,-1,5,buy\n")
    items = list(read_csv_events(path, CsvMapping(
        "trade", {"ts": "t", "price": "px", "qty": "size", "aggressor": "side"}, "XYZ")))
    trades = [i for i in items if isinstance(i, Trade)]
    assert len(trades) == 2 and trades[0].event_id != trades[1].event_id
    assert [t.aggressor for t in trades] == ["buy", "sell"]
    assert isinstance(items[2], CsvRowError) and items[2].line == 4


def test_quotes_with_a_symbol_column_and_optional_sizes(tmp_path: Path) -> None:
    path = tmp_path / "q.csv"
    path.write_text("ts,sym,b,a\n2024-01-02T14:30:00Z,AAA,10.0,10.1\n"
                    "2024-01-02T14:30:01Z,BBB,20.0,20.2\n2024-01-02T14:30:02Z,,1,2\n")
    items = list(read_csv_events(path, CsvMapping(
        "quote", {"ts": "ts", "symbol": "sym", "bid": "b", "ask": "a"})))
    quotes = [i for i in items if isinstance(i, Quote)]
    assert [(q.symbol, q.bid_size) for q in quotes] == [("AAA", 0.0), ("BBB", 0.0)]
    assert isinstance(items[2], CsvRowError) and items[2].line == 4


def test_a_mapping_naming_a_missing_column_fails_at_once(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("date,close\n2013-01-02,1\n")
    with pytest.raises(CsvError, match="column 'open'"):
        list(read_csv_events(path, CsvMapping("bar", parse_columns(
            "ts=date,open=open,high=high,low=low,close=close"), "X")))
