"""Both risk workers through the embedded broker (issue 6, "done when").

Two pairs of `python -m consumers.runtime market|orders` children, each on its own topics,
replay the same simulated recording (order scenarios fat-finger, runaway-algo, loss-spiral)
at the same time. The tests then check, on what the workers published:

* the scenarios: a fat-finger order denied with its reason code, a runaway algorithm
  throttled then halted, a loss spiral ACTIVE -> REDUCING -> HALTED with only denials after;
* determinism: both replays give identical decisions, breaches and state changes, equal to
  `streamrisk evaluate` on the recording (the in-process pipeline), whatever the relative
  speed of the two workers (the order worker holds orders until instrument risk has caught
  up in event time);
* live control on the first pair: the kill switch halts an account and mass-cancels its
  open orders; a limit changed on `risk.limits` applies to the next order.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from typing import Any

import orjson
import pytest

from consumers.cli.app import main
from engine.driver import by_key
from producers.provision import ensure_topics
from producers.simulator import SimConfig, Simulation
from schemas.recording import RecordedMessage, RecordingWriter, read_recording
from schemas.settings import Settings, load_settings
from tests.processors import produce_recording, read_committed, wait_committed
from tests.risk_workers import Pair, wait_for_record
from tests.worker_harness import high_watermarks

pytestmark = [pytest.mark.kafka, pytest.mark.slow]

SCENARIOS = ("loss-spiral", "fat-finger", "runaway-algo")
COMPARED = ("risk.decisions", "risk.breaches", "risk.states")
S = 1_000_000_000


def data_ends(settings: Settings, topic: str) -> dict[int, int]:
    """Per partition, one past the last committed data message: the order worker writes
    MassCancels to its own input topic in transactions, and a commit marker after the last
    message is never a consumer position."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    from producers.kafka import make_consumer

    highs = high_watermarks(settings, topic)
    eof: dict[str, Any] = {"enable.partition.eof": True}
    reader = make_consumer(settings, None, read_committed=True, **eof)
    reader.assign([TopicPartition(settings.topic(topic), p, OFFSET_BEGINNING) for p in highs])
    ends: dict[int, int] = {}
    pending = set(highs)
    deadline = time.monotonic() + 30
    while pending and time.monotonic() < deadline:
        for msg in reader.consume(1000, 0.2):
            part = msg.partition() or 0
            if msg.error() is None:
                ends[part] = (msg.offset() or 0) + 1
            else:
                pending.discard(part)
    reader.close()
    return ends


def wait_done(settings: Settings, alive: Callable[[], bool], timeout_s: float = 120) -> None:
    """Until both workers have committed every input message (including the order worker's
    own MassCancels, which it consumes too)."""
    wait_committed(settings, f"{settings.topic_prefix}market-worker", "market",
                   high_watermarks(settings, "market"), timeout_s, alive)
    ends: dict[int, int] = {}
    while (latest := data_ends(settings, "orders")) != ends:
        ends = latest
        wait_committed(settings, f"{settings.topic_prefix}order-worker", "orders", ends,
                       timeout_s, alive)


def compared(items: list[tuple[str, str | None, bytes]]) -> dict[Any, list[Any]]:
    return by_key((t, k, v) for t, k, v in items if t in COMPARED)


def values(items: list[tuple[str, str | None, bytes]], topic: str) -> list[dict[str, Any]]:
    out = [orjson.loads(v) for t, _, v in items if t == topic]
    return sorted(out, key=lambda v: (v["ts_event"], v["event_id"]))


