"""`streamrisk limits`, `kill` and `enable` against the real embedded broker, and a limit
published on `risk.limits` reaching the order gate."""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, TopicPartition

from consumers.cli.app import main
from consumers.cli.limits import read_topic
from engine.order_risk import OrderRiskProcessor
from engine.scope_risk import ScopeRiskProcessor
from producers.kafka import make_consumer
from producers.provision import ensure_topics
from schemas.codec import decode
from schemas.common import Envelope, TradingState
from schemas.control import TradingStateCommand
from schemas.outputs import ScopeContribution, TradingStateChanged
from schemas.settings import Settings
from schemas.topics import by_name
from tests.test_order_risk import decision, irisk, order

LIMITS = """
changed_by: alice
scopes:
  firm:ACME:
    limits: {order_notional: {soft: 100000, hard: 500000}}
  desk:EQ:
    parent: firm:ACME
    limits: {day_loss: {soft: 50000, hard: 100000}}
  account:ACC-1:
    parent: desk:EQ
    risk_appetite: 1.5
    limits: {order_notional: {hard: 200000}, gross_exposure: {hard: 1000000}}
"""


def _cli(settings: Settings, *args: str) -> list[str]:
    return [*args, "--bootstrap-servers", settings.bootstrap_servers or "",
            "--topic-prefix", settings.topic_prefix, "--profile", settings.profile]


def _read_all(settings: Settings, short: str) -> list[tuple[str | None, Envelope]]:
    name = settings.topic(short)
    eof: dict[str, Any] = {"enable.partition.eof": True}
    consumer = make_consumer(settings, "test-reader", **eof)
    try:
        parts = consumer.list_topics(name, timeout=10).topics[name].partitions
        consumer.assign([TopicPartition(name, p, 0) for p in parts])
        pending, out = set(parts), []
        while pending:
            msg = consumer.poll(10)
            assert msg is not None, "timed out reading " + name
            err = msg.error()
            if err is not None:
                assert err.code() == KafkaError._PARTITION_EOF, err.str()
                pending.discard(msg.partition())
                continue
            key = msg.key()
            out.append((key.decode() if isinstance(key, bytes) else key,
                        decode(msg.value() or b"")))
        return out
    finally:
        consumer.close()


@pytest.fixture
def settings(kafka_settings: Settings) -> Settings:
    ensure_topics(kafka_settings, [by_name("risk.limits"), by_name("risk.control")])
    return kafka_settings


@pytest.fixture
def limits_file(tmp_path: Path) -> Path:
    path = tmp_path / "limits.yaml"
    path.write_text(LIMITS)
    return path


@pytest.mark.kafka
def test_set_show_and_diff_a_limits_file(settings: Settings, limits_file: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(settings, "limits", "set", str(limits_file))) == 0
    assert "3 limit change(s) published" in capsys.readouterr().out
    configs, bad = read_topic(settings)
    assert sorted(configs) == ["account:ACC-1", "desk:EQ", "firm:ACME"] and bad == 0
    assert configs["account:ACC-1"].changed_by == "alice"

    assert main(_cli(settings, "limits", "show", "--json", "--scope", "account:ACC-1")) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    notional = next(r for r in rows if r["metric"] == "order_notional")
    # own 200k x appetite 1.5 = 300k, but the firm caps at 500k and the account binds
    assert (notional["hard"], notional["effective_hard"]) == (200000.0, 300000.0)
    assert notional["effective_soft"] == 100000.0 and notional["parent"] == "desk:EQ"

    assert main(_cli(settings, "limits", "show")) == 0
    table = capsys.readouterr().out
    assert "firm:ACME" in table and "(default)" in table and "alice" in table

    assert main(_cli(settings, "limits", "diff", str(limits_file))) == 0
    assert "no differences" in capsys.readouterr().out
    limits_file.write_text(LIMITS.replace("hard: 200000", "hard: 250000"))
    assert main(_cli(settings, "limits", "diff", str(limits_file))) == 1
    assert "limits.order_notional" in capsys.readouterr().out


