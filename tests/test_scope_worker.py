"""The desk/firm aggregation stage through the embedded broker (issue 6).

A market worker, two order workers and one scope worker (`python -m consumers.runtime
market|orders|scopes` children) on their own topics play the desk day of
`tests.order_flow`: A1 and A2 each lose less than desk:D's soft day-loss level but together
more, so the scope worker moves desk:D to REDUCING (TradingStateChanged on `risk.states`,
ScopeRisk on `risk.scopes`); the order workers read that state as a table, so A3's buy is
then denied TRADING_STATE while its reducing sell passes; more loss halts the desk; and
`streamrisk enable --scope desk:D` brings it back to ACTIVE. Each desk transition is
published exactly once, by the scope worker, whichever order worker holds which account.

The phases wait for each other's outcome: the desk's state reaches the order workers on
arrival (fail-safe, like a kill), not as of each order's event time.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from producers.provision import ensure_topics
from schemas.settings import Settings, load_settings
from tests.cli_kafka import cli
from tests.order_flow import DESK, desk_day, final_day_pnl
from tests.processors import produce_recording, read_committed
from tests.risk_workers import Pair, wait_for_record

pytestmark = [pytest.mark.kafka, pytest.mark.slow]


@pytest.fixture(scope="module")
def workers(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pair]:
    profile = "production" if os.environ.get("KAFKA_BOOTSTRAP") else "test"
    settings = load_settings(None, bootstrap_servers=kafka_bootstrap, profile=profile,
                             topic_prefix=f"t{os.getpid()}s{int(time.time())}.")
    ensure_topics(settings)
    logs: Path = tmp_path_factory.mktemp("scope-e2e")
    pair = Pair(settings, logs)  # a market worker and an order worker
    try:
        pair.start("orders")
        pair.start("scopes")
        pair.wait_ready()  # market, two order workers and the scope worker
        yield pair
    finally:
        pair.close()


def _desk_states(settings: Settings) -> list[dict[str, Any]]:
    states = [orjson.loads(v) for _, _, v in read_committed(settings, ("risk.states",))]
    return [s for s in states if s["scope"] == DESK]


def test_desk_loss_over_two_accounts_gates_the_third_and_enable_restores(workers: Pair
                                                                         ) -> None:
    settings, alive = workers.settings, workers.alive
    phases = desk_day((1.0, 1.5), tag="e2e")
    produce_recording(settings, phases["setup"])
    # the limits are in force on the order workers (their audit echo) before any order
    wait_for_record(settings, "risk.limits", lambda c: c["scope"] == "account:A3"
              and c["source"] == "order-worker", alive)

    produce_recording(settings, phases["losses"])
    reducing = wait_for_record(settings, "risk.states", lambda s: s["scope"] == DESK
                         and s["to_state"] == "reducing", alive)
    assert reducing["source"] == "scope-worker" and reducing["metric"] == "day_loss"
    assert reducing["observed"] > reducing["threshold"] == 150.0
    wait_for_record(settings, "risk.scopes", lambda r: r["scope"] == DESK
              and r["trading_state"] == "reducing" and r["accounts"] == 3, alive)
    # each account alone stayed under the desk's soft level (which binds each of them too)
    accounts = [orjson.loads(v) for _, _, v in read_committed(settings, ("risk.accounts",))]
    assert accounts and all(a["trading_state"] == "active" and -a["day_pnl"] < 150.0
                            for a in accounts)
    time.sleep(1.0)  # the order workers read risk.scopes between batches: let them see it

    produce_recording(settings, phases["gate"])
    gate_ids = [m.value["cl_ord_id"] for m in phases["gate"]
                if m.value is not None and m.value["type"] == "OrderNew"]

    def decided(cl_ord_id: str) -> dict[str, Any]:
        return wait_for_record(settings, "risk.decisions", lambda d: d["cl_ord_id"] == cl_ord_id,
                         alive)

    decisions = [decided(c) for c in gate_ids]
    assert [(d["decision"], d["reason_codes"], d["trading_state"]) for d in decisions] == [
        ("deny", ["TRADING_STATE"], "reducing"),  # A3's buy would add exposure
        ("accept", [], "reducing")]  # A3's sell reduces its position
    assert DESK in decisions[0]["checks"][0]["message"]

    produce_recording(settings, phases["more"])
    halted = wait_for_record(settings, "risk.states", lambda s: s["scope"] == DESK
                       and s["to_state"] == "halted", alive)
    assert (halted["from_state"], halted["source"]) == ("reducing", "scope-worker")

    assert cli(settings, "enable", "--scope", DESK, "--by", "e2e", "--reason", "reviewed") == 0
    enabled = wait_for_record(settings, "risk.states", lambda s: s["scope"] == DESK
                        and s["to_state"] == "active", alive)
    assert (enabled["actor"], enabled["source"]) == ("e2e", "scope-worker")
    final = wait_for_record(settings, "risk.scopes", lambda r: r["scope"] == DESK
                      and r["trading_state"] == "active" and r["ts_event"] >= halted["ts_event"],
                      alive)
    assert final["day_pnl"] == pytest.approx(final_day_pnl((1.0, 1.5)), abs=1e-6)
    assert final["accounts"] == 3

    time.sleep(1.0)  # room for a second copy, were any worker to publish one
    assert [(s["from_state"], s["to_state"], s["source"]) for s in _desk_states(settings)] == [
        ("active", "reducing", "scope-worker"), ("reducing", "halted", "scope-worker"),
        ("halted", "active", "scope-worker")]
    # breaches are keyed by the account whose contribution crossed the level, so the soft and
    # the hard one can sit on different partitions: their order is event time, not read order
    breaches = sorted((orjson.loads(v) for _, _, v in read_committed(settings, ("risk.breaches",))),
                      key=lambda b: (b["ts_event"], b["event_id"]))
    desk_breaches = [(b["level"], b["metric"]) for b in breaches
                     if b["source"] == "scope-worker"]
    assert desk_breaches == [("soft", "day_loss"), ("hard", "day_loss")]
