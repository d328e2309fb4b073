"""Replay against a real broker: simulate -> file -> replay -> record keeps every key's
(topic, key, value) sequence; CSV bars replay with bad rows reported; topic map, time window,
headers and event-time timestamps are kept; pacing follows event time."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from consumers.cli.app import main
from producers.replay import EventTimePacer, parse_topic_map
from schemas.codec import from_object
from schemas.market import Bar
from schemas.recording import RecordedMessage, RecordingWriter, read_recording
from schemas.settings import Settings
from tests.cli_kafka import FakeClock, cli, record

# Brokers delete by message timestamp, which is the event time: data sent through the broker
# uses recent times so the topics' 7-day retention keeps it (see the retention warning test).
TODAY = datetime.now(UTC).date()
DAYS = [(TODAY - timedelta(days=n)).isoformat() for n in (4, 3, 2, 1)]
NOW_S = time.time_ns() // 10**9
CSV = f"""Date,Open,High,Low,Close,Volume
{DAYS[0]},79.12,79.29,77.38,78.43,140129500
{DAYS[1]},78.27,78.52,77.29,77.44,88241300
{DAYS[2]},76.71,76.95,75.12,75.29,oops
{DAYS[3]},74.57,75.61,73.60,74.84,121039100
"""


def per_key(messages: list[RecordedMessage]) -> dict[tuple[str, str | None], list[Any]]:
    out: dict[tuple[str, str | None], list[Any]] = defaultdict(list)
    for m in messages:
        out[(m.topic, m.key)].append(m.value)
    return dict(out)


@pytest.mark.kafka
def test_simulate_replay_record_keeps_every_keys_sequence(
        tmp_path: Path, kafka_settings: Settings) -> None:
    original = tmp_path / "sim.jsonl.zst"
    assert main(["simulate", "--events", "3000", "--seed", "5", "--instruments", "5",
                 "--accounts", "4", "--scenario", "flash-crash", "--scenario", "fat-finger",
                 "--start", "now", "--out", str(original)]) == 0
    assert cli(kafka_settings, "replay", str(original)) == 0
    recorded = record(kafka_settings, ["market", "orders"], tmp_path / "back.jsonl.gz", 3000)
    sent = list(read_recording(original))
    assert per_key(recorded) == per_key(sent)
    assert len(per_key(sent)) == 9
    for m in recorded:  # the Kafka timestamp is the event time, in ms
        assert m.value is not None and m.timestamp == m.value["ts_event"] // 1_000_000
        assert m.partition >= 0 and m.offset >= 0


@pytest.mark.kafka
def test_csv_daily_bars_replay_with_the_bad_row_reported(
        tmp_path: Path, kafka_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "aapl.csv"
    path.write_text(CSV)
    code = cli(kafka_settings, "replay", str(path), "--format", "csv", "--kind", "bar",
               "--symbol", "AAPL", "--columns",
               "ts=Date,open=Open,high=High,low=Low,close=Close,volume=Volume")
    captured = capsys.readouterr()
    assert code == 1
    assert f"{path}:4: volume" in captured.err
    assert "1 bad lines" in captured.err and "replayed 3 messages" in captured.out
    bars = [from_object(m.value) for m in record(kafka_settings, ["market"],
                                                 tmp_path / "bars.jsonl", 3)]
    assert all(isinstance(b, Bar) and b.symbol == "AAPL" for b in bars)
    assert [b.close for b in bars] == [78.43, 77.44, 74.84]  # type: ignore[attr-defined]


@pytest.mark.kafka
def test_topic_map_time_window_headers_and_bad_lines(
        tmp_path: Path, make_settings: Callable[..., Settings],
        capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    path = tmp_path / "in.jsonl"
    with RecordingWriter(path) as writer:
        for i in range(6):
            trade = {"type": "Trade", "event_id": f"t{i}", "ts_event": (NOW_S + i + 1) * 10**9,
                     "ts_init": 0, "source": "test", "seq": i, "symbol": "ABC",
                     "price": 10.0 + i, "qty": 1.0}
            writer.write(RecordedMessage(topic="market", key="ABC", value=trade,
                                         headers=[("origin", f"h{i}")]))
        writer.write(RecordedMessage(topic="market", key="ABC", value_b64="AAEC",
                                     timestamp=NOW_S * 1000 + 3_500))
    with open(path, "ab") as fh:
        fh.write(b'{"topic": "market"}\nnot json\n')
    code = cli(settings, "replay", str(path), "--topic-map", "market=market-copy",
               "--start", str(NOW_S + 2), "--end", str(NOW_S + 5))
    err = capsys.readouterr().err
    assert code == 1 and ":8: " in err and ":9: " in err
    got = record(settings, ["market-copy"], tmp_path / "out.jsonl", 4)
    assert [m.value["event_id"] if m.value else m.value_b64 for m in got] == [
        "t1", "t2", "t3", "AAEC"]  # file order, even where event time goes back
    assert [m.headers for m in got] == [[("origin", "h1")], [("origin", "h2")],
                                        [("origin", "h3")], []]
    assert [m.timestamp - NOW_S * 1000 for m in got] == [2000, 3000, 4000, 3500]


@pytest.mark.kafka
def test_historical_event_times_survive_on_the_broker(
        tmp_path: Path, kafka_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    # The Kafka timestamp is the event time; the catalogue retains by size, never by age,
    # so a day from 2013 is still there after it lands (a 7-day time limit deleted it).
    path = tmp_path / "old.csv"
    path.write_text("t,price,qty\n2013-01-02T15:00:00Z,10,1\n2013-01-02T15:00:01Z,11,2\n")
    assert cli(kafka_settings, "replay", str(path), "--kind", "trade", "--symbol", "OLD",
               "--columns", "ts=t,price=price,qty=qty") == 0
    assert "warning" not in capsys.readouterr().err
    time.sleep(5)  # noida-db applied time retention within ~4 s
    got = record(kafka_settings, ["market"], tmp_path / "out.jsonl", 2)
    assert [m.value["price"] for m in got if m.value] == [10.0, 11.0]


def test_event_time_pacing_divides_gaps_by_the_speed() -> None:
    fake = FakeClock(100.0)
    pacer = EventTimePacer(4.0, idle=fake.idle, clock=fake.clock)
    for ts in (10**9, 3 * 10**9, 3 * 10**9, 2 * 10**9, 11 * 10**9):
        pacer.wait(ts)
    # 2 s of event time after the first at 4x, then 10 s after the first (0.5 s spent).
    assert fake.waits == [0.5, 2.0]
    unpaced = EventTimePacer(None, idle=fake.idle, clock=fake.clock)
    for ts in (0, 10**12):
        unpaced.wait(ts)
    assert fake.waits == [0.5, 2.0]


def test_topic_maps_are_parsed_or_refused() -> None:
    assert parse_topic_map(["market=a,orders=b", "dlq=c"]) == {
        "market": "a", "orders": "b", "dlq": "c"}
    with pytest.raises(ValueError, match="FROM=TO"):
        parse_topic_map(["market"])
