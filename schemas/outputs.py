"""What the workers publish: alerts, decisions, breaches, snapshots, state changes, health.

Every output's `ts_event` is the event time of the input that caused it and its `event_id`
is derived from that input's id and the rule that fired (`schemas.ids.derive_event_id`).
Fields named `ts_init` or ending in `_latency_ns` are the only ones allowed to differ
between two runs over the same input.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field

from schemas.common import (
    Envelope,
    EventModel,
    Fraction,
    Identifier,
    Scope,
    Severity,
    Symbol,
    TradingState,
)

Ratio = Annotated[float, Field(ge=0)]


class FeatureContribution(EventModel):
    """One input that pushed a model's score, with its value and share of the score."""

    name: str
    value: float
    contribution: float = 0.0


class RiskAlert(Envelope):
    """Something a risk desk should look at, with the numbers that explain why."""

    TOPIC: ClassVar[str] = "risk.alerts"
    type: Literal["RiskAlert"] = "RiskAlert"
    reason_code: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
    severity: Severity
    entity: Identifier = Field(description="Instrument symbol or account id the alert is about.")
    entity_kind: Literal["instrument", "account", "model", "worker", "scope"]
    observed: float
    threshold: float
    message: Annotated[str, Field(max_length=1000)]
    features: list[FeatureContribution] = Field(default_factory=list)
    model: str | None = None
    cause_event_id: Identifier

    @property
    def key(self) -> str:
        return self.entity


class CheckResult(EventModel):
    """A failed pre-trade check: its code and the numbers that failed it."""

    code: Annotated[str, Field(pattern=r"^[A-Z][A-Z0-9_]*$")]
    observed: float | None = None
    limit: float | None = None
    message: str = ""


class Decision(StrEnum):
    ACCEPT = "accept"
    DENY = "deny"


class RiskDecision(Envelope):
    """The pre-trade gate's answer for one OrderNew or OrderReplace."""

    TOPIC: ClassVar[str] = "risk.decisions"
    type: Literal["RiskDecision"] = "RiskDecision"
    account: Identifier
    strategy: Identifier
    symbol: Symbol
    cl_ord_id: Identifier
    order_event_id: Identifier
    decision: Decision
    reason_codes: list[str] = Field(default_factory=list)
    checks: list[CheckResult] = Field(default_factory=list)
    warnings: list[CheckResult] = Field(default_factory=list)
    trading_state: TradingState = TradingState.ACTIVE
    decision_latency_ns: Annotated[int, Field(ge=0)] = 0

    @property
    def key(self) -> str:
        return self.account


class BreachLevel(StrEnum):
    SOFT = "soft"
    HARD = "hard"


class LimitBreach(Envelope):
    """A metric crossed the soft (warn) or hard level of a limit on some scope."""

    TOPIC: ClassVar[str] = "risk.breaches"
    type: Literal["LimitBreach"] = "LimitBreach"
    account: Identifier
    scope: Scope
    metric: Identifier
    level: BreachLevel
    observed: float
    limit: float
    message: Annotated[str, Field(max_length=1000)] = ""

    @property
    def key(self) -> str:
        return self.account


class VarFigures(EventModel):
    """One VaR method's forecast for the next return, as positive fractions of price."""

    var_95: Ratio
    var_99: Ratio
    es_975: Ratio


class InstrumentRisk(Envelope):
    """Per-instrument risk snapshot after each market event (compacted topic).

    VaR and ES are forecasts for the next return, made before that return is seen.
    """

    TOPIC: ClassVar[str] = "risk.instruments"
    type: Literal["InstrumentRisk"] = "InstrumentRisk"
    symbol: Symbol
    price: Annotated[float, Field(gt=0)]
    last_return: float = 0.0
    vol: Ratio = Field(description="Volatility per step (EWMA).")
    var_95: Ratio
    var_99: Ratio
    es_975: Ratio
    var_method: str
    methods: dict[str, VarFigures] = Field(default_factory=dict)
    anomaly_score: Fraction = 0.0
    regime: Literal["calm", "stressed", "unknown"] = "unknown"
    tail_prob: Fraction = 0.0
    spread_bps: Ratio | None = None
    amihud: Ratio | None = None
    participation: Ratio | None = None
    adv: Ratio | None = None
    stale: bool = False
    tradable: bool = True
    status: str = "trading"
    tick_size: float | None = None
    lot_size: float | None = None
    min_qty: float | None = None
    max_qty: float | None = None
    sentiment: float | None = None
    events_seen: Annotated[int, Field(ge=0)] = 0

    @property
    def key(self) -> str:
        return self.symbol


class PositionRisk(EventModel):
    symbol: Symbol
    qty: float
    avg_cost: float
    mark: float
    market_value: float
    unrealized_pnl: float
    realized_pnl: float


class AccountRisk(Envelope):
    """Per-account risk snapshot (compacted topic)."""

    TOPIC: ClassVar[str] = "risk.accounts"
    type: Literal["AccountRisk"] = "AccountRisk"
    account: Identifier
    desk: Identifier | None = None
    firm: Identifier | None = None
    trading_state: TradingState = TradingState.ACTIVE
    positions: list[PositionRisk] = Field(default_factory=list)
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    day_pnl: float = 0.0
    gross_exposure: Ratio = 0.0
    net_exposure: float = 0.0
    long_exposure: Ratio = 0.0
    short_exposure: Ratio = 0.0
    leverage: Ratio = 0.0
    hhi: Fraction = 0.0
    largest_share: Fraction = 0.0
    drawdown_intraday: Ratio = 0.0
    drawdown_trailing: Ratio = 0.0
    var_95: Ratio = 0.0
    es_975: Ratio = 0.0
    open_order_notional: Ratio = 0.0
    counterparty_exposure: dict[str, float] = Field(default_factory=dict)
    time_to_liquidate_days: Ratio = 0.0
    liquidity_adjusted_var: Ratio = 0.0
    anomaly_score: Fraction = 0.0

    @property
    def key(self) -> str:
        return self.account


