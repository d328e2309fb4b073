"""The webhook forwarder against the real embedded broker and a real local HTTP receiver.

The receiver (http.server on 127.0.0.1) fails its first N requests, or is not there at all.
Checked: every alert arrives, none is committed before its delivery succeeded (the group's
committed offsets are read from the broker while each request is being handled), and a
forwarder that gave up loses nothing: the next run delivers from where the last one stopped.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from confluent_kafka import Consumer, TopicPartition

from consumers.cli.app import main
from consumers.subscribers.webhook import (
    DeliveryPolicy,
    ForwardStats,
    WebhookForwarder,
    WebhookRejected,
    WebhookUnavailable,
    redact_url,
)
from producers.broker import free_port
from producers.kafka import make_consumer
from producers.provision import ensure_topics
from schemas.settings import Settings
from schemas.topics import by_name
from tests.output_events import T0, alert, publish, specs

pytestmark = pytest.mark.kafka
FAST = DeliveryPolicy(timeout_s=5, backoff_initial_s=0.01, backoff_max_s=0.05)


@dataclass
class Receiver:
    """An HTTP endpoint that answers `fail_status` to its first `fail_first` requests."""

    fail_first: int = 0
    fail_status: int = 503
    port: int = 0
    received: list[dict[str, object]] = field(default_factory=list)
    requests: int = 0
    headers: list[dict[str, str]] = field(default_factory=list)
    on_request: Callable[[dict[str, object]], None] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if receiver.on_request is not None:
                    receiver.on_request(body)
                with receiver.lock:
                    receiver.requests += 1
                    failing = receiver.requests <= receiver.fail_first
                    if not failing:
                        receiver.received.append(body)
                        receiver.headers.append(dict(self.headers))
                self.send_response(receiver.fail_status if failing else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: object) -> None:
                pass

        return Handler

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks/risk"


@pytest.fixture
def serve() -> Iterator[Callable[[Receiver], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def start(receiver: Receiver) -> Receiver:
        server = ThreadingHTTPServer(("127.0.0.1", receiver.port), receiver.handler())
        receiver.port = server.server_address[1]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return receiver

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    ensure_topics(kafka_settings, specs(["risk.alerts"]))
    return kafka_settings


def _committed(settings: Settings, group: str) -> dict[int, int]:
    """The group's committed offset per partition of risk.alerts (-1001: none)."""
    consumer: Consumer = make_consumer(settings, group)
    try:
        partitions = [TopicPartition(settings.topic("risk.alerts"), p)
                      for p in range(by_name("risk.alerts").partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(partitions, timeout=10)}
    finally:
        consumer.close()


def _offsets(settings: Settings) -> dict[str, tuple[int, int]]:
    """event_id -> (partition, offset) of every alert on the topic."""
    eof: dict[str, Any] = {"enable.partition.eof": True}
    consumer: Consumer = make_consumer(settings, "offset-reader", **eof)
    topic = settings.topic("risk.alerts")
    parts = range(by_name("risk.alerts").partitions)
    consumer.assign([TopicPartition(topic, p, 0) for p in parts])
    found: dict[str, tuple[int, int]] = {}
    ended: set[int] = set()
    while len(ended) < len(parts):
        msg = consumer.poll(5)
        assert msg is not None, "timed out reading the alerts back"
        if msg.error():
            ended.add(msg.partition() or 0)
            continue
        found[json.loads(msg.value() or b"")["event_id"]] = (msg.partition() or 0,
                                                            msg.offset() or 0)
    consumer.close()
    return found


def _forward_until(forwarder: WebhookForwarder, delivered: int) -> ForwardStats:
    stop = threading.Event()
    timer = threading.Timer(60, stop.set)  # a safety net, never the expected path
    timer.start()
    try:
        stats = forwarder.run(stop, until=lambda s: s.delivered >= delivered)
    finally:
        timer.cancel()
    assert not stop.is_set(), "the forwarder did not deliver in time"
    return stats


def test_flaky_receiver_gets_every_alert_and_nothing_is_committed_before_delivery(
        settings: Settings, serve: Callable[[Receiver], Receiver]) -> None:
    alerts = [alert(f"a{i}", ts=T0 + i, entity=f"SYM{i % 3}") for i in range(6)]
    publish(settings, alerts)
    where = _offsets(settings)
    group = f"{settings.topic_prefix}hook"
    violations: list[str] = []

    def check_commits(body: dict[str, object]) -> None:
        # While this request is in flight the alert is not delivered: its offset (and any
        # later one on its partition) must not be committed yet.
        partition, offset = where[str(body["event_id"])]
        committed = _committed(settings, group)[partition]
        if committed > offset:
            violations.append(f"{body['event_id']}: committed {committed} > offset {offset}")

    receiver = serve(Receiver(fail_first=4, fail_status=503, on_request=check_commits))
    forwarder = WebhookForwarder(settings, receiver.url, group_id=group, policy=FAST,
                                 from_beginning=True, commit_every=1, commit_interval_s=0)
    stats = _forward_until(forwarder, len(alerts))
    assert violations == []
    assert sorted(str(b["event_id"]) for b in receiver.received) == sorted(where)
    assert receiver.requests == len(alerts) + 4
    assert (stats.delivered, stats.failures, stats.attempts) == (6, 4, 10)
    assert stats.commits >= 1
    # Everything delivered is committed: the group's position is the end of each partition.
    ends = {p: 0 for p in range(by_name("risk.alerts").partitions)}
    for partition, offset in where.values():
        ends[partition] = max(ends[partition], offset + 1)
    committed = _committed(settings, group)
    assert {p: o for p, o in committed.items() if o >= 0} == {p: e for p, e in ends.items() if e}
    # Per partition, alerts arrive in offset order; receivers get a stable idempotency key.
    by_partition: dict[int, list[int]] = {}
    for body in receiver.received:
        partition, offset = where[str(body["event_id"])]
        by_partition.setdefault(partition, []).append(offset)
    assert all(offsets == sorted(offsets) for offsets in by_partition.values())
    assert all(h["Idempotency-Key"] == str(b["event_id"])
               for h, b in zip(receiver.headers, receiver.received, strict=True))
    assert receiver.received[0]["type"] == "RiskAlert"


def test_receiver_down_loses_nothing_and_the_next_run_delivers_it_all(
        settings: Settings, serve: Callable[[Receiver], Receiver]) -> None:
    publish(settings, [alert(f"d{i}", ts=T0 + i) for i in range(3)])
    group = f"{settings.topic_prefix}hook"
    port = free_port()  # nothing listens here yet
    down = WebhookForwarder(settings, f"http://127.0.0.1:{port}/hook", group_id=group,
                            policy=DeliveryPolicy(timeout_s=2, max_attempts=3,
                                                  backoff_initial_s=0.01, backoff_max_s=0.02),
                            from_beginning=True)
    with pytest.raises(WebhookUnavailable, match="after 3 attempts"):
        down.run(threading.Event())
    assert down.stats.delivered == 0 and down.stats.attempts == 3
    assert all(offset < 0 for offset in _committed(settings, group).values())

    receiver = serve(Receiver(port=port))
    up = WebhookForwarder(settings, receiver.url, group_id=group, policy=FAST,
                          from_beginning=True)
    _forward_until(up, 3)
    assert sorted(str(b["event_id"]) for b in receiver.received) == ["d0", "d1", "d2"]
    assert sum(o for o in _committed(settings, group).values() if o > 0) == 3


def test_a_refusing_receiver_stops_the_forwarder_without_committing(
        settings: Settings, serve: Callable[[Receiver], Receiver]) -> None:
    publish(settings, [alert("r1")])
    group = f"{settings.topic_prefix}hook"
    receiver = serve(Receiver(fail_first=100, fail_status=400))
    forwarder = WebhookForwarder(settings, receiver.url, group_id=group, policy=FAST,
                                 from_beginning=True)
    with pytest.raises(WebhookRejected, match="HTTP 400"):
        forwarder.run(threading.Event())
    assert receiver.requests == 1  # never retried: a 400 will not change
    assert all(offset < 0 for offset in _committed(settings, group).values())


def test_severity_filter_forwards_only_matching_alerts_but_moves_past_the_rest(
        settings: Settings, serve: Callable[[Receiver], Receiver]) -> None:
    publish(settings, [alert("c1", severity="critical"), alert("i1", severity="info", ts=T0 + 1),
                       alert("c2", severity="critical", ts=T0 + 2)])
    group = f"{settings.topic_prefix}hook"
    receiver = serve(Receiver())
    forwarder = WebhookForwarder(settings, receiver.url, group_id=group, policy=FAST,
                                 severities=frozenset({"critical"}), from_beginning=True)
    stats = _forward_until(forwarder, 2)
    assert [b["event_id"] for b in receiver.received] == ["c1", "c2"]
    assert stats.filtered == 1
    # Same key, same partition: the filtered alert sits between two delivered ones.
    assert sum(o for o in _committed(settings, group).values() if o > 0) == 3


def test_cli_reports_an_unreachable_receiver_in_one_line_and_commits_nothing(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    publish(settings, [alert("x1")])
    group = f"{settings.topic_prefix}cli"
    url = f"http://user:hunter2@127.0.0.1:{free_port()}/hook"
    code = main(["webhook", url, "--group", group, "--from-beginning", "--max-attempts", "2",
                 "--backoff-max", "0.05", "--timeout", "2",
                 "--bootstrap-servers", settings.bootstrap_servers or "",
                 "--topic-prefix", settings.topic_prefix, "--profile", settings.profile])
    assert code == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert "did not accept alert x1 after 2 attempts" in last
    assert "hunter2" not in err and "user:" not in err
    assert all(offset < 0 for offset in _committed(settings, group).values())


@pytest.mark.parametrize("url", ["ftp://host/x", "not a url", "http:///nohost"])
def test_cli_rejects_bad_urls(url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["webhook", url, "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "webhook URL must be http:// or https://" in capsys.readouterr().err


def test_redact_url_drops_credentials() -> None:
    assert redact_url("https://u:p@example.org:8443/a?b=1#frag") == "https://example.org:8443/a?b=1"
