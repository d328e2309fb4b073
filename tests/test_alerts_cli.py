"""`streamrisk alerts` against the real embedded broker: what is shown, filtered and hidden."""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Callable

import pytest

from consumers.cli.app import main
from consumers.subscribers.filters import EventFilter
from consumers.subscribers.tail import TailReader, TailRecord
from producers.kafka import make_producer
from producers.provision import ensure_topics
from schemas.codec import encode
from schemas.settings import Settings
from tests.output_events import (
    SECOND,
    T0,
    alert,
    breach,
    decision,
    publish,
    specs,
    state_change,
)

pytestmark = pytest.mark.kafka
TAIL_TOPICS = ("risk.alerts", "risk.decisions", "risk.breaches", "risk.states")


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    ensure_topics(kafka_settings, specs(TAIL_TOPICS))
    return kafka_settings


@pytest.fixture
def mixed(settings: Settings) -> Settings:
    """One of each kind, published out of event-time order, on different partitions."""
    publish(settings, [
        state_change("s1", ts=T0 + 4 * SECOND),
        alert("a1", ts=T0 + 1 * SECOND, severity="critical", entity="AAPL"),
        alert("a2", ts=T0 + 5 * SECOND, severity="info", reason_code="VOL_SPIKE",
              entity="MSFT"),
        alert("a3", ts=T0 + 6 * SECOND, severity="warning", reason_code="ORDER_FLOW_ANOMALY",
              entity="ACC-1", entity_kind="account"),
        decision("d1", ts=T0 + 2 * SECOND, account="ACC-1", symbol="AAPL", deny=True),
        decision("d2", ts=T0 + 7 * SECOND, account="ACC-3", symbol="MSFT", deny=False),
        breach("b1", ts=T0 + 3 * SECOND, account="ACC-1", hard=True),
    ])
    return settings


def _cli(settings: Settings, *args: str) -> list[str]:
    return ["alerts", *args, "--bootstrap-servers", settings.bootstrap_servers or "",
            "--topic-prefix", settings.topic_prefix, "--profile", settings.profile]


def _json_ids(capsys: pytest.CaptureFixture[str], settings: Settings, *args: str) -> list[str]:
    assert main(_cli(settings, "--json", "--from-beginning", *args)) == 0
    lines = capsys.readouterr().out.splitlines()
    return [json.loads(line)["event_id"] for line in lines]


def test_json_lines_cover_every_kind_in_event_time_order(
        mixed: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(mixed, "--json", "--from-beginning")) == 0
    objects = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [o["event_id"] for o in objects] == ["a1", "d1", "b1", "s1", "a2", "a3", "d2"]
    assert {o["type"] for o in objects} == {"RiskAlert", "RiskDecision", "LimitBreach",
                                            "TradingStateChanged"}
    assert objects[0]["reason_code"] == "VAR_BREACH" and objects[0]["severity"] == "critical"


@pytest.mark.parametrize(("args", "expected"), [
    # deny = warning, hard breach = critical, halt = critical
    (("--severity", "critical"), ["a1", "b1", "s1"]),
    (("--severity", "warning,info"), ["d1", "a2", "a3", "d2"]),
    (("--account", "ACC-1"), ["d1", "b1", "a3"]),
    (("--instrument", "MSFT"), ["a2", "d2"]),
    (("--type", "alert"), ["a1", "a2", "a3"]),
    (("--type", "VOL_SPIKE", "HALTED"), ["s1", "a2"]),
    (("--type", "decision", "--account", "ACC-1"), ["d1"]),
    (("--type", "RiskDecision", "--severity", "info"), ["d2"]),
])
def test_filters(mixed: Settings, capsys: pytest.CaptureFixture[str], args: tuple[str, ...],
                 expected: list[str]) -> None:
    assert _json_ids(capsys, mixed, *args) == expected


def test_last_n_starts_that_far_back_on_each_partition(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    # Same key, so the same partition: --last 2 shows only the two most recent.
    publish(settings, [alert(f"x{i}", ts=T0 + i * SECOND) for i in range(5)])
    assert main(_cli(settings, "--json", "--last", "2")) == 0
    ids = [json.loads(line)["event_id"] for line in capsys.readouterr().out.splitlines()]
    assert ids == ["x3", "x4"]


def test_aborted_transactions_are_never_shown(settings: Settings,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    producer = make_producer(settings, transactional_id=f"{settings.topic_prefix}tx")
    producer.init_transactions(10)
    producer.begin_transaction()
    producer.produce(settings.topic("risk.alerts"), key=b"AAPL",
                     value=encode(alert("aborted")))
    producer.flush(10)
    producer.abort_transaction(10)
    producer.begin_transaction()
    producer.produce(settings.topic("risk.alerts"), key=b"AAPL",
                     value=encode(alert("committed", ts=T0 + SECOND)))
    producer.commit_transaction(10)
    assert _json_ids(capsys, settings) == ["committed"]


def test_table_rows_and_undecodable_records(settings: Settings,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    publish(settings, [alert("a1", message="loss beyond VaR 99")])
    producer = make_producer(settings)
    producer.produce(settings.topic("risk.alerts"), key=b"AAPL", value=b"not json")
    producer.flush(10)
    assert main(_cli(settings, "--from-beginning")) == 0
    captured = capsys.readouterr()
    assert "time (UTC)" in captured.out and "severity" in captured.out
    assert "2023-11-14 22:13:20.000" in captured.out
    assert "VAR_BREACH" in captured.out and "critical" in captured.out
    assert "loss beyond VaR 99" in captured.out
    assert "skipped 1 record" in captured.err


def test_nothing_matching_says_so(settings: Settings,
                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(settings, "--account", "NOBODY")) == 0
    assert "no matching records" in capsys.readouterr().err


def test_follow_shows_records_published_after_the_start(settings: Settings) -> None:
    publish(settings, [alert("old")])
    reader = TailReader(settings, last=None, event_filter=EventFilter(
        severities=frozenset({"critical"})))
    seen: queue.Queue[TailRecord] = queue.Queue()
    stop = threading.Event()

    def consume() -> None:
        for record in reader.read(follow=True, stop=stop):
            seen.put(record)

    thread = threading.Thread(target=consume, daemon=True)
    thread.start()
    try:
        assert seen.get(timeout=20).event.event_id == "old"
        publish(settings, [alert("quiet", severity="info"), alert("new", ts=T0 + SECOND)])
        assert seen.get(timeout=20).event.event_id == "new"  # "quiet" is filtered out
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()


@pytest.mark.parametrize(("args", "message", "code"), [
    (("--severity", "urgent"), "unknown severity urgent", 2),
    (("--last", "-1"), "--last must be zero or more", 2),
])
def test_bad_options_are_one_line_errors(settings: Settings,
                                         capsys: pytest.CaptureFixture[str],
                                         args: tuple[str, ...], message: str, code: int) -> None:
    assert main(_cli(settings, *args)) == code
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1


def test_missing_topics_are_a_one_line_error(make_settings: Callable[..., Settings],
                                             capsys: pytest.CaptureFixture[str]) -> None:
    bare = make_settings()  # this prefix has no topics
    assert main(_cli(bare)) == 1
    err = capsys.readouterr().err.strip()
    assert "does not exist" in err and "streamrisk topics create" in err
    assert len(err.splitlines()) == 1
