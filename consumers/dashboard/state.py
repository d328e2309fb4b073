"""What the dashboard shows, kept in memory and handed to browsers as deltas.

Every applied event gets the next sequence number. A browser remembers the last sequence it
has seen and asks for everything newer (`delta(since)`), so a slow or reconnecting client
catches up without the server keeping a queue per client; `delta(0)` is the full picture.
Memory is bounded: the last `max_alerts` alerts, `max_points` chart points per instrument,
`max_transitions` state changes and `max_denials` denied orders, plus the latest snapshot
per instrument, account and scope.

>>> from schemas.outputs import RiskAlert
>>> state = DashboardState()
>>> state.apply(RiskAlert(event_id="a1", ts_event=1, ts_init=1, source="doc",
...     reason_code="VAR_BREACH", severity="critical", entity="AAPL", entity_kind="instrument",
...     observed=0.05, threshold=0.02, message="loss beyond VaR", cause_event_id="e1"))
True
>>> d = state.delta(0)
>>> d["seq"], d["alerts"][0]["code"], state.delta(d["seq"])["alerts"]
(1, 'VAR_BREACH', [])
"""

from __future__ import annotations

import threading
from collections import Counter, deque
from typing import Any

from schemas.common import Envelope, Severity, TradingState
from schemas.outputs import (
    AccountRisk,
    Decision,
    InstrumentRisk,
    RiskAlert,
    RiskDecision,
    TradingStateChanged,
)

DASHBOARD_TOPICS: tuple[str, ...] = ("risk.alerts", "risk.states", "risk.instruments",
                                     "risk.accounts", "risk.decisions")


def _ms(ts_ns: int) -> int:
    return ts_ns // 1_000_000


class DashboardState:
    """Thread-safe: the feed thread applies events, HTTP handler threads read deltas."""

    def __init__(self, *, max_alerts: int = 200, max_points: int = 600,
                 max_transitions: int = 200, max_denials: int = 100) -> None:
        self._lock = threading.Lock()
        self.seq = 0
        self.alerts: deque[dict[str, Any]] = deque(maxlen=max_alerts)
        self.transitions: deque[dict[str, Any]] = deque(maxlen=max_transitions)
        self.denials: deque[dict[str, Any]] = deque(maxlen=max_denials)
        self.scopes: dict[str, dict[str, Any]] = {}
        self.instruments: dict[str, dict[str, Any]] = {}
        self.series: dict[str, deque[list[float]]] = {}
        self.accounts: dict[str, dict[str, Any]] = {}
        self.max_points = max_points
        self.counts: Counter[str] = Counter()
        self.decisions: Counter[str] = Counter()
        self.alert_severities: Counter[str] = Counter()
        self.last_ts_event = 0
        self.skipped = 0

    # --- writing (feed thread) -----------------------------------------------------------

    def apply(self, event: Envelope) -> bool:
        """Take one output event in; False if the dashboard does not show its type."""
        with self._lock:
            seq = self.seq + 1
            shown = self._apply(event, seq)
            if shown:
                self.seq = seq
                self.counts[event.type] += 1
                self.last_ts_event = max(self.last_ts_event, event.ts_event)
            return shown

    def _apply(self, event: Envelope, seq: int) -> bool:
        if isinstance(event, RiskAlert):
            severity = Severity(event.severity).value
            self.alerts.append({
                "seq": seq, "id": event.event_id, "ts": _ms(event.ts_event),
                "severity": severity, "code": event.reason_code, "entity": event.entity,
                "entity_kind": event.entity_kind, "observed": event.observed,
                "threshold": event.threshold, "message": event.message,
                "features": [f.name for f in event.features[:3]], "model": event.model})
            self.alert_severities[severity] += 1
            return True
        if isinstance(event, TradingStateChanged):
            row = {"seq": seq, "ts": _ms(event.ts_event), "scope": event.scope,
                   "from": TradingState(event.from_state).value,
                   "to": TradingState(event.to_state).value, "cause": event.cause,
                   "metric": event.metric, "observed": event.observed,
                   "threshold": event.threshold, "actor": event.actor}
            self.scopes[event.scope] = row
            self.transitions.append(row)
            return True
        if isinstance(event, InstrumentRisk):
            self.instruments[event.symbol] = {
                "seq": seq, "ts": _ms(event.ts_event), "symbol": event.symbol,
                "price": event.price, "vol": event.vol, "var_95": event.var_95,
                "var_99": event.var_99, "es_975": event.es_975, "method": event.var_method,
                "anomaly": event.anomaly_score, "regime": event.regime,
                "tail_prob": event.tail_prob, "spread_bps": event.spread_bps,
                "status": event.status, "tradable": event.tradable, "stale": event.stale}
            points = self.series.setdefault(event.symbol, deque(maxlen=self.max_points))
            points.append([seq, _ms(event.ts_event), event.price, event.var_95, event.var_99,
                           event.vol, event.anomaly_score])
            return True
        if isinstance(event, AccountRisk):
            self.accounts[event.account] = {
                "seq": seq, "ts": _ms(event.ts_event), "account": event.account,
                "desk": event.desk, "state": TradingState(event.trading_state).value,
                "day_pnl": event.day_pnl, "realized_pnl": event.realized_pnl,
                "unrealized_pnl": event.unrealized_pnl, "gross": event.gross_exposure,
                "net": event.net_exposure, "long": event.long_exposure,
                "short": event.short_exposure, "leverage": event.leverage,
                "var_95": event.var_95, "drawdown": event.drawdown_intraday,
                "open_orders": event.open_order_notional, "positions": len(event.positions)}
            return True
        if isinstance(event, RiskDecision):
            decision = Decision(event.decision).value
            self.decisions[decision] += 1
            if event.decision == Decision.DENY:
                self.denials.append({
                    "seq": seq, "ts": _ms(event.ts_event), "account": event.account,
                    "symbol": event.symbol, "order": event.cl_ord_id,
                    "codes": list(event.reason_codes)})
            return True
        return False

    # --- reading (HTTP threads) ----------------------------------------------------------

    def delta(self, since: int) -> dict[str, Any]:
        """Everything applied after sequence `since` (0: the whole picture)."""
        with self._lock:
            def newer(rows: Any) -> list[dict[str, Any]]:
                return [r for r in rows if r["seq"] > since]

            series = {}
            for symbol, points in self.series.items():
                fresh = []
                for point in reversed(points):
                    if point[0] <= since:
                        break
                    fresh.append(point[1:])
                if fresh:
                    series[symbol] = fresh[::-1]
            return {
                "seq": self.seq, "reset": since == 0, "last_ts": _ms(self.last_ts_event),
                "alerts": newer(self.alerts), "transitions": newer(self.transitions),
                "scopes": newer(self.scopes.values()),
                "instruments": newer(self.instruments.values()), "series": series,
                "accounts": newer(self.accounts.values()), "denials": newer(self.denials),
                "totals": {"events": dict(self.counts), "decisions": dict(self.decisions),
                           "alerts": dict(self.alert_severities)},
            }
