"""The in-process driver: the reference run every Kafka run is compared with."""

from __future__ import annotations

import base64
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import orjson
import pytest

from engine.driver import Driver, EventRunner, by_key, run_recording
from engine.processor import Output, TableProcessor
from engine.snapshots import SnapshotCodec
from schemas.common import Envelope
from schemas.control import LimitConfig
from schemas.recording import RecordedMessage, RecordingWriter, read_recording
from tests.processors import CountingProcessor, make_stream

CAP = 20_000


def outputs_of(messages: Sequence[RecordedMessage], **kw: object) -> list[tuple[str, str | None,
                                                                             bytes]]:
    got: list[tuple[str, str | None, bytes]] = []
    Driver(CountingProcessor(), max_message_bytes=CAP, **kw).run(  # type: ignore[arg-type]
        messages, on_output=lambda e: got.append((e.topic, e.key, e.value)))
    return got


@pytest.fixture(scope="module")
def garbage_stream() -> list[RecordedMessage]:
    return make_stream(6000, symbols=12, garbage=0.02, max_message_bytes=CAP, seed=3)


def test_every_bad_record_is_dead_lettered_with_its_reason(garbage_stream) -> None:
    out = outputs_of(garbage_stream)
    letters = [orjson.loads(v) for t, _, v in out if t == "dlq"]
    bad = []
    for m in garbage_stream:
        try:
            m.event()
        except Exception:  # noqa: BLE001 - any refusal counts as bad here
            bad.append(m)
    assert bad, "the stream must contain garbage"
    by_place = {(d["original_partition"], d["original_offset"]): d for d in letters}
    for m in bad:
        letter = by_place[(m.partition, m.offset)]
        assert letter["original_topic"] == "market" and letter["original_key"] == m.key
        assert letter["reason"]
        original = base64.b64decode(letter["original_value_b64"])
        if letter["error_kind"] == "too_large":
            assert len(m.value_bytes()) > CAP and m.value_bytes().startswith(original)
            assert "truncated" in letter["reason"]
        else:
            assert original == m.value_bytes()
    kinds = Counter(d["error_kind"] for d in letters)
    assert set(kinds) == {"undecodable", "invalid", "unknown_type", "too_large", "duplicate"}
    assert len(letters) == len(bad) + kinds["duplicate"]


def test_every_good_record_is_processed_once_in_order(garbage_stream) -> None:
    out = outputs_of(garbage_stream)
    seen_ids: set[str] = set()
    expected: Counter[str] = Counter()
    for m in garbage_stream:
        try:
            event = m.event()
        except Exception:  # noqa: BLE001
            continue
        if event.event_id not in seen_ids:
            seen_ids.add(event.event_id)
            expected[m.key or ""] += 1
    counts: dict[str, list[int]] = {}
    for topic, key, value in out:
        if topic == "risk.instruments":
            counts.setdefault(key or "", []).append(orjson.loads(value)["events_seen"])
    assert {k: len(v) for k, v in counts.items()} == dict(expected)
    assert all(v == list(range(1, len(v) + 1)) for v in counts.values())


def test_two_runs_agree_and_the_output_file_is_a_recording(tmp_path: Path,
                                                           garbage_stream) -> None:
    source = tmp_path / "in.jsonl.gz"
    with RecordingWriter(source) as writer:
        writer.write_all(garbage_stream)
    result = run_recording(CountingProcessor(), source, tmp_path / "outputs.jsonl",
                           progress=True, max_message_bytes=CAP)
    written = list(read_recording(tmp_path / "outputs.jsonl"))
    assert len(written) == sum(result.by_topic.values()) == result.outputs + sum(
        result.dead_letters.values())
    assert result.events == len(garbage_stream)
    again = outputs_of(garbage_stream)
    from_file = [(m.topic, m.key, orjson.dumps(m.value)) for m in written]
    assert by_key(from_file) == by_key(again)
    first = written[0]
    assert first.partition == -1 and first.offset == 0 and first.timestamp > 0


