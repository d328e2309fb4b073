"""What a subscriber shows: one summary row per output event, and the filters over it.

Alerts, decisions, breaches and state changes are different events; a risk desk reads them
as one stream. `summarize` gives each a common row (time, kind, severity, entity, code,
detail) and a severity, so `--severity critical` means the same on all four:

- RiskAlert: its own severity;
- RiskDecision: `deny` is a warning, `accept` is info;
- LimitBreach: `hard` is critical, `soft` is a warning;
- TradingStateChanged: to `halted` is critical, to `reducing` a warning, to `active` info.

>>> from schemas.outputs import LimitBreach
>>> b = LimitBreach(event_id="b1", ts_event=0, ts_init=0, source="doc", account="ACC-1",
...                 scope="account:ACC-1", metric="gross_exposure", level="hard",
...                 observed=2e6, limit=1e6)
>>> row = summarize(b)
>>> (row.kind, row.severity, row.entity, row.code)
('breach', 'critical', 'ACC-1', 'GROSS_EXPOSURE')
>>> EventFilter(severities=frozenset({"critical"}), accounts=frozenset({"ACC-1"})).matches(b)
True
>>> EventFilter(types=frozenset({"alert"})).matches(b)
False
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from schemas.common import Envelope, Severity, TradingState, scope_id, scope_kind
from schemas.outputs import (
    BreachLevel,
    Decision,
    LimitBreach,
    RiskAlert,
    RiskDecision,
    TradingStateChanged,
)

# Catalogue topics a subscriber reads, and the short kind name of what each carries.
KIND_BY_TOPIC: dict[str, str] = {
    "risk.alerts": "alert",
    "risk.decisions": "decision",
    "risk.breaches": "breach",
    "risk.states": "state",
}
KIND_BY_TYPE: dict[str, str] = {
    "RiskAlert": "alert",
    "RiskDecision": "decision",
    "LimitBreach": "breach",
    "TradingStateChanged": "state",
}
SEVERITIES = tuple(s.value for s in Severity)
_STATE_SEVERITY = {TradingState.HALTED: Severity.CRITICAL, TradingState.REDUCING:
                   Severity.WARNING, TradingState.ACTIVE: Severity.INFO}


@dataclass(frozen=True)
class Row:
    """One line of the tail: what happened, to whom, how bad, and the numbers."""

    ts_event: int
    kind: str
    severity: str
    entity: str
    code: str
    detail: str
    account: str | None = None
    instrument: str | None = None
    codes: tuple[str, ...] = ()

    @property
    def time(self) -> str:
        """Event time in UTC with milliseconds, e.g. 2024-03-01 14:30:00.125."""
        dt = datetime.fromtimestamp(self.ts_event / 1e9, tz=UTC)
        return dt.strftime("%Y-%m-%d %H:%M:%S.") + f"{dt.microsecond // 1000:03d}"


def _num(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4g}" if abs(value) < 1e6 else f"{value:,.0f}"


def summarize(event: Envelope) -> Row:
    """The row of an alert, decision, breach or state change (ValueError for anything else)."""
    if isinstance(event, RiskAlert):
        account = event.entity if event.entity_kind == "account" else None
        instrument = event.entity if event.entity_kind == "instrument" else None
        return Row(event.ts_event, "alert", Severity(event.severity).value, event.entity,
                   event.reason_code,
                   f"{event.message} (observed {_num(event.observed)}, "
                   f"threshold {_num(event.threshold)})",
                   account, instrument, (event.reason_code,))
    if isinstance(event, RiskDecision):
        deny = event.decision == Decision.DENY
        codes = tuple(event.reason_codes)
        detail = f"{event.cl_ord_id} {event.symbol} {Decision(event.decision).value}"
        if codes:
            detail += ": " + ", ".join(codes)
        return Row(event.ts_event, "decision",
                   Severity.WARNING.value if deny else Severity.INFO.value, event.account,
                   "DENY" if deny else "ACCEPT", detail, event.account, event.symbol,
                   ("DENY" if deny else "ACCEPT", *codes))
    if isinstance(event, LimitBreach):
        hard = event.level == BreachLevel.HARD
        instrument = scope_id(event.scope) if scope_kind(event.scope) == "instrument" else None
        code = event.metric.upper().replace("-", "_").replace(".", "_")
        return Row(event.ts_event, "breach",
                   Severity.CRITICAL.value if hard else Severity.WARNING.value, event.account,
                   code, f"{event.scope} {event.metric} {_num(event.observed)} over "
                   f"{BreachLevel(event.level).value} limit {_num(event.limit)}"
                   + (f": {event.message}" if event.message else ""),
                   event.account, instrument, (code, f"{BreachLevel(event.level).value.upper()}"))
    if isinstance(event, TradingStateChanged):
        kind, ident = scope_kind(event.scope), scope_id(event.scope)
        to_state = TradingState(event.to_state)
        code = f"{TradingState(event.from_state).value.upper()}->{to_state.value.upper()}"
        detail = event.cause + (f" (by {event.actor})" if event.actor else "")
        return Row(event.ts_event, "state", _STATE_SEVERITY[to_state].value, event.scope, code,
                   detail, ident if kind == "account" else None,
                   ident if kind == "instrument" else None, (to_state.value.upper(),))
    raise ValueError(f"no summary for events of type {event.type}")


@dataclass(frozen=True)
class EventFilter:
    """Which rows to keep. Empty sets keep everything; the criteria combine with AND.

    `types` holds kinds (alert, decision, breach, state), event type names (RiskAlert...) or
    codes (an alert's reason code, a decision's reason codes, a breach's metric, a state
    change's target state), compared case-insensitively.
    """

    severities: frozenset[str] = field(default_factory=frozenset)
    accounts: frozenset[str] = field(default_factory=frozenset)
    instruments: frozenset[str] = field(default_factory=frozenset)
    types: frozenset[str] = field(default_factory=frozenset)

    def matches(self, event: Envelope) -> bool:
        try:
            row = summarize(event)
        except ValueError:
            return False
        return self.matches_row(row, event.type)

    def matches_row(self, row: Row, type_name: str) -> bool:
        if self.severities and row.severity not in self.severities:
            return False
        if self.accounts and row.account not in self.accounts:
            return False
        if self.instruments and row.instrument not in self.instruments:
            return False
        if self.types:
            wanted = {t.lower() for t in self.types}
            names = {row.kind, type_name.lower(), *(c.lower() for c in row.codes)}
            if not wanted & names:
                return False
        return True
