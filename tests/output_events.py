"""Factories of output events and a publisher, shared by the subscriber and dashboard tests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from producers.kafka import DeliveryTracker, flush_all, make_producer
from schemas.codec import encode
from schemas.common import Envelope
from schemas.outputs import (
    AccountRisk,
    InstrumentRisk,
    LimitBreach,
    RiskAlert,
    RiskDecision,
    TradingStateChanged,
)
from schemas.settings import Settings
from schemas.topics import by_name

T0 = 1_700_000_000_000_000_000  # 2023-11-14 22:13:20 UTC, in ns
SECOND = 1_000_000_000
SUBSCRIBER_TOPICS = ("risk.alerts", "risk.decisions", "risk.breaches", "risk.states",
                     "risk.instruments", "risk.accounts")


def specs(names: Iterable[str] = SUBSCRIBER_TOPICS) -> list[Any]:
    return [by_name(n) for n in names]


def _env(event_id: str, ts: int) -> dict[str, Any]:
    return {"event_id": event_id, "ts_event": ts, "ts_init": ts, "source": "test"}


def alert(event_id: str, *, ts: int = T0, severity: str = "critical",
          reason_code: str = "VAR_BREACH", entity: str = "AAPL",
          entity_kind: str = "instrument", message: str = "loss beyond VaR 99") -> RiskAlert:
    return RiskAlert.model_validate({
        **_env(event_id, ts), "reason_code": reason_code, "severity": severity,
        "entity": entity, "entity_kind": entity_kind, "observed": 0.051, "threshold": 0.023,
        "message": message, "cause_event_id": f"in-{event_id}"})


def decision(event_id: str, *, ts: int = T0, account: str = "ACC-1", symbol: str = "AAPL",
             deny: bool = True) -> RiskDecision:
    return RiskDecision.model_validate({
        **_env(event_id, ts), "account": account, "strategy": "momo", "symbol": symbol,
        "cl_ord_id": f"ord-{event_id}", "order_event_id": f"in-{event_id}",
        "decision": "deny" if deny else "accept",
        "reason_codes": ["MAX_NOTIONAL"] if deny else []})


def breach(event_id: str, *, ts: int = T0, account: str = "ACC-1",
           hard: bool = True) -> LimitBreach:
    return LimitBreach.model_validate({
        **_env(event_id, ts), "account": account, "scope": f"account:{account}",
        "metric": "gross_exposure", "level": "hard" if hard else "soft",
        "observed": 2_400_000.0, "limit": 2_000_000.0})


def state_change(event_id: str, *, ts: int = T0, scope: str = "account:ACC-2",
                 to_state: str = "halted", cause: str = "drawdown over hard limit"
                 ) -> TradingStateChanged:
    return TradingStateChanged.model_validate({
        **_env(event_id, ts), "scope": scope, "from_state": "active", "to_state": to_state,
        "cause": cause, "metric": "drawdown_intraday", "observed": 0.081, "threshold": 0.05})


def instrument_risk(event_id: str, *, ts: int, symbol: str = "AAPL", price: float = 190.0,
                    vol: float = 0.01) -> InstrumentRisk:
    return InstrumentRisk(**_env(event_id, ts), symbol=symbol, price=price, vol=vol,
                          var_95=1.645 * vol, var_99=2.326 * vol, es_975=2.338 * vol,
                          var_method="ewma", anomaly_score=0.1, regime="calm",
                          events_seen=100)


def account_risk(event_id: str, *, ts: int, account: str = "ACC-1",
                 day_pnl: float = -12_500.0) -> AccountRisk:
    return AccountRisk(**_env(event_id, ts), account=account, desk="EQ", day_pnl=day_pnl,
                       realized_pnl=-2_500.0, unrealized_pnl=-10_000.0,
                       gross_exposure=1_250_000.0, net_exposure=420_000.0,
                       long_exposure=835_000.0, short_exposure=415_000.0, leverage=1.25,
                       var_95=21_000.0, drawdown_intraday=0.012)


def publish(settings: Settings, events: Iterable[Envelope]) -> int:
    """Publish each event on its catalogue topic, keyed as the catalogue says; returns count."""
    producer = make_producer(settings)
    tracker = DeliveryTracker()
    count = 0
    for event in events:
        key: str = event.key  # type: ignore[attr-defined]  # every output model has one
        producer.produce(settings.topic(type(event).TOPIC), key=key.encode(),
                         value=encode(event), on_delivery=tracker.on_delivery)
        count += 1
    assert flush_all(producer, 30) == 0
    assert tracker.failed == 0, tracker.errors
    return count