class ScopeFigures(Envelope):
    """The figures of an account that add up into a desk or firm: what a ScopeContribution
    hands to the aggregation stage and what a ScopeRisk sums (field for field)."""

    scope: Scope
    trading_state: TradingState = TradingState.ACTIVE
    realized_pnl: float = 0.0
    unrealized_pnl: float = 0.0
    day_pnl: float = 0.0
    gross_exposure: Ratio = 0.0
    net_exposure: float = 0.0
    long_exposure: Ratio = 0.0
    short_exposure: Ratio = 0.0
    var_95: Ratio = 0.0
    es_975: Ratio = 0.0
    open_order_notional: Ratio = 0.0

    @property
    def key(self) -> str:
        return self.scope


SCOPE_FIGURES: tuple[str, ...] = tuple(
    name for name in ScopeFigures.model_fields
    if name not in Envelope.model_fields and name not in ("scope", "trading_state"))
"""The numbers of ScopeFigures: an AccountRisk's fields of the same name, summed field for
field into a ScopeRisk."""


class ScopeContribution(ScopeFigures):
    """An account's figures handed to the aggregation stage of one scope above it (desk or
    firm): the order worker publishes one per AccountRisk and per scope, keyed by scope, so
    the stage that sums a desk sees every member account on one partition."""

    TOPIC: ClassVar[str] = "risk.scope-accounts"
    type: Literal["ScopeContribution"] = "ScopeContribution"
    account: Identifier
    withdrawn: bool = Field(
        default=False, description="The account no longer belongs to the scope (it was moved "
        "to another desk or firm on risk.limits): the stage drops the account's figures and "
        "ignores any sent with this one.")


class ScopeRisk(ScopeFigures):
    """Aggregated risk of a desk or firm and its trading state (compacted topic, keyed by
    scope): the sums over the member accounts' latest contributions. VaR and ES are summed
    without diversification (an upper bound), so a desk limit on them is conservative."""

    TOPIC: ClassVar[str] = "risk.scopes"
    type: Literal["ScopeRisk"] = "ScopeRisk"
    accounts: Annotated[int, Field(ge=0)] = 0
    state_cause: Annotated[str, Field(max_length=500)] = ""
    drawdown_intraday: Ratio = 0.0
    drawdown_trailing: Ratio = 0.0
    accounts_reducing: Annotated[int, Field(ge=0)] = 0
    accounts_halted: Annotated[int, Field(ge=0)] = 0


class TradingStateChanged(Envelope):
    """A scope moved between ACTIVE, REDUCING and HALTED, and why."""

    TOPIC: ClassVar[str] = "risk.states"
    type: Literal["TradingStateChanged"] = "TradingStateChanged"
    scope: Scope
    from_state: TradingState
    to_state: TradingState
    cause: Annotated[str, Field(min_length=1, max_length=500)]
    metric: str | None = None
    observed: float | None = None
    threshold: float | None = None
    actor: Identifier | None = Field(default=None, description="Who asked, for manual commands.")

    @property
    def key(self) -> str:
        return self.scope


class Zone(StrEnum):
    GREEN = "green"
    YELLOW = "yellow"
    RED = "red"


class BacktestStats(EventModel):
    """VaR backtest over a window: exceedances and the coverage tests."""

    observations: Annotated[int, Field(ge=0)]
    exceedances: Annotated[int, Field(ge=0)]
    expected_rate: Fraction
    kupiec_lr: Ratio
    kupiec_p: Fraction
    christoffersen_ind_lr: Ratio
    christoffersen_ind_p: Fraction
    christoffersen_cc_lr: Ratio
    christoffersen_cc_p: Fraction
    zone: Zone


class ModelHealth(Envelope):
    """Validation of one model for one entity: VaR backtests, prequential metrics, drift."""

    TOPIC: ClassVar[str] = "risk.model-health"
    type: Literal["ModelHealth"] = "ModelHealth"
    model_id: Identifier
    entity: Identifier
    method: str
    rolling: BacktestStats | None = None
    since_start: BacktestStats | None = None
    metrics: dict[str, float] = Field(default_factory=dict)
    drift: bool = False
    fallback_active: bool = False

    @property
    def key(self) -> str:
        return self.model_id


class DeadLetter(Envelope):
    """An input the worker could not use, kept whole with where it came from and why."""

    TOPIC: ClassVar[str] = "dlq"
    type: Literal["DeadLetter"] = "DeadLetter"
    original_topic: str
    original_partition: Annotated[int, Field(ge=-1)]
    original_offset: Annotated[int, Field(ge=-1)]
    original_key: str | None = None
    original_value_b64: str
    error_kind: Literal[
        "too_large", "undecodable", "invalid", "unknown_type", "duplicate", "out_of_order",
        "unauthorized", "processing_error",
    ]
    reason: Annotated[str, Field(max_length=2000)]
    worker: Identifier

    @property
    def key(self) -> str:
        return self.original_key or ""