@pytest.fixture(scope="module")
def run(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory
        ) -> Iterator[dict[str, Any]]:
    base = tmp_path_factory.mktemp("orders-e2e")
    sim = Simulation(SimConfig(seed=0, instruments=4, accounts=4, duration_s=200,
                               scenarios=SCENARIOS))
    recording = base / "sim.jsonl"
    with RecordingWriter(recording) as writer:
        for e in sim:
            writer.write(RecordedMessage.from_event(e.topic, e.key, e.event))
    messages = list(read_recording(recording))
    profile = "production" if os.environ.get("KAFKA_BOOTSTRAP") else "test"
    pairs: list[Pair] = []
    try:
        for n in range(2):
            settings = load_settings(None, bootstrap_servers=kafka_bootstrap, profile=profile,
                                     topic_prefix=f"t{os.getpid()}o{n}{int(time.time())}.")
            ensure_topics(settings)
            logs = base / f"pair{n}"
            logs.mkdir()
            pairs.append(Pair(settings, logs))
        for pair in pairs:
            pair.wait_ready()
        for pair in pairs:  # both replays run at the same time, at their own pace
            produce_recording(pair.settings, messages)
        outputs = []
        for pair in pairs:
            wait_done(pair.settings, pair.alive)
            outputs.append(read_committed(pair.settings, (*COMPARED, "orders",
                                                          "risk.accounts")))
        yield {"recording": recording, "messages": messages, "labels": sim.labels(),
               "outputs": outputs, "pair": pairs[0], "pairs": pairs, "base": base}
    finally:
        for pair in pairs:
            pair.close()


def label(run: dict[str, Any], scenario: str) -> Any:
    return next(lb for lb in run["labels"] if lb.scenario == scenario)


def test_replays_are_identical_and_equal_to_evaluate(run: dict[str, Any]) -> None:
    first, second = run["outputs"]
    events = "\n".join(pair.events() for pair in run["pairs"])
    assert compared(first) == compared(second), events
    out = run["base"] / "evaluate"
    assert main(["evaluate", str(run["recording"]), "--out", str(out), "--max-plots",
                 "0"]) == 0
    reference = [(m.topic, m.key, orjson.dumps(m.value)) for m in
                 read_recording(out / "outputs.jsonl")]
    assert compared(first) == compared(reference), events
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["orders"]["decisions"]["deny"] > 0 and report["dead_letters"] == {}
    decisions = len(values(first, "risk.decisions"))
    orders = sum(1 for m in run["messages"]
                 if m.topic == "orders" and m.value and m.value["type"] in ("OrderNew",
                                                                           "OrderReplace"))
    assert decisions == orders  # one decision per order, no more


def test_fat_finger_is_denied_with_its_reason(run: dict[str, Any]) -> None:
    lb = label(run, "fat-finger")
    denied = [d for d in values(run["outputs"][0], "risk.decisions")
              if d["account"] == lb.entity and lb.start_ts <= d["ts_event"] <= lb.end_ts
              and d["decision"] == "deny"]
    assert any("PERSONAL_THRESHOLD" in d["reason_codes"] for d in denied)
    check = next(c for d in denied for c in d["checks"] if c["code"] == "PERSONAL_THRESHOLD")
    assert check["observed"] > check["limit"] > 0


def _states(run: dict[str, Any], account: str) -> list[dict[str, Any]]:
    return [s for s in values(run["outputs"][0], "risk.states")
            if s["scope"] == f"account:{account}"]


def _only_denials_after(run: dict[str, Any], account: str, ts: int) -> None:
    after = [d for d in values(run["outputs"][0], "risk.decisions")
             if d["account"] == account and d["ts_event"] > ts]
    assert after, "the scenario's account kept sending orders"
    assert all(d["decision"] == "deny" and "TRADING_STATE" in d["reason_codes"]
               and d["trading_state"] == "halted" for d in after)
    # the halt cancels whatever was open (a MassCancel when there was something)
    cancels = [c for c in values(run["outputs"][0], "orders")
               if c["type"] == "MassCancel" and c["account"] == account]
    assert all(c["ts_event"] == ts for c in cancels[:1])
    snapshot = next(a for a in values(run["outputs"][0], "risk.accounts")
                    if a["account"] == account and a["ts_event"] >= ts)
    assert snapshot["trading_state"] == "halted" and snapshot["open_order_notional"] == 0


