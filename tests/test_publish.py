"""Publishing: stdin JSONL with invalid lines (DLQ with line numbers, every valid event
published), simulate straight to the broker, and failures counted, never silent."""

from __future__ import annotations

import base64
import io
import sys
import time
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest

from consumers.cli.app import main
from producers.broker import free_port
from producers.publisher import Publisher, RatePacer
from schemas.codec import encode, from_object
from schemas.market import Trade
from schemas.outputs import DeadLetter
from schemas.recording import read_recording
from schemas.settings import Settings, load_settings
from tests.cli_kafka import FakeClock, cli, record

# Recent event times: brokers delete by message timestamp, which is the event time.
NOW_NS = time.time_ns() // 10**9 * 10**9


def _trade(i: int, **extra: object) -> dict[str, object]:
    return {"type": "Trade", "event_id": f"t{i}", "ts_event": NOW_NS + i,
            "ts_init": 1, "source": "feed", "symbol": "AAA", "price": 10.0 + i, "qty": 5.0,
            **extra}


def _order(i: int) -> dict[str, object]:
    return {"type": "OrderNew", "event_id": f"o{i}", "ts_event": NOW_NS + i,
            "ts_init": 1, "source": "oms", "account": "ACC-9", "symbol": "AAA", "side": "buy",
            "price": 10.0, "qty": 1.0, "cl_ord_id": f"c{i}"}


@pytest.mark.kafka
def test_invalid_lines_go_to_the_dlq_with_line_numbers_and_valid_ones_are_published(
        tmp_path: Path, make_settings: Callable[..., Settings],
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("STREAMRISK_MAX_MESSAGE_BYTES", "2048")  # the CLI reads the env
    settings = make_settings()
    lines = [
        orjson.dumps(_trade(1)),                      # 1 valid
        b"",                                          # 2 blank: skipped
        b"{not json",                                 # 3 undecodable
        orjson.dumps(_order(1)),                      # 4 valid
        orjson.dumps({**_trade(2), "type": "Tick"}),  # 5 unknown type
        orjson.dumps(_trade(3, qty=-1)),              # 6 schema violation
        b'{"type": "Trade", "pad": "' + b"x" * 5000 + b'"}',  # 7 over the size cap
        orjson.dumps(_trade(4)),                      # 8 valid
    ]
    stdin = io.TextIOWrapper(io.BytesIO(b"\n".join(lines) + b"\n"))
    monkeypatch.setattr(sys, "stdin", stdin)
    code = cli(settings, "publish")
    captured = capsys.readouterr()
    assert code == 1
    for n in (3, 5, 6, 7):
        assert f"stdin:{n}: " in captured.err
    assert "published 3 events; 4 invalid lines" in captured.out

    letters = [from_object(m.value) for m in record(settings, ["dlq"], tmp_path / "d.jsonl", 4)]
    assert all(isinstance(d, DeadLetter) for d in letters)
    by_line = {d.original_offset: d for d in letters if isinstance(d, DeadLetter)}
    assert sorted(by_line) == [3, 5, 6, 7]
    assert [by_line[n].error_kind for n in (3, 5, 6, 7)] == [
        "undecodable", "unknown_type", "invalid", "too_large"]
    for n, letter in by_line.items():
        assert letter.reason.startswith(f"line {n}: ") and letter.original_topic == "stdin"
        original = base64.b64decode(letter.original_value_b64)
        assert lines[n - 1].startswith(original) and len(original) <= 1024
    assert by_line[6].original_key == "AAA" and "qty" in by_line[6].reason

    got = record(settings, ["market", "orders"], tmp_path / "v.jsonl", 3)
    assert sorted((m.topic, m.key, (m.value or {})["event_id"]) for m in got) == [
        ("market", "AAA", "t1"), ("market", "AAA", "t4"), ("orders", "ACC-9", "o1")]


@pytest.mark.kafka
def test_simulate_publishes_to_the_catalogue_topics(
        tmp_path: Path, kafka_settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    labels = tmp_path / "labels.jsonl"
    start = str(NOW_NS)
    code = cli(kafka_settings, "simulate", "--events", "800", "--seed", "3", "--instruments",
               "3", "--accounts", "2", "--rate", "100000", "--labels", str(labels),
               "--start", start)
    assert code == 0 and "simulated 800 events" in capsys.readouterr().out
    got = record(kafka_settings, ["market", "orders"], tmp_path / "s.jsonl", 800)
    expected = read_recording(_simulated(tmp_path, start))
    assert sorted(orjson.dumps(m.value) for m in got) == sorted(
        orjson.dumps(m.value) for m in expected)
    assert labels.read_text() == ""


def _simulated(tmp_path: Path, start: str) -> Path:
    out = tmp_path / "same.jsonl"
    assert main(["simulate", "--events", "800", "--seed", "3", "--instruments", "3",
                 "--accounts", "2", "--start", start, "--out", str(out)]) == 0
    return out


def test_undeliverable_messages_are_counted_not_dropped() -> None:
    settings = load_settings(None, bootstrap_servers=f"127.0.0.1:{free_port()}",
                             profile="test", kafka_overrides={"message.timeout.ms": "1000"})
    trade = from_object(_trade(1))
    with Publisher(settings, flush_timeout_s=10) as publisher:
        for _ in range(5):
            publisher.publish("market", "AAA", trade)
    result = publisher.close()
    assert (result.published, result.delivered, result.failed) == (5, 0, 5)
    assert not result.ok and "market" in result.errors[0]


def test_oversized_messages_are_refused_before_sending() -> None:
    settings = load_settings(None, bootstrap_servers=f"127.0.0.1:{free_port()}",
                             profile="test", max_message_bytes=1024)
    big = Trade.model_validate({**_trade(1), "venue": "v" * 2000})
    publisher = Publisher(settings, flush_timeout_s=1)
    publisher.publish("market", "AAA", big)
    assert publisher.failed == 1 and len(encode(big)) > 1024
    result = publisher.close()
    assert result.failed == 1 and "over the 1024-byte cap" in result.errors[0]


def test_rate_pacer_spaces_calls_evenly() -> None:
    fake = FakeClock()
    pacer = RatePacer(10.0, idle=fake.idle, clock=fake.clock)
    for _ in range(4):
        pacer.wait()
    assert fake.waits == [0.1, 0.1, 0.1]
    with pytest.raises(ValueError):
        RatePacer(0)
