"""The demo's picture of a run, built from the output topics as they are read.

`LiveState.apply(topic, value)` takes one output (catalogue topic name, the event as a JSON
object) and updates counts, the most recent alerts, denials, breaches and state changes, the
current trading state of every scope, the latest account snapshot, the latest aggregate of
every desk and firm (ScopeRisk), the throughput per topic,
and the detection signals the summary scores against the scenario labels. It is fed by the
reader thread and read by the view thread: every method takes the lock, and `snapshot()`
hands out copies.

Detection signals (what can reveal a scenario, see `consumers.demo.summary`): every alert,
every denied order, every limit breach and every move to REDUCING or HALTED, each with the
entity it is about (instrument symbol or account id), its event time and a severity (a
denial and a soft breach are warnings, a hard breach and a halt are critical).

>>> state = LiveState()
>>> state.apply("risk.alerts", {"ts_event": 5, "reason_code": "PRICE_JUMP",
...     "severity": "critical", "entity": "ACME", "entity_kind": "instrument",
...     "observed": -9.1, "threshold": 6.0, "message": "ACME moved", "source": "market-worker",
...     "event_id": "a1"}, now=1.0)
>>> state.apply("risk.states", {"ts_event": 6, "scope": "account:ACC-1",
...     "from_state": "active", "to_state": "halted", "cause": "day_loss above halt level"},
...     now=1.0)
>>> snap = state.snapshot()
>>> snap.alerts_by_reason, snap.states["account:ACC-1"].state
(Counter({'PRICE_JUMP': 1}), 'halted')
>>> [(s.entity, s.code) for s in snap.signals]
[('ACME', 'PRICE_JUMP'), ('ACC-1', 'HALTED')]
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RECENT = 200  # rows kept per list: more than any terminal shows
RATE_WINDOW_S = 3.0

Event = Mapping[str, Any]


@dataclass(frozen=True)
class Signal:
    """Something the engine did about an entity: an alert, denial, breach or halt."""

    kind: str  # alert | denial | breach | state
    entity: str
    ts_event: int
    severity: str
    code: str

    def as_alert(self) -> dict[str, Any]:
        """The shape `engine.evaluation.score_labels` scores."""
        return {"entity": self.entity, "ts_event": self.ts_event, "severity": self.severity,
                "reason_code": f"{self.kind} {self.code}" if self.kind != "alert"
                else self.code}


@dataclass
class ScopeState:
    scope: str
    state: str
    cause: str
    since: int
    transitions: int = 0


class Rates:
    """Messages per second per name over the last `window_s` seconds (wall clock)."""

    def __init__(self, window_s: float = RATE_WINDOW_S) -> None:
        self.window_s = window_s
        self._marks: dict[str, deque[tuple[float, int]]] = {}

    def add(self, name: str, now: float, n: int = 1) -> None:
        marks = self._marks.setdefault(name, deque())
        if marks and now - marks[-1][0] < 0.1:  # one mark per 100 ms keeps this small
            last_t, last_n = marks[-1]
            marks[-1] = (last_t, last_n + n)
        else:
            marks.append((now, n))
        while marks and now - marks[0][0] > self.window_s:
            marks.popleft()

    def rate(self, name: str, now: float) -> float:
        marks = self._marks.get(name)
        if not marks:
            return 0.0
        return sum(n for t, n in marks if now - t <= self.window_s) / self.window_s

    def names(self) -> list[str]:
        return list(self._marks)


@dataclass
class Snapshot:
    """A consistent copy of the state for one frame of the view or the summary."""

    outputs: Counter[str]
    rates: dict[str, float]
    alerts: list[dict[str, Any]]
    alerts_by_reason: Counter[str]
    alerts_by_severity: Counter[str]
    accepted: int
    denied: int
    denial_codes: Counter[str]
    denials: list[dict[str, Any]]
    breaches: list[dict[str, Any]]
    breaches_by_metric: Counter[str]
    transitions: list[dict[str, Any]]
    transitions_to: Counter[str]
    states: dict[str, ScopeState]
    accounts: dict[str, dict[str, Any]]
    dead_letters: Counter[str]
    dead_letter_reasons: dict[str, str]
    instruments: dict[str, dict[str, Any]]
    signals: list[Signal]
    market_alert_ids: set[str]
    decisions: dict[str, tuple[str, tuple[str, ...]]]
    undecodable: int
    last_ts: int | None
    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    """The latest ScopeRisk figures per desk and firm."""


@dataclass
class LiveState:
    """See the module docstring. `apply` is called from the reader thread."""

    outputs: Counter[str] = field(default_factory=Counter)
    alerts: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    alerts_by_reason: Counter[str] = field(default_factory=Counter)
    alerts_by_severity: Counter[str] = field(default_factory=Counter)
    accepted: int = 0
    denied: int = 0
    denial_codes: Counter[str] = field(default_factory=Counter)
    denials: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    breaches: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    breaches_by_metric: Counter[str] = field(default_factory=Counter)
    transitions: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=RECENT))
    transitions_to: Counter[str] = field(default_factory=Counter)
    states: dict[str, ScopeState] = field(default_factory=dict)
    accounts: dict[str, dict[str, Any]] = field(default_factory=dict)
    dead_letters: Counter[str] = field(default_factory=Counter)
    dead_letter_reasons: dict[str, str] = field(default_factory=dict)
    instruments: dict[str, dict[str, Any]] = field(default_factory=dict)
    instrument_marks: dict[str, int] = field(default_factory=dict)
    signals: list[Signal] = field(default_factory=list)
    market_alert_ids: set[str] = field(default_factory=set)
    decisions: dict[str, tuple[str, tuple[str, ...]]] = field(default_factory=dict)
    undecodable: int = 0
    last_ts: int | None = None
    scopes: dict[str, dict[str, Any]] = field(default_factory=dict)
    rates: Rates = field(default_factory=Rates)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, topic: str, n: int = 1, now: float | None = None) -> None:
        """Count messages that are not decoded (snapshots, health records, the input)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self.outputs[topic] += n
            self.rates.add(topic, now, n)

    def bad(self) -> None:
        with self._lock:
            self.undecodable += 1

    def apply(self, topic: str, value: Event, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        with self._lock:
            self.outputs[topic] += 1
            self.rates.add(topic, now)
            ts = value.get("ts_event")
            if isinstance(ts, int):
                self.last_ts = ts if self.last_ts is None else max(self.last_ts, ts)
            handler = _HANDLERS.get(topic)
            if handler is not None:
                handler(self, value)

    # --- per topic (called with the lock held) -------------------------------------------

    def _alert(self, v: Event) -> None:
        self.alerts.appendleft(dict(v))
        self.alerts_by_reason[str(v["reason_code"])] += 1
        self.alerts_by_severity[str(v["severity"])] += 1
        if v.get("source") == "market-worker":
            self.market_alert_ids.add(str(v["event_id"]))
        entity = str(v["entity"])
        if v.get("entity_kind") == "model":  # model alerts name worker/method/SYMBOL
            entity = entity.rsplit("/", 1)[-1]
        self.signals.append(Signal("alert", entity, int(v["ts_event"]), str(v["severity"]),
                                   str(v["reason_code"])))

    def _decision(self, v: Event) -> None:
        codes = tuple(str(c) for c in v.get("reason_codes") or ())
        self.decisions[str(v.get("event_id"))] = (str(v.get("decision")), codes)
        if v.get("decision") != "deny":
            self.accepted += 1
            return
        self.denied += 1
        self.denial_codes.update(codes)
        self.denials.appendleft(dict(v))
        self.signals.append(Signal("denial", str(v["account"]), int(v["ts_event"]), "warning",
                                   codes[0] if codes else "DENY"))

    def _breach(self, v: Event) -> None:
        self.breaches.appendleft(dict(v))
        metric = str(v["metric"])
        self.breaches_by_metric[f"{metric} ({v['level']})"] += 1
        hard = v.get("level") == "hard"
        self.signals.append(Signal("breach", str(v["account"]), int(v["ts_event"]),
                                   "critical" if hard else "warning",
                                   f"{metric.upper()} {v['level']}"))

    def _state(self, v: Event) -> None:
        scope, to_state = str(v["scope"]), str(v["to_state"])
        self.transitions.appendleft(dict(v))
        self.transitions_to[to_state] += 1
        previous = self.states.get(scope)
        self.states[scope] = ScopeState(scope, to_state, str(v.get("cause", "")),
                                        int(v["ts_event"]),
                                        (previous.transitions if previous else 0) + 1)
        if to_state in ("reducing", "halted"):
            entity = scope.split(":", 1)[-1].split("/", 1)[0]  # strategy:ACC-1/x -> ACC-1
            self.signals.append(Signal("state", entity, int(v["ts_event"]),
                                       "critical" if to_state == "halted" else "warning",
                                       to_state.upper()))

    def _account(self, v: Event) -> None:
        self.accounts[str(v["account"])] = {
            key: v.get(key) for key in ("trading_state", "day_pnl", "gross_exposure",
                                        "net_exposure", "var_95", "drawdown_intraday",
                                        "ts_event")}
        self.accounts[str(v["account"])]["positions"] = len(v.get("positions") or ())

    def _instrument(self, v: Event) -> None:
        symbol, ts = str(v["symbol"]), int(v["ts_event"])
        if ts >= self.instrument_marks.get(symbol, ts):
            self.instrument_marks[symbol] = ts
            self.instruments[symbol] = {key: v.get(key) for key in (
                "price", "vol", "var_99", "es_975", "anomaly_score", "regime", "stale",
                "spread_bps", "ts_event")}

    def _scope(self, v: Event) -> None:
        scope, ts = str(v["scope"]), int(v["ts_event"])
        previous = self.scopes.get(scope)
        if previous is None or ts >= previous["ts_event"]:
            self.scopes[scope] = {key: v.get(key) for key in (
                "accounts", "trading_state", "day_pnl", "gross_exposure", "net_exposure",
                "var_95", "drawdown_intraday", "accounts_reducing", "accounts_halted",
                "ts_event")}

    def instrument_mark(self, symbol: str) -> int | None:
        """Latest event time of the symbol's risk snapshot seen in the output (the
        instrument table's watermark as the order worker will see it)."""
        return self.instrument_marks.get(symbol)  # one dict read: safe without the lock

    def _dead_letter(self, v: Event) -> None:
        kind = str(v.get("error_kind", "unknown"))
        self.dead_letters[kind] += 1
        self.dead_letter_reasons.setdefault(kind, f"{v.get('worker')}: {v.get('reason')}")

    # --- reading ---------------------------------------------------------------------------

    def snapshot(self, now: float | None = None, *, full: bool = True) -> Snapshot:
        """A copy; `full=False` leaves out the signals and alert ids (a view frame)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            return Snapshot(
                outputs=Counter(self.outputs),
                rates={name: self.rates.rate(name, now) for name in self.rates.names()},
                alerts=list(self.alerts), alerts_by_reason=Counter(self.alerts_by_reason),
                alerts_by_severity=Counter(self.alerts_by_severity), accepted=self.accepted,
                denied=self.denied, denial_codes=Counter(self.denial_codes),
                denials=list(self.denials), breaches=list(self.breaches),
                breaches_by_metric=Counter(self.breaches_by_metric),
                transitions=list(self.transitions),
                transitions_to=Counter(self.transitions_to),
                states={k: ScopeState(**vars(s)) for k, s in self.states.items()},
                accounts={k: dict(v) for k, v in self.accounts.items()},
                dead_letters=Counter(self.dead_letters),
                dead_letter_reasons=dict(self.dead_letter_reasons),
                instruments={k: dict(v) for k, v in self.instruments.items()},
                signals=list(self.signals) if full else [],
                market_alert_ids=set(self.market_alert_ids) if full else set(),
                decisions=dict(self.decisions) if full else {},
                undecodable=self.undecodable,
                last_ts=self.last_ts,
                scopes={k: dict(v) for k, v in self.scopes.items()})


_HANDLERS = {
    "risk.alerts": LiveState._alert,
    "risk.decisions": LiveState._decision,
    "risk.breaches": LiveState._breach,
    "risk.states": LiveState._state,
    "risk.accounts": LiveState._account,
    "risk.instruments": LiveState._instrument,
    "risk.scopes": LiveState._scope,
    "dlq": LiveState._dead_letter,
}
DECODED_TOPICS: tuple[str, ...] = tuple(_HANDLERS)
COUNTED_TOPICS: tuple[str, ...] = ("risk.model-health",)
"""Read but not decoded: only their throughput is shown."""