def test_runaway_algorithm_is_throttled_then_halted(run: dict[str, Any]) -> None:
    lb = label(run, "runaway-algo")
    decisions = [d for d in values(run["outputs"][0], "risk.decisions")
                 if d["account"] == lb.entity and d["ts_event"] >= lb.start_ts]
    throttled = [d for d in decisions if "RATE_THROTTLE" in d["reason_codes"]]
    states = _states(run, lb.entity)
    assert [(s["from_state"], s["to_state"]) for s in states][:2] == [
        ("active", "reducing"), ("reducing", "halted")]
    assert {s["metric"] for s in states[:2]} == {"throttle_hits"}
    assert throttled and throttled[0]["ts_event"] < states[0]["ts_event"]
    assert lb.start_ts <= states[1]["ts_event"] <= lb.end_ts
    _only_denials_after(run, lb.entity, states[1]["ts_event"])


def test_loss_spiral_reduces_then_halts_and_then_only_cancels_pass(run: dict[str, Any]
                                                                   ) -> None:
    lb = label(run, "loss-spiral")
    states = _states(run, lb.entity)
    assert [(s["from_state"], s["to_state"], s["metric"]) for s in states][:2] == [
        ("active", "reducing", "day_loss"), ("reducing", "halted", "day_loss")]
    reducing, halted = states[0]["ts_event"], states[1]["ts_event"]
    between = [d for d in values(run["outputs"][0], "risk.decisions")
               if d["account"] == lb.entity and reducing < d["ts_event"] < halted]
    # while reducing, the spiral's buys are refused; what reduces the position passes
    assert between and all(d["trading_state"] == "reducing" for d in between)
    assert all("TRADING_STATE" in d["reason_codes"] for d in between
               if d["decision"] == "deny")
    assert {d["decision"] for d in between} == {"accept", "deny"}
    breaches = {(b["metric"], b["level"]) for b in values(run["outputs"][0], "risk.breaches")
                if b["account"] == lb.entity}
    assert {("day_loss", "soft"), ("day_loss", "hard")} <= breaches
    _only_denials_after(run, lb.entity, halted)


# --- live control on the first pair --------------------------------------------------------


def _order(account: str, symbol: str, ts: int, qty: float, price: float,
           n: int) -> RecordedMessage:
    from schemas.common import Side
    from schemas.orders import OrderNew

    event = OrderNew(event_id=f"e2e-{account}-{n}", ts_event=ts, ts_init=ts, source="e2e",
                     seq=n, account=account, symbol=symbol, side=Side.BUY, price=price, qty=qty,
                     cl_ord_id=f"{account}-{n}")
    return RecordedMessage.from_event("orders", account, event)


def _reference(run: dict[str, Any]) -> tuple[str, int, float]:
    """An instrument, a price at its market and a time just before its last market event:
    instrument risk as of that time is still in the order worker's history, and the table
    has been read past it (no wait)."""
    quotes = [m.value for m in run["messages"] if m.topic == "market" and m.value
              and m.value["type"] == "Quote"]
    symbol = quotes[-1]["symbol"]
    last = max(m.value["ts_event"] for m in run["messages"]
               if m.topic == "market" and m.value and m.value.get("symbol") == symbol)
    bid = next(q["bid"] for q in reversed(quotes) if q["symbol"] == symbol)
    return symbol, last - 20_000, bid


def _cli(settings: Settings, *args: str) -> int:
    assert settings.bootstrap_servers is not None
    return main(["--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix",
                 settings.topic_prefix, "--profile", settings.profile, *args])


def test_kill_switch_halts_the_scope_and_cancels_its_open_orders(run: dict[str, Any]) -> None:
    pair: Pair = run["pair"]
    settings = pair.settings
    symbol, ts, price = _reference(run)
    produce_recording(settings, [_order("KILLME", symbol, ts, 10, price, 1)])
    first = wait_for_record(settings, "risk.decisions", lambda d: d["account"] == "KILLME",
                      pair.alive)
    assert first["decision"] == "accept", first["checks"]  # an open order to cancel
    assert _cli(settings, "kill", "--scope", "account:KILLME", "--by", "e2e",
                "--reason", "test") == 0
    change = wait_for_record(settings, "risk.states", lambda s: s["scope"] == "account:KILLME",
                       pair.alive)
    assert (change["to_state"], change.get("actor")) == ("halted", "e2e")
    cancel = wait_for_record(settings, "orders", lambda c: c["type"] == "MassCancel"
                       and c["account"] == "KILLME", pair.alive)
    assert cancel["scope"] == "account:KILLME" and cancel["requested_by"] == "e2e"
    snapshot = wait_for_record(settings, "risk.accounts", lambda a: a["account"] == "KILLME"
                         and a["trading_state"] == "halted", pair.alive)
    assert snapshot["open_order_notional"] == 0.0
    produce_recording(settings, [_order("KILLME", symbol, ts + 5_000, 10, price, 2)])
    second = wait_for_record(settings, "risk.decisions", lambda d: d["cl_ord_id"] == "KILLME-2",
                       pair.alive)
    assert second["decision"] == "deny" and "TRADING_STATE" in second["reason_codes"]


