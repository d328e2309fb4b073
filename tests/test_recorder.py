"""The recorder against a real broker: read_committed, stop conditions, compressed output,
tombstones, and the `record` command."""

from __future__ import annotations

from pathlib import Path

import pytest

from consumers.cli.app import main
from consumers.recorder import Recorder, RecorderError
from producers.kafka import DeliveryTracker, flush_all, make_producer
from producers.provision import ensure_topics
from schemas.recording import read_recording
from schemas.settings import Settings
from schemas.topics import by_name

pytestmark = pytest.mark.kafka


def _produce(settings: Settings, topic: str, items: list[tuple[str, bytes | None]],
             *, transactional_id: str | None = None, commit: bool = True) -> None:
    producer = make_producer(settings, transactional_id=transactional_id)
    tracker = DeliveryTracker()
    if transactional_id:
        producer.init_transactions(10)
        producer.begin_transaction()
    for key, value in items:
        producer.produce(settings.topic(topic), value=value, key=key.encode(),
                         headers=[("h", key)], on_delivery=tracker.on_delivery)
    # Flush first: an aborted transaction's messages must really be in the log.
    assert flush_all(producer) == 0 and tracker.failed == 0
    if transactional_id:
        (producer.commit_transaction if commit else producer.abort_transaction)(10)


def test_only_committed_messages_are_recorded(tmp_path: Path, kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, [by_name("orders")])
    tid = f"{kafka_settings.topic_prefix}tx"
    _produce(kafka_settings, "orders", [(f"A{i}", b'{"n": 1}') for i in range(5)],
             transactional_id=tid)
    _produce(kafka_settings, "orders", [(f"B{i}", b'{"n": 2}') for i in range(5)],
             transactional_id=tid, commit=False)
    _produce(kafka_settings, "orders", [(f"C{i}", b'{"n": 3}') for i in range(5)],
             transactional_id=tid)
    out = tmp_path / "orders.jsonl.zst"
    stats = Recorder(kafka_settings, ["orders"], out, idle_timeout_s=1.0).run()
    assert stats.stopped_by == "idle-timeout" and stats.count == 10
    got = list(read_recording(out))
    assert sorted(m.key or "" for m in got) == sorted([f"A{i}" for i in range(5)]
                                                      + [f"C{i}" for i in range(5)])
    assert all(m.topic == "orders" and m.value in ({"n": 1}, {"n": 3}) for m in got)
    assert all(m.headers == [("h", m.key)] for m in got)


def test_max_events_stops_exactly_and_raw_values_and_tombstones_survive(
        tmp_path: Path, kafka_settings: Settings) -> None:
    ensure_topics(kafka_settings, [by_name("risk.accounts")])
    items: list[tuple[str, bytes | None]] = [("k", b"\x00\xffraw"), ("k", None), ("k", b"[1]")]
    items += [("k", b'{"i": %d}' % i) for i in range(10)]
    _produce(kafka_settings, "risk.accounts", items)
    out = tmp_path / "acc.jsonl.gz"
    stats = Recorder(kafka_settings, ["risk.accounts"], out, max_events=7,
                     idle_timeout_s=15).run()
    assert stats.stopped_by == "max-events" and stats.count == 7
    got = list(read_recording(out))
    assert [m.offset for m in got] == list(range(7))  # one key: one partition, in order
    assert got[0].value is None and got[0].value_bytes() == b"\x00\xffraw"
    assert got[1].value is None and got[1].value_b64 is None  # the tombstone
    assert got[2].value_bytes() == b"[1]" and got[3].value == {"i": 0}


def test_missing_topics_and_bad_options_are_refused(tmp_path: Path,
                                                     kafka_settings: Settings) -> None:
    with pytest.raises(RecorderError, match="does not exist"):
        Recorder(kafka_settings, ["no-such-topic"], tmp_path / "x.jsonl",
                 idle_timeout_s=1).run()
    with pytest.raises(RecorderError, match="max-events"):
        Recorder(kafka_settings, ["market"], tmp_path / "x.jsonl", max_events=0)


def test_record_command(tmp_path: Path, kafka_settings: Settings,
                        capsys: pytest.CaptureFixture[str]) -> None:
    ensure_topics(kafka_settings, [by_name("market"), by_name("orders")])
    _produce(kafka_settings, "market", [("AAA", b'{"m": 1}'), ("BBB", b'{"m": 2}')])
    _produce(kafka_settings, "orders", [("ACC-1", b'{"o": 1}')])
    out = tmp_path / "rec.jsonl"
    code = main(["record", "--topics", "market,orders", "--out", str(out), "--max-events", "3",
                 "--idle-timeout", "10", "--bootstrap-servers",
                 kafka_settings.bootstrap_servers or "", "--topic-prefix",
                 kafka_settings.topic_prefix, "--profile", "test"])
    assert code == 0
    assert "recorded 3 messages" in capsys.readouterr().out
    assert sorted((m.topic, m.key) for m in read_recording(out)) == [
        ("market", "AAA"), ("market", "BBB"), ("orders", "ACC-1")]
    code = main(["record", "--topics", "nope", "--out", str(out), "--idle-timeout", "1",
                 "--bootstrap-servers", kafka_settings.bootstrap_servers or "",
                 "--topic-prefix", kafka_settings.topic_prefix])
    assert code == 1 and "does not exist" in capsys.readouterr().err