@pytest.mark.kafka
def test_set_one_metric_keeps_the_others_and_overrides_need_a_second_person(
        settings: Settings, limits_file: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(settings, "limits", "set", str(limits_file))) == 0
    assert main(_cli(settings, "limits", "set", "--scope", "account:ACC-1", "--metric",
                     "day_loss", "--soft", "1000", "--hard", "2000", "--by", "carol")) == 0
    configs, _ = read_topic(settings)
    acc = configs["account:ACC-1"]
    assert set(acc.limits) == {"order_notional", "gross_exposure", "day_loss"}
    assert acc.changed_by == "carol" and acc.parent == "desk:EQ" and acc.risk_appetite == 1.5

    assert main(_cli(settings, "limits", "set", "--scope", "account:ACC-1", "--metric",
                     "order_notional", "--hard", "900000", "--approver", "carol",
                     "--expires", "1h", "--by", "carol")) == 2
    assert "second person" in capsys.readouterr().err
    assert main(_cli(settings, "limits", "set", "--scope", "account:ACC-1", "--metric",
                     "order_notional", "--hard", "900000", "--approver", "dave",
                     "--expires", "1h", "--by", "carol", "--reason", "rebalance")) == 0
    acc = read_topic(settings)[0]["account:ACC-1"]
    assert acc.override is not None and acc.override.approver == "dave"
    assert acc.limits["order_notional"].hard == 200000.0  # the base level is untouched


@pytest.mark.kafka
def test_a_limit_set_on_the_topic_applies_to_the_next_order(
        settings: Settings, capsys: pytest.CaptureFixture[str]) -> None:
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    assert decision(p.process(order(account="ACC-1", qty=1000, ts=1))).decision.value == \
        "accept"
    assert main(_cli(settings, "limits", "set", "--scope", "account:ACC-1", "--metric",
                     "order_notional", "--hard", "50000", "--by", "risk-desk")) == 0
    for key, event in _read_all(settings, "risk.limits"):
        assert key == "account:ACC-1"
        p.apply_table("risk.limits", event)
    d = decision(p.process(order(account="ACC-1", qty=1000, ts=2, price=100.01)))
    assert d.decision.value == "deny" and d.reason_codes == ["MAX_ORDER_NOTIONAL"]


@pytest.mark.kafka
def test_kill_and_enable_publish_audited_commands(settings: Settings,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(settings, "kill", "--scope", "desk:EQ", "--reason", "runaway algo")) == 0
    assert main(_cli(settings, "enable", "--scope", "desk:EQ", "--by", "risk-lead")) == 0
    out = capsys.readouterr().out
    assert "kill desk:EQ" in out and "enable desk:EQ by risk-lead" in out
    records = _read_all(settings, "risk.control")
    commands = [e for _, e in records if isinstance(e, TradingStateCommand)]
    assert len(commands) == len(records) == 2
    kill, enable = commands
    assert [k for k, _ in records] == ["desk:EQ", "desk:EQ"]
    assert (kill.command.value, kill.issued_by, kill.reason) == \
        ("kill", getpass.getuser(), "runaway algo")
    assert (enable.command.value, enable.issued_by) == ("enable", "risk-lead")
    # the workers act on them: the scope stage moves the desk and publishes each move...
    stage = ScopeRiskProcessor()
    stage.process(ScopeContribution(event_id="c1", ts_event=0, ts_init=0, source="order-worker",
                                    scope="desk:EQ", account="A"))
    moves = [[o.value.to_state.value for o in stage.apply_table("risk.control", c)
              if isinstance(o.value, TradingStateChanged)] for c in commands]
    assert moves == [["halted"], ["active"]]
    # ...and an order worker halts the desk at once, leaving the publication to the stage
    p = OrderRiskProcessor()
    p.process(irisk("AAPL", 0, 100.0))
    p.process(order(account="A", ts=1))
    outputs = p.apply_table("risk.control", kill)
    assert p.scope_states["desk:EQ"].state is TradingState.HALTED
    assert not any(isinstance(o.value, TradingStateChanged) for o in outputs)
    p.apply_table("risk.control", enable)
    assert p.scope_states["desk:EQ"].state is TradingState.ACTIVE


def test_bad_input_is_one_line_and_needs_no_broker(tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["kill", "--scope", "nonsense", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "scope must look like" in err and len(err.splitlines()) == 1
    bad = tmp_path / "bad.yaml"
    bad.write_text("scopes: {'account:A': {limits: {order_qty: {hard: 1}}}}")
    assert main(["limits", "set", str(bad), "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "changed_by" in err and len(err.splitlines()) == 1
    assert main(["limits", "set", "--scope", "account:A", "--metric", "nope", "--hard", "1",
                 "--by", "x", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown metric 'nope'" in err and len(err.splitlines()) == 1
    assert main(["limits", "set", "--scope", "account:A", "--metric", "day_loss", "--hard",
                 "1", "--bootstrap-servers", "127.0.0.1:1"]) == 2
    assert "--by WHO is required" in capsys.readouterr().err


@pytest.mark.kafka
def test_missing_topic_is_reported(kafka_settings: Settings,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert main(_cli(kafka_settings, "kill", "--scope", "account:A")) == 1
    assert "does not exist" in capsys.readouterr().err
    assert main(_cli(kafka_settings, "limits", "show")) == 1
    assert "streamrisk topics create" in capsys.readouterr().err
