"""The codec's typed errors (the dead-letter reasons) and the recording format."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from schemas.codec import DecodeError, decode, encode
from schemas.common import Side
from schemas.market import Trade
from schemas.orders import OrderNew
from schemas.recording import (
    RecordedMessage,
    RecordingError,
    RecordingWriter,
    read_events,
    read_recording,
)

TRADE = Trade(event_id="t-1", ts_event=1_700_000_000_000_000_000, ts_init=1, source="test",
              symbol="ACME", price=101.25, qty=300)
ORDER = OrderNew(event_id="o-1", ts_event=1_700_000_000_500_000_000, ts_init=2,
                 source="test", account="ACC-1", symbol="ACME", side=Side.BUY, price=101.0,
                 qty=100, cl_ord_id="c-1")


def _error(data: bytes | str, **kw: int) -> DecodeError:
    with pytest.raises(DecodeError) as info:
        decode(data, **kw)
    error = info.value
    assert str(error) == f"{error.kind}: {error.reason}"
    assert "\n" not in str(error)
    return error


def test_size_cap_is_checked_before_parsing() -> None:
    encoded = encode(TRADE)
    assert decode(encoded, max_bytes=len(encoded)) == TRADE
    error = _error(encoded, max_bytes=len(encoded) - 1)
    assert error.kind == "too_large"
    assert f"{len(encoded)} bytes" in error.reason and f"{len(encoded) - 1}-byte" in error.reason
    # Garbage over the cap is refused for its size: it was never parsed.
    assert _error(b"\xff" * 2048, max_bytes=1024).kind == "too_large"


@pytest.mark.parametrize("data", [b"", b"{", b"\xff\xfe", b'{"type": "Trade",}', b"NaN"])
def test_bytes_that_are_not_json_are_undecodable(data: bytes) -> None:
    error = _error(data)
    assert error.kind == "undecodable"
    assert error.reason.startswith("not valid JSON")


def test_unknown_type_is_named() -> None:
    error = _error(orjson.dumps({**orjson.loads(encode(TRADE)), "type": "Trad"}))
    assert error.kind == "unknown_type"
    assert "'Trad'" in error.reason


@pytest.mark.parametrize(("data", "fragment"), [
    (b"[1, 2]", "JSON object, got list"),
    (b'"Trade"', "JSON object, got str"),
    (b'{"price": 1}', "no 'type' field"),
    (b'{"type": 7}', "no 'type' field"),
])
def test_json_that_is_not_an_event_is_invalid(data: bytes, fragment: str) -> None:
    error = _error(data)
    assert error.kind == "invalid"
    assert fragment in error.reason


def test_schema_violation_names_type_and_every_bad_field() -> None:
    obj = {**orjson.loads(encode(ORDER)), "qty": -5, "side": "long"}
    error = _error(orjson.dumps(obj))
    assert error.kind == "invalid"
    assert error.reason.startswith("OrderNew ")
    assert "qty: Input should be greater than 0" in error.reason
    assert "side: Input should be 'buy' or 'sell'" in error.reason


def test_decode_accepts_str_and_memoryview() -> None:
    encoded = encode(ORDER)
    assert decode(encoded.decode()) == ORDER
    assert decode(memoryview(encoded)) == ORDER


# --- recording format ------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", [".jsonl", ".jsonl.gz", ".jsonl.zst"])
def test_recording_round_trip(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"rec{suffix}"
    raw = b"\xff\x00 not json"
    messages = [
        RecordedMessage.from_event("market", "ACME", TRADE, partition=3, offset=41,
                                   headers=[("origin", "sim")]),
        RecordedMessage.from_event("orders", "ACC-1", ORDER, partition=0, offset=7),
        RecordedMessage.from_bytes("market", None, raw, partition=1, offset=9, timestamp=5),
        RecordedMessage.from_bytes("market", "X", b"[1, 2]"),  # JSON, but not an object
    ]
    with RecordingWriter(path) as writer:
        writer.write_all(messages)
    assert writer.count == len(messages)
    magic = path.read_bytes()[:4]
    if suffix.endswith(".gz"):
        assert magic[:2] == b"\x1f\x8b"
    elif suffix.endswith(".zst"):
        assert magic == b"\x28\xb5\x2f\xfd"
    else:
        assert path.read_bytes().count(b"\n") == len(messages)

    back = list(read_recording(path))
    assert back == messages
    assert back[0].timestamp == TRADE.ts_event // 1_000_000
    assert back[2].value is None and back[2].value_bytes() == raw
    assert back[3].value_b64 is not None and back[3].value_bytes() == b"[1, 2]"
    decoded = [event for _, event in read_events(path)]
    assert decoded[:2] == [TRADE, ORDER]
    assert isinstance(decoded[2], DecodeError) and decoded[2].kind == "undecodable"
    assert isinstance(decoded[3], DecodeError) and decoded[3].kind == "invalid"


def test_recording_stores_events_as_json_objects(tmp_path: Path) -> None:
    path = tmp_path / "rec.jsonl"
    with RecordingWriter(path) as writer:
        writer.write_event("market", "ACME", TRADE, partition=2, offset=5)
    line = orjson.loads(path.read_bytes().splitlines()[0])
    assert line == {"topic": "market", "partition": 2, "offset": 5, "key": "ACME",
                    "timestamp": TRADE.ts_event // 1_000_000, "headers": [],
                    "value": orjson.loads(encode(TRADE))}


@pytest.mark.parametrize(("bad_line", "fragment"), [
    (b"{not json", "unexpected character"),
    (b'{"partition": 0, "value": {}}', "missing 'topic'"),
    (b'{"topic": "market"}', "needs 'value' or 'value_b64'"),
    (b'{"topic": "market", "value": [1]}', "must be a JSON object"),
    (b'{"topic": "market", "value": {}, "partition": "x"}', "invalid literal"),
    (b"[1, 2]", "must be a JSON object"),
])
def test_recording_error_names_the_line(tmp_path: Path, bad_line: bytes,
                                        fragment: str) -> None:
    path = tmp_path / "bad.jsonl"
    good = RecordedMessage.from_event("market", "ACME", TRADE).to_json()
    path.write_bytes(good + b"\n\n" + bad_line + b"\n" + good + b"\n")
    reader = read_recording(path)
    assert next(reader).value is not None
    with pytest.raises(RecordingError) as info:
        next(reader)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{path}:3: ")
    assert fragment in info.value.reason