def test_a_limit_changed_on_risk_limits_applies_to_the_next_order(run: dict[str, Any]) -> None:
    pair: Pair = run["pair"]
    settings = pair.settings
    symbol, ts, price = _reference(run)
    produce_recording(settings, [_order("LIMITED", symbol, ts, 20, price, 1)])
    before = wait_for_record(settings, "risk.decisions", lambda d: d["cl_ord_id"] == "LIMITED-1",
                       pair.alive)
    assert before["decision"] == "accept", before["checks"]
    notional = 20 * price
    assert _cli(settings, "limits", "set", "--scope", "account:LIMITED", "--metric",
                "order_notional", "--hard", str(round(notional / 2, 2)), "--by", "e2e") == 0
    # the worker's audit echo says the change is in force
    wait_for_record(settings, "risk.limits", lambda c: c["scope"] == "account:LIMITED"
              and c["source"] == "order-worker", pair.alive)
    produce_recording(settings, [_order("LIMITED", symbol, ts + 5_000, 21, price, 2)])
    after = wait_for_record(settings, "risk.decisions", lambda d: d["cl_ord_id"] == "LIMITED-2",
                      pair.alive)
    assert after["decision"] == "deny" and "MAX_ORDER_NOTIONAL" in after["reason_codes"]


def test_scope_outputs_are_published_once_by_two_order_workers(run: dict[str, Any]) -> None:
    """Instrument outputs and limit audits come from table events every order worker
    applies: with two order workers in the group, exactly one copy reaches the topics. Desk
    and firm transitions are left to the aggregation stage: no order worker publishes one."""

    pair: Pair = run["pair"]
    settings = pair.settings
    pair.start("orders")
    pair.wait_ready()  # both order workers hold partitions
    symbol, _, _ = _reference(run)
    assert _cli(settings, "kill", "--scope", f"instrument:{symbol}", "--by", "e2e") == 0
    assert _cli(settings, "limits", "set", "--scope", "desk:E2E", "--metric", "day_loss",
                "--soft", "1000", "--hard", "2000", "--by", "e2e") == 0
    assert _cli(settings, "kill", "--scope", "desk:E2E", "--by", "e2e") == 0
    wait_for_record(settings, "risk.states", lambda s: s["scope"] == f"instrument:{symbol}"
              and s.get("actor") == "e2e", pair.alive)
    wait_for_record(settings, "risk.limits", lambda c: c["scope"] == "desk:E2E"
              and c["source"] == "order-worker", pair.alive)
    time.sleep(2.0)  # time for a second copy, if the other worker were to publish one
    states = [orjson.loads(v) for _, _, v in read_committed(settings, ("risk.states",))]
    assert sum(s["scope"] == f"instrument:{symbol}" and s.get("actor") == "e2e"
               for s in states) == 1
    assert [s for s in states if s["scope"] == "desk:E2E"] == []  # no scope stage runs here
    echoes = [orjson.loads(v) for _, _, v in read_committed(settings, ("risk.limits",))]
    assert sum(c["scope"] == "desk:E2E" and c["source"] == "order-worker"
               for c in echoes) == 1
    # and the replay's instrument transitions (if any) were not published again by the
    # worker that joined: the new member read them as history
    replayed = [s for s in states if s["scope"].startswith("instrument:") and not s.get("actor")]
    assert len(replayed) == len({s["event_id"] for s in replayed})