def test_a_processor_error_is_a_dead_letter_and_processing_goes_on() -> None:
    stream = make_stream(300, symbols=3, seed=5)
    qty = next(m.value["qty"] for m in stream if m.value and m.value["type"] == "Trade")
    driver = Driver(CountingProcessor(fail_on_qty=qty))
    result = driver.run(stream)
    assert result.dead_letters["processing_error"] >= 1
    assert driver.runner.stats.processed + result.dead_letters["processing_error"] == 300


def test_crash_and_restore_mid_stream_gives_the_same_outputs() -> None:
    """What the Kafka runtime does after kill -9: restore signed snapshots, replay the rest."""
    stream = make_stream(3000, symbols=10, garbage=0.02, seed=9, max_message_bytes=CAP)
    straight = outputs_of(stream)
    codec = SnapshotCodec(b"k", worker="market-worker", max_message_bytes=CAP)
    first = EventRunner(CountingProcessor(), max_message_bytes=CAP)
    cut = 1700
    got = []
    for m in stream[:cut]:
        got += [(e.topic, e.key, e.value)
                for e in first.handle(m.partition, m.offset, m.key, m.value_bytes(),
                                      m.timestamp)]
    changelog: dict[int, dict[str, bytes | None]] = {}
    for key in first.take_dirty():
        snap = first.snapshot(key)
        changelog.setdefault(snap.partition, {}).update(codec.encode(snap))
    second = EventRunner(CountingProcessor(), max_message_bytes=CAP)
    for partition, latest in changelog.items():
        restored, rejected = codec.assemble(latest, partition)
        assert rejected == []
        for restored_snap in restored.values():
            assert restored_snap is not None
            second.restore(restored_snap)
    for m in stream[cut:]:
        got += [(e.topic, e.key, e.value)
                for e in second.handle(m.partition, m.offset, m.key, m.value_bytes(),
                                       m.timestamp)]
    assert by_key(got) == by_key(straight)


def test_state_ahead_of_the_offsets_skips_what_it_contains() -> None:
    """At-least-once recovery: snapshots newer than the committed offsets are not re-applied."""
    stream = make_stream(1000, symbols=4, seed=2)
    runner = EventRunner(CountingProcessor())
    for m in stream[:600]:
        runner.handle(m.partition, m.offset, m.key, m.value_bytes(), m.timestamp)
    snaps = [runner.snapshot(k) for k in runner.take_dirty()]
    replay = EventRunner(CountingProcessor())
    for snap in snaps:
        replay.restore(snap)
    for m in stream[:1000]:  # offsets committed long before the snapshots
        replay.handle(m.partition, m.offset, m.key, m.value_bytes(), m.timestamp)
    assert replay.stats.replayed_skipped == 600
    reference = CountingProcessor()
    for m in stream:
        reference.process(m.event())
    processor = replay.processor
    assert isinstance(processor, CountingProcessor)
    assert all(processor.count_of(k) == reference.count_of(k) for k in {m.key for m in stream
                                                                        if m.key})


class LimitAwareProcessor(CountingProcessor):
    """Reads risk.limits as a side table; its alert threshold comes from the table."""

    tables = ("risk.limits",)

    def __init__(self) -> None:
        super().__init__()
        self.applied: list[str] = []

    def apply_table(self, topic: str, event: Envelope) -> Sequence[Output]:
        assert isinstance(event, LimitConfig)
        self.applied.append(event.event_id)
        return []


def test_side_tables_are_applied_in_order_and_other_topics_ignored() -> None:
    processor = LimitAwareProcessor()
    assert isinstance(processor, TableProcessor)
    limit = LimitConfig(event_id="l1", ts_event=1, ts_init=1, source="t", scope="firm:F",
                        changed_by="risk-officer")
    stream = make_stream(50, symbols=2)
    messages = [RecordedMessage.from_event("risk.limits", "firm:F", limit), *stream,
                RecordedMessage.from_event("risk.alerts", "x", limit)]
    result = Driver(processor).run(messages)
    assert processor.applied == ["l1"]
    assert result.table_events == 1 and result.ignored == 1 and result.events == 52
