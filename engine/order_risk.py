"""The order risk processor: pre-trade gate, account risk, limits and trading states.

`OrderRiskProcessor` implements `engine.processor.TableProcessor` for the `order-worker`.
It is keyed by account and consumes:

* the `orders` topic (OrderNew, OrderReplace, OrderCancel, ExecutionReport, MassCancel),
  through `process()`: partitioned by account, state per account;
* table events every worker sees in full, through `apply_table(topic, event)` (or
  `process()`, same effect): InstrumentRisk (`risk.instruments`), LimitConfig (`risk.limits`),
  TradingStateCommand (`risk.control`) and ScopeRisk (`risk.scopes`, the desk/firm
  aggregation stage's output); `key_of` returns None for them.

Time is event time everywhere. An order reads instrument risk as of its own `ts_event`
(`instrument_as_of`; `instrument_watermark` tells the runtime how far the table has got), so
a snapshot newer than the order is never used. Account marks, PnL path, drawdowns and state
drivers are sampled at the account's own events (orders, cancels, fills, commands), never
on arrival of a table event, so they do not depend on how the two streams interleave.

State, and where it lives:

* per account (partitioned; snapshotted with `snapshot(account)` to the changelog): the
  account book (positions, open orders, PnL path), the account's and its strategies'
  trading-state machines, the order-flow model, rate/throttle/duplicate windows, the ids of
  recent orders and executions (for de-duplication) and the breach levels already reported;
* table state (replicated on every worker, rebuilt by reading the table topics, NOT in the
  changelog): instrument risk with a short history per instrument (read as of each order's
  event time: no lookahead), the EWMA covariance, the limit book, the latest command per
  scope, the command-driven states of firm, desk and instrument scopes, and the latest
  ScopeRisk per desk and firm.

Outputs (catalogue topic names):

* `risk.decisions`: a RiskDecision for every OrderNew and OrderReplace; only its
  `decision_latency_ns` (time.perf_counter_ns around the gate) differs between runs;
* `risk.breaches`: LimitBreach when a metric's level rises (none -> soft -> hard); a level is
  reported again only after the metric went back under its soft level;
* `risk.accounts`: AccountRisk on every fill, every state change and otherwise at most once
  per `account_publish_interval_ns` of event time;
* `risk.scope-accounts`: with every AccountRisk, one ScopeContribution per desk and firm
  above the account (keyed by that scope), for the aggregation stage, and a withdrawal
  (`withdrawn`) for a desk or firm the account was moved away from since its last one;
* `risk.states`: TradingStateChanged for every account, strategy and instrument transition,
  with its cause. Desk and firm transitions are published by the aggregation stage
  (`engine.scope_risk`), not here: this worker applies desk/firm kill and enable commands
  locally (a kill halts at once and cancels its accounts' open orders in the scope) but
  leaves the published record to the stage;
* `orders`: MassCancel for a kill switch (and for an automatic halt when `cancel_on_halt`);
* `risk.alerts`: RiskAlert for unusual orders (ORDER_UNUSUAL) and for rejected limit changes
  or commands (LIMIT_CHANGE_REJECTED, COMMAND_REJECTED);
* `risk.limits` (configurable): an audit echo of every accepted limit change, keyed
  `audit/<scope>/<id>` so it never replaces the scope's own record in the compacted topic,
  with `source` = this worker's name; table readers skip such records.

Outputs of table events and who publishes them: `output_owner(output)` names the account
(state key) an output belongs to; MassCancel, AccountRisk and account or strategy
TradingStateChanged and ScopeContribution are only produced for accounts this worker holds.
Instrument TradingStateChanged, audit echoes and rejection alerts (owner None) are computed
alike by every worker from the same table events. The Kafka runtime publishes those once:
only the worker holding input partition 0 does, and not for table history read at start-up
(`consumers.runtime.worker`); `publish_scope_events=False` silences the scope transitions
for a deployment that runs them elsewhere. Their ids derive from the input, so a copy that
slips through a hand-over of partition 0 is safe to drop downstream.

Event-time join (`aligned_tables`, `table_key`, `hold_needs`; `engine.temporal_join`): the
runtime holds each order until `risk.instruments` has been read past the order's time for
its instrument and every instrument its account holds, and applies instrument risk in event
time up to it, so the Kafka worker decides as `engine.pipeline.Pipeline` does in-process.

Control is fail-safe rather than as-of: a kill applies to every order decided after it, and
so does the state of a desk or firm published on `risk.scopes` (applied on arrival). An
order's trading state is the most restrictive of: the desk's and firm's published states,
this worker's command-driven desk/firm machines, the account, the strategy and the
instrument. As with commands, when a ScopeRisk arrives relative to the orders depends on
the interleaving of the streams, so decisions it changes are not a function of event time
alone; what a replay reproduces exactly is everything else.

>>> from schemas.orders import OrderNew
>>> from schemas.outputs import InstrumentRisk
>>> p = OrderRiskProcessor()
>>> _ = p.process(InstrumentRisk(event_id="ir1", ts_event=1, ts_init=0, source="m", symbol="AAPL",
...     price=100.0, vol=0.01, var_95=0.02, var_99=0.03, es_975=0.03, var_method="ewma",
...     adv=1e6, tick_size=0.01))
>>> out = p.process(OrderNew(event_id="o1", ts_event=2, ts_init=0, source="oms", account="A",
...     symbol="AAPL", side="buy", price=100.0, qty=100, cl_ord_id="c1"))
>>> [(o.topic, o.value.type) for o in out][:1]
[('risk.decisions', 'RiskDecision')]
>>> out[0].value.decision.value
'accept'
"""

from __future__ import annotations

import hashlib
import pickle
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from engine.accounts import EPS, AccountBook, Exposure, OpenOrder
from engine.asof import AsOfTable
from engine.config_sections import from_section
from engine.covariance import EwmaCovariance, liquidity, portfolio_var
from engine.envelope import output_envelope
from engine.limits import (
    AUDIT_KEY_PREFIX,
    STATE_METRICS,
    EffectiveLimit,
    Group,
    LimitBook,
    OrderScopes,
    strategy_scope,
    tightest,
)
from engine.order_config import OrderConfig
from engine.personal import OrderFlowModel, PersonalScore
from engine.pretrade import (
    RATE_THROTTLE,
    Finding,
    GateInput,
    OrderView,
    evaluate,
)
from engine.processor import DispatchByType, Output
from engine.snapshots import load_state
from engine.trading_state import (
    RANK,
    Reading,
    ScopeState,
    Transition,
    validate_command,
)
from schemas.common import Envelope, Severity, TradingState, scope_id, scope_kind
from schemas.control import LimitConfig, StateCommand, TradingStateCommand
from schemas.orders import (
    ExecType,
    ExecutionReport,
    MassCancel,
    OrderCancel,
    OrderEvent,
    OrderNew,
    OrderReplace,
)
from schemas.outputs import (
    SCOPE_FIGURES,
    AccountRisk,
    BreachLevel,
    Decision,
    FeatureContribution,
    InstrumentRisk,
    LimitBreach,
    PositionRisk,
    RiskAlert,
    RiskDecision,
    ScopeContribution,
    ScopeRisk,
    TradingStateChanged,
)

NAME = "order-worker"
_ONE = np.ones((1, 1))
PER_ORDER_METRICS = ("order_notional", "order_qty", "adv_participation", "order_rate")
MONITORED_METRICS = ("position_long", "position_short", "gross_exposure", "net_exposure",
                     "credit", "leverage", "concentration", *STATE_METRICS)
SNAPSHOT_VERSION = 1
_REF_LOG = 65_536
_AGGREGATED_KINDS = ("desk", "firm")


def _digest(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass
class IdMemory:
    """The last `size` ids seen, as 64-bit digests (bounded memory, tiny snapshots)."""

    size: int
    order: deque[int] = field(default_factory=deque)
    members: set[int] = field(default_factory=set)

    def seen_or_add(self, text: str) -> bool:
        d = _digest(text)
        if d in self.members:
            return True
        self.order.append(d)
        self.members.add(d)
        if len(self.order) > self.size:
            self.members.discard(self.order.popleft())
        return False

    def __getstate__(self) -> dict[str, Any]:
        return {"size": self.size, "order": list(self.order)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.size = state["size"]
        self.order = deque(state["order"])
        self.members = set(self.order)


@dataclass
class AccountState:
    """Everything the worker keeps for one account (the unit of snapshot and hand-over)."""

    account: str
    book: AccountBook
    machine: ScopeState
    model: OrderFlowModel
    seen_orders: IdMemory
    seen_execs: IdMemory
    strategies: dict[str, ScopeState] = field(default_factory=dict)
    messages: deque[int] = field(default_factory=deque)
    strategy_messages: dict[str, deque[int]] = field(default_factory=dict)
    throttle_hits: deque[int] = field(default_factory=deque)
    recent: dict[tuple[Any, ...], tuple[int, str]] = field(default_factory=dict)
    recent_order: deque[tuple[int, tuple[Any, ...]]] = field(default_factory=deque)
    breach_levels: dict[str, BreachLevel] = field(default_factory=dict)
    last_publish_ts: int | None = None
    risk_figures: tuple[float, float, float, float] | None = None
    """(VaR 95, ES 97.5, days to liquidate, liquidity cost) as last computed."""
    largest_share: float = 0.0
    marked_upto: int = 0
    """Table updates already looked at (a count local to this worker, see _mark)."""
    pending_marks: set[str] = field(default_factory=set)
    last_ts: int = 0
    contributed_to: tuple[str, ...] = ()
    """The desk and firm the last ScopeContributions went to: one the account has left since
    gets a withdrawal."""
    version: int = SNAPSHOT_VERSION


@dataclass
class _CachedLimits:
    version: int
    start: int
    end: int
    scopes: OrderScopes
    resolved: dict[str, EffectiveLimit]


class _OrderLimits:
    """The effective limits of one order, resolved on first use per metric and group.

    A class rather than a recursive closure: a closure that calls itself is a reference
    cycle, left for the garbage collector on every order, and those collections landed
    inside the timed pre-trade gate.
    """

    __slots__ = ("book", "groups", "per_order", "scopes", "ts")

    def __init__(self, book: LimitBook, scopes: OrderScopes, ts: int,
                 groups: dict[str, dict[str, EffectiveLimit]],
                 per_order: dict[str, EffectiveLimit]) -> None:
        self.book, self.scopes, self.ts = book, scopes, ts
        self.groups, self.per_order = groups, per_order

    def __call__(self, metric: str, group: Group) -> EffectiveLimit:
        if group == "order":
            found = self.per_order.get(metric)
            if found is None:
                found = self.per_order[metric] = tightest(
                    tightest(self(metric, "account"), self(metric, "strategy")),
                    self(metric, "instrument"))
            return found
        resolved = self.groups[group]
        found = resolved.get(metric)
        if found is None:
            found = resolved[metric] = self.book.resolve(metric, self.scopes, self.ts, group)
        return found


def _prune(window: deque[int], since: int) -> None:
    while window and window[0] <= since:
        window.popleft()


class OrderRiskProcessor(DispatchByType):
    """Order and account risk for the `order-worker` (see the module docstring).

    `clock` times the gate for `decision_latency_ns` only; it never affects a decision.
    """

    name = NAME
    table_types: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "risk.instruments": ("InstrumentRisk",), "risk.limits": ("LimitConfig",),
        "risk.control": ("TradingStateCommand",), "risk.scopes": ("ScopeRisk",)}
    tables: tuple[str, ...] = tuple(table_types)
    """Side tables (engine.processor.TableProcessor): read in full by every worker."""

    def __init__(self, config: OrderConfig | None = None, *, publish_scope_events: bool = True,
                 clock: Callable[[], int] = time.perf_counter_ns) -> None:
        self.config = config or OrderConfig()
        self.publish_scope_events = publish_scope_events
        self._clock = clock
        self.accounts: dict[str, AccountState] = {}
        self.instruments: AsOfTable[InstrumentRisk] = AsOfTable(
            self.config.instrument_history, self.config.instrument_history_ns)
        cov = self.config.covariance
        self.covariance = EwmaCovariance(cov.lam, cov.bucket_ns, cov.min_obs, cov.versions)
        self.limits = LimitBook(defaults=dict(self.config.default_limits))
        self.scope_states: dict[str, ScopeState] = {}
        self.commands: dict[str, TradingStateCommand] = {}
        self.scope_risk: dict[str, ScopeRisk] = {}
        """The latest ScopeRisk per desk and firm (the aggregation stage's published state)."""
        self._account_commands: dict[str, dict[str, TradingStateCommand]] = {}
        self._dirty: set[str] = set()
        self._limit_cache: dict[tuple[str, ...], _CachedLimits] = {}
        self._latest: dict[str, InstrumentRisk] = {}
        # symbols of the table updates in arrival order (_ref_log_start = index of its first
        # entry): an account re-marks only what changed since it last looked
        self._ref_log: list[str] = []
        self._ref_log_start = 0
        self._ref_count = 0
        self._handlers: dict[str, Callable[[Any], list[Output]]] = {
            "OrderNew": self._on_order, "OrderReplace": self._on_order,
            "OrderCancel": self._on_cancel, "ExecutionReport": self._on_execution,
            "MassCancel": self._on_mass_cancel, "InstrumentRisk": self._on_instrument,
            "LimitConfig": self._on_limit, "TradingStateCommand": self._on_command,
            "ScopeRisk": self._on_scope_risk,
        }

    @classmethod
    def from_settings(cls, settings: Any, config: OrderConfig | None = None,
                      **kwargs: Any) -> OrderRiskProcessor:
        """With the `[orders]` section of the settings (ValueError with one line when a
        field is wrong) and the fail-closed switch, unless that section sets it itself."""
        section = dict(settings.orders)
        section.setdefault("fail_closed_on_missing_reference",
                           settings.fail_closed_on_missing_reference)
        cfg = from_section(OrderConfig, section, "orders") if config is None else \
            config.model_copy(update={"fail_closed_on_missing_reference":
                                      section["fail_closed_on_missing_reference"]})
        return cls(cfg, **kwargs)

    # --- Processor protocol ---------------------------------------------------------------

    def key_of(self, event: Envelope) -> str | None:
        return event.account if isinstance(event, OrderEvent) else None

    def output_owner(self, output: Output) -> str | None:
        """The account (state key) an output belongs to, or None for a firm-, desk- or
        instrument-wide output that every worker computes alike (audit echoes, rejections,
        scope transitions): those should be published by one worker only."""
        value = output.value
        account = getattr(value, "account", None)
        if isinstance(account, str):
            return account
        if isinstance(value, TradingStateChanged):
            kind = scope_kind(value.scope)
            if kind == "account":
                return scope_id(value.scope)
            if kind == "strategy":
                return scope_id(value.scope).split("/", 1)[0]
        if isinstance(value, RiskAlert) and value.entity_kind == "account":
            return value.entity
        return None

    def dirty_keys(self) -> set[str]:
        keys, self._dirty = self._dirty, set()
        return keys

    def snapshot(self, key: str) -> bytes | None:
        state = self.accounts.get(key)
        return None if state is None else pickle.dumps(state, protocol=5)

    def restore(self, key: str, data: bytes | None) -> None:
        if data is None:
            self.accounts.pop(key, None)
            return
        state = load_state(data, AccountState, SNAPSHOT_VERSION, key)
        state.marked_upto = -1  # a position in another worker's table log: mark everything
        self.accounts[key] = state

    def evict(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.accounts.pop(key, None)
            self._dirty.discard(key)

    # --- table introspection (for the runtime's event-time alignment) ----------------------

    def instrument_watermark(self, symbol: str) -> int | None:
        """Event time of the newest InstrumentRisk seen for `symbol` (None: never seen)."""
        return self.instruments.watermark(symbol)

    def instrument_as_of(self, symbol: str, ts: int) -> InstrumentRisk | None:
        return self.instruments.as_of(symbol, ts)

    # --- event-time join (engine.temporal_join; used by the Kafka runtime) -----------------

    aligned_tables: tuple[str, ...] = ("risk.instruments",)
    """Tables applied in event time: an order waits until they have caught up with it.
    Limits and commands are not: they apply to every order decided after they arrive."""

    def table_key(self, topic: str, event: Envelope) -> str | None:
        """The key an aligned table event advances (the instrument)."""
        return event.symbol if isinstance(event, InstrumentRisk) else None

    def hold_needs(self, event: Envelope) -> tuple[str, ...]:
        """Instruments whose risk an input event reads as of its time: the order's (or
        fill's) instrument and every instrument its account holds (marked at each event)."""
        if not isinstance(event, OrderEvent) or isinstance(event, MassCancel):
            return ()
        st = self.accounts.get(event.account)
        held = tuple(sorted(st.book.held)) if st is not None else ()
        symbol = None if isinstance(event, OrderCancel) else getattr(event, "symbol", None)
        if symbol is None or symbol in held:
            return held
        return (symbol, *held)

    # --- helpers --------------------------------------------------------------------------

    def _env(self, cause: Envelope, rule: str) -> dict[str, Any]:
        return output_envelope(cause, rule, self.name)

    def _new_state(self, account: str) -> AccountState:
        cfg = self.config
        return AccountState(
            account=account, book=AccountBook(account),
            machine=ScopeState(f"account:{account}", auto_recover=cfg.auto_recover),
            model=OrderFlowModel(cfg.personal), seen_orders=IdMemory(cfg.order_id_memory),
            seen_execs=IdMemory(cfg.exec_id_memory))

    def _account(self, account: str, cause: Envelope) -> tuple[AccountState, list[Output]]:
        """The account's state, created on first sight; pending commands are applied."""
        st = self.accounts.get(account)
        if st is None:
            st = self.accounts[account] = self._new_state(account)
        self._dirty.add(account)
        out: list[Output] = []
        cmd = self.commands.get(st.machine.scope)
        if cmd is not None and cmd.event_id != st.machine.last_command_id \
                and cmd.ts_event >= st.machine.last_command_ts:
            out += self._apply_account_command(st, cmd, None)
        for scope, cmd in sorted(self._account_commands.get(account, {}).items()):
            strategy = scope_id(scope).split("/", 1)[1]
            machine = st.strategies.get(strategy)
            if machine is None or (cmd.event_id != machine.last_command_id
                                   and cmd.ts_event >= machine.last_command_ts):
                out += self._apply_account_command(st, cmd, strategy)
        return st, out

    def _scope_machine(self, scope: str) -> ScopeState:
        """A firm, desk or instrument machine (instruments get the hysteresis settings)."""
        cfg = self.config
        return ScopeState(scope, auto_recover=cfg.auto_recover,
                          min_reducing_ns=cfg.instrument_min_reducing_ns
                          if scope_kind(scope) == "instrument" else 0)

    def _strategy_machine(self, st: AccountState, strategy: str) -> ScopeState:
        machine = st.strategies.get(strategy)
        if machine is None:
            machine = st.strategies[strategy] = ScopeState(
                strategy_scope(st.account, strategy), auto_recover=self.config.auto_recover)
        return machine

    def _refresh(self, st: AccountState, ts: int, extra: str | None = None) -> float:
        """Roll the trading day and mark the book with prices as of `ts`; the day PnL."""
        book = st.book
        day = self.config.day_of(ts)
        if book.day is None or day > book.day:
            if book.day is not None:
                day_start = day * 86_400_000_000_000 - self.config.day_offset_ns
                self._mark(st, day_start - 1, full=True)
            book.roll_day(day)
        self._mark(st, ts, extra)
        _, day_pnl = book.update_path()
        st.last_ts = max(st.last_ts, ts)
        return day_pnl

    def _pre_trade_state(self, st: AccountState, cause: Envelope, day_pnl: float,
                         limit: Callable[[str, Group], EffectiveLimit]) -> list[Output]:
        """Evaluate the account's state drivers at the order's time, before the gate, so an
        order is judged against the state its own event time implies (prices just marked)."""
        ts = cause.ts_event
        _prune(st.throttle_hits, ts - self.config.throttle_hits_window_ns)
        book = st.book
        values = {"day_loss": max(0.0, -day_pnl), "drawdown_intraday": book.drawdown_intraday,
                  "drawdown_trailing": book.drawdown_trailing,
                  "anomaly_score": st.model.score_ewma,
                  "throttle_hits": float(len(st.throttle_hits))}
        readings = []
        for metric in STATE_METRICS:
            lim = limit(metric, "account")
            if lim.empty:
                continue
            # VaR changes with positions: the figure of the last fill or publication is used
            value = values[metric] if metric != "var_95" else (
                st.risk_figures[0] if st.risk_figures is not None else 0.0)
            readings.append(Reading(metric, value, lim.soft, lim.hard))
        transition = st.machine.evaluate(readings, ts)
        return [] if transition is None else self._transition_outputs(st, transition, cause)

    def _ref(self, symbol: str, ts: int) -> InstrumentRisk | None:
        """Instrument risk as of event time `ts` (the newest snapshot when it is not later)."""
        latest = self._latest.get(symbol)
        if latest is not None and latest.ts_event <= ts:
            return latest
        return self.instruments.as_of(symbol, ts)

    def _mark(self, st: AccountState, ts: int, extra: str | None = None, *,
              full: bool = False) -> None:
        """Mark the account's symbols with prices as of `ts`.

        Only symbols whose instrument risk changed since the account's last marking are
        read again (from the log of table updates), plus those whose newest snapshot was
        still in the future last time; anything unusual (events going back in time, a log
        that moved on) marks every symbol.
        """
        book = st.book
        start = self._ref_log_start
        new = self._ref_count - st.marked_upto
        if full or ts < st.last_ts or st.marked_upto < start or new > len(book.held):
            symbols = set(book.held) | st.pending_marks
        else:
            symbols = set(self._ref_log[st.marked_upto - start:]) | st.pending_marks
        if extra is not None:
            symbols.add(extra)
        st.marked_upto = self._ref_count
        pending = st.pending_marks
        held = book.held
        for symbol in sorted(symbols):  # sorted: the order of float updates is fixed
            latest = self._latest.get(symbol)
            if latest is None:
                continue
            if latest.ts_event <= ts:
                pending.discard(symbol)
                if symbol in held or symbol == extra:
                    book.mark(symbol, latest.price)
                continue
            # a newer snapshot exists but lies after `ts`: read as of `ts`, look again later
            # (even if the symbol is not held yet: the order being decided may add it)
            pending.add(symbol)
            if symbol in held or symbol == extra:
                ref = self.instruments.as_of(symbol, ts)
                if ref is not None:
                    book.mark(symbol, ref.price)

    def _effective_state(self, st: AccountState, scopes: OrderScopes,
                         strategy: str | None) -> tuple[TradingState, str, str]:
        """The most restrictive state over the order's scopes, with its scope and cause.

        Desk and firm count twice: the aggregation stage's published state (ScopeRisk on
        `risk.scopes`) and this worker's command-driven machine (a kill halts at once, before
        the stage has published it). On a tie the scope found first (broadest) is named.
        """
        candidates: list[tuple[TradingState, str, str]] = []
        ancestors = list(reversed(scopes.ancestors))  # broadest first
        if scopes.firm is None:  # fail-safe: a firm-wide state reaches accounts with no firm
            firms = {s for s in self.scope_states if scope_kind(s) == "firm"}
            firms |= {s for s in self.scope_risk if scope_kind(s) == "firm"}
            ancestors += sorted(firms)
        for scope in ancestors:
            published = self.scope_risk.get(scope)
            if published is not None:
                candidates.append((published.trading_state, scope, published.state_cause))
            machine = self.scope_states.get(scope)
            if machine is not None:
                candidates.append((machine.state, scope, machine.cause))
        candidates.append((st.machine.state, st.machine.scope, st.machine.cause))
        if strategy is not None and strategy in st.strategies:
            m = st.strategies[strategy]
            candidates.append((m.state, m.scope, m.cause))
        machine = self.scope_states.get(scopes.instrument)
        if machine is not None:
            candidates.append((machine.state, machine.scope, machine.cause))
        worst = (TradingState.ACTIVE, "", "")
        for candidate in candidates:
            if RANK[candidate[0]] > RANK[worst[0]]:
                worst = candidate
        return worst

    def _group_limits(self, key: tuple[str, ...], scopes: OrderScopes, group: Group,
                      ts: int) -> dict[str, EffectiveLimit]:
        """Resolved limits of one group, cached until the book changes or `ts` leaves the
        interval in which no override starts or stops applying."""
        book = self.limits
        entry = self._limit_cache.get(key)
        if entry is None or entry.version != book.version or not entry.start <= ts < entry.end:
            if len(self._limit_cache) >= 100_000:
                self._limit_cache.clear()
            start, end = book.validity(ts)
            entry = self._limit_cache[key] = _CachedLimits(book.version, start, end, scopes, {})
        return entry.resolved

    def _limits_for(self, account: str, strategy: str, symbol: str, ts: int
                    ) -> tuple[OrderScopes, Callable[[str, Group], EffectiveLimit]]:
        """The scopes of an order and a lookup of its effective limits at `ts`.

        Each group is cached on its own key (account; account and strategy; symbol), and
        the per-order group is the tightest of the three, which is what resolving over all
        its levels gives.
        """
        book = self.limits
        skey = ("scopes", account, strategy)
        cached = self._limit_cache.get(skey)
        if cached is None or cached.version != book.version:
            cached = self._limit_cache[skey] = _CachedLimits(
                book.version, 0, 0, book.order_scopes(account, strategy, symbol), {})
        scopes = cached.scopes
        if scopes.instrument != f"instrument:{symbol}":
            scopes = OrderScopes(scopes.account, scopes.strategy, f"instrument:{symbol}",
                                 scopes.ancestors, scopes.account_factor,
                                 scopes.strategy_factor)
        groups = {
            "account": self._group_limits(("account", account), scopes, "account", ts),
            "strategy": self._group_limits(("strategy", account, strategy), scopes,
                                           "strategy", ts),
            "instrument": self._group_limits(("instrument", symbol), scopes, "instrument", ts),
        }
        per_order = self._group_limits(("order", account, strategy, symbol), scopes, "order", ts)
        return scopes, _OrderLimits(book, scopes, ts, groups, per_order)

    # --- orders ---------------------------------------------------------------------------

    def _on_order(self, ev: OrderNew | OrderReplace) -> list[Output]:
        st, out = self._account(ev.account, ev)
        if st.seen_orders.seen_or_add(ev.event_id):
            return out  # the same order event again: it was decided already
        t0 = self._clock()
        cfg = self.config
        ts = ev.ts_event
        day_pnl = self._refresh(st, ts, ev.symbol)
        book = st.book
        ref = self._ref(ev.symbol, ts)
        scopes, limit = self._limits_for(ev.account, ev.strategy, ev.symbol, ts)
        out += self._pre_trade_state(st, ev, day_pnl, limit)
        state, state_scope, cause = self._effective_state(st, scopes, ev.strategy)

        # rate windows count every order message, this one included
        since = ts - cfg.throttle_window_ns
        _prune(st.messages, since)
        st.messages.append(ts)
        strat_window = st.strategy_messages.setdefault(ev.strategy, deque())
        _prune(strat_window, since)
        strat_window.append(ts)

        content = (ev.symbol, ev.side.value, ev.ord_type.value, ev.price, ev.qty, ev.strategy)
        horizon = ts - cfg.duplicate_window_ns
        while st.recent_order and st.recent_order[0][0] <= horizon:
            old_ts, old_key = st.recent_order.popleft()
            if st.recent.get(old_key, (None,))[0] == old_ts:
                del st.recent[old_key]
        dup = st.recent.get(content)
        replaces = book.open_orders.get(ev.orig_cl_ord_id) \
            if isinstance(ev, OrderReplace) else None

        px = ev.price if ev.price is not None else (ref.price if ref is not None else None)
        distance = None
        if ref is not None and ev.price is not None:
            distance = abs(ev.price - ref.price) / (max(ref.vol, cfg.collar_min_vol) * ref.price)
        features = st.model.features(qty=ev.qty, notional=ev.qty * (px or 0.0),
                                     adv=ref.adv if ref is not None else None,
                                     price_distance_vol=distance, ts=ts)
        score = st.model.score_one(features)
        gate = GateInput(
            order=OrderView(ev.account, ev.strategy, ev.symbol, ev.side, ev.qty, ev.price,
                            ev.cl_ord_id, ts, ev.ord_type, replaces),
            ref=ref, book=book, config=cfg, limit=limit, trading_state=state,
            state_scope=state_scope, state_cause=cause, account_messages=len(st.messages),
            strategy_messages=len(strat_window),
            duplicate_of=dup[1] if dup is not None and dup[0] > horizon else None,
            personal_qty=st.model.suggest_limit("order_qty", limit("order_qty", "order").hard),
            personal_notional=st.model.suggest_limit("order_notional",
                                                     limit("order_notional", "order").hard),
            exposure=book.exposure(),
            ref_kept_since=self.instruments.kept_since(ev.symbol) if ref is None else None)
        result = evaluate(gate)
        accepted = result.accepted
        if accepted:
            if replaces is not None:
                book.remove_order(replaces.cl_ord_id)
            book.add_order(OpenOrder(ev.cl_ord_id, ev.symbol, ev.side, ev.qty, ev.price,
                                     ev.strategy, ts))
            st.recent[content] = (ts, ev.cl_ord_id)
            st.recent_order.append((ts, content))
        # Validated like every output: pydantic-core's validation (8 µs here) is cheaper than
        # model_construct's Python-level field handling (14 µs), so skipping it saved nothing.
        decision = RiskDecision(
            **self._env(ev, "DECISION"), account=ev.account, strategy=ev.strategy,
            symbol=ev.symbol, cl_ord_id=ev.cl_ord_id, order_event_id=ev.event_id,
            decision=Decision.ACCEPT if accepted else Decision.DENY,
            reason_codes=result.reason_codes, checks=[f.result for f in result.failures],
            warnings=[f.result for f in result.warnings], trading_state=state,
            decision_latency_ns=self._clock() - t0)
        out.append(Output(RiskDecision.TOPIC, ev.account, decision))

        # learn after scoring, then the consequences of this order
        st.model.learn_one(features, ts)
        st.model.observe_score(score.score)
        if score.unusual:
            out.append(self._unusual_alert(ev, score))
        if any(f.result.code == RATE_THROTTLE for f in result.failures):
            st.throttle_hits.append(ts)
        out += self._order_breaches(st, ev, result.failures + result.warnings, scopes)
        change = result.account_change
        exposure = None if change is None else (change.after if accepted else change.before)
        out += self._monitor(st, ev, scopes, limit, publish=False, exposure=exposure)
        return out

    def _unusual_alert(self, ev: OrderNew | OrderReplace, score: PersonalScore) -> Output:
        names = ", ".join(f"{n} z={z:.1f}" for n, _, z in score.top)
        alert = RiskAlert(
            **self._env(ev, "ORDER_UNUSUAL"), reason_code="ORDER_UNUSUAL",
            severity=Severity.WARNING, entity=ev.account, entity_kind="account",
            observed=score.score, threshold=0.5,
            message=f"order {ev.cl_ord_id} on {ev.symbol} is unusual for account {ev.account}"
                    f" ({names})",
            features=[FeatureContribution(name=n, value=v, contribution=z)
                      for n, v, z in score.top],
            model="personal-orderflow", cause_event_id=ev.event_id)
        return Output(RiskAlert.TOPIC, ev.account, alert)

    def _breach(self, st: AccountState, cause: Envelope, metric: str, level: BreachLevel | None,
                observed: float, limit: float | None, scope: str | None,
                message: str) -> Output | None:
        """A LimitBreach when `metric`'s level rose since the last report."""
        previous = st.breach_levels.get(metric)
        if level is None:
            st.breach_levels.pop(metric, None)
            return None
        st.breach_levels[metric] = level
        if previous is level or previous is BreachLevel.HARD or limit is None:
            return None
        where = scope if scope and scope != "default" else f"account:{st.account}"
        breach = LimitBreach(**self._env(cause, f"BREACH:{metric}:{level.value}"),
                             account=st.account, scope=where, metric=metric, level=level,
                             observed=observed, limit=limit, message=message[:1000])
        return Output(LimitBreach.TOPIC, st.account, breach)

    def _order_breaches(self, st: AccountState, ev: Envelope, findings: list[Finding],
                        scopes: OrderScopes) -> list[Output]:
        by_metric: dict[str, Finding] = {}
        for f in findings:
            if f.metric in PER_ORDER_METRICS:
                best = by_metric.get(f.metric)
                if best is None or (f.hard and not best.hard):
                    by_metric[f.metric] = f
        out = []
        for metric in PER_ORDER_METRICS:
            hit = by_metric.get(metric)
            if hit is None:
                breach = self._breach(st, ev, metric, None, 0.0, None, None, "")
            else:
                breach = self._breach(st, ev, metric,
                                      BreachLevel.HARD if hit.hard else BreachLevel.SOFT,
                                      hit.result.observed or 0.0, hit.result.limit, hit.source,
                                      hit.result.message)
            if breach is not None:
                out.append(breach)
        return out

    # --- account monitoring ---------------------------------------------------------------

    def _var(self, st: AccountState, ts: int) -> tuple[float, float, float, float]:
        """(VaR 95, ES 97.5, days to liquidate, liquidity cost) of the account at `ts`."""
        positions = st.book.signed_positions()
        if not positions:
            return 0.0, 0.0, 0.0, 0.0
        symbols = [s for s, _ in positions]
        exposures, var_f, es_f, advs, spreads = [], [], [], [], []
        fallback = self.config.missing_var_fraction
        for symbol, qty in positions:
            ref = self._ref(symbol, ts)
            exposures.append(qty * st.book.price(symbol))
            var_f.append(ref.var_95 if ref is not None else fallback)
            es_f.append(ref.es_975 if ref is not None else fallback)
            advs.append(ref.adv if ref is not None else None)
            spreads.append(ref.spread_bps if ref is not None else None)
        corr = self.covariance.correlation(symbols, ts) if len(symbols) > 1 else _ONE
        days, cost = liquidity([q for _, q in positions], advs, exposures, spreads,
                               self.config.liquidation_participation)
        return (portfolio_var(exposures, var_f, corr), portfolio_var(exposures, es_f, corr),
                days, cost)

    def _monitor(self, st: AccountState, cause: Envelope, scopes: OrderScopes | None,
                 limit: Callable[[str, Group], EffectiveLimit] | None, *, publish: bool,
                 force_state: bool = False, exposure: Exposure | None = None) -> list[Output]:
        """Breaches, state transitions and (when due) the AccountRisk snapshot."""
        ts = cause.ts_event
        cfg = self.config
        if scopes is None or limit is None:
            scopes, limit = self._limits_for(st.account, "default", "-", ts)
        book = st.book
        capital = self.limits.capital(scopes, ts, cfg.default_capital)
        due = (st.last_publish_ts is None
               or ts - st.last_publish_ts >= cfg.account_publish_interval_ns)
        # VaR and concentration are O(positions): they are recomputed on fills, commands and
        # publications; between those an order or a cancel uses the last figures (positions
        # have not changed, only marks have).
        full = publish or force_state or due or st.risk_figures is None
        if full:
            st.risk_figures = self._var(st, ts)
            metrics = book.metrics(capital)
            st.largest_share = metrics.largest_share
        else:
            metrics = book.metrics(capital, largest_share=st.largest_share)
        assert st.risk_figures is not None
        var95, es975, days, cost = st.risk_figures
        if exposure is None:
            exposure = book.exposure()
        _prune(st.throttle_hits, ts - cfg.throttle_hits_window_ns)
        observed = {
            "position_long": exposure.long, "position_short": exposure.short,
            "gross_exposure": exposure.gross, "net_exposure": exposure.net,
            "credit": exposure.long + exposure.short + max(0.0, -metrics.total_pnl),
            "leverage": metrics.leverage,
            "concentration": metrics.largest_share,
            "day_loss": max(0.0, -metrics.day_pnl),
            "drawdown_intraday": metrics.drawdown_intraday,
            "drawdown_trailing": metrics.drawdown_trailing, "var_95": var95,
            "anomaly_score": st.model.score_ewma, "throttle_hits": float(len(st.throttle_hits)),
        }
        out: list[Output] = []
        readings = []
        levels = st.breach_levels
        for metric in MONITORED_METRICS:
            lim = limit(metric, "account")
            value = observed[metric]
            if metric in STATE_METRICS:
                readings.append(Reading(metric, value, lim.soft, lim.hard))
            if lim.hard is not None and value > lim.hard + EPS:
                level, bound, source = BreachLevel.HARD, lim.hard, lim.hard_source
            elif lim.soft is not None and value > lim.soft + EPS:
                level, bound, source = BreachLevel.SOFT, lim.soft, lim.soft_source
            else:
                if metric in levels:
                    del levels[metric]  # back under the soft level: re-armed
                continue
            previous = levels.get(metric)
            if previous is level or previous is BreachLevel.HARD:
                levels[metric] = level  # reported already (a drop to soft is not news)
                continue
            breach = self._breach(st, cause, metric, level, value, bound, source,
                                  f"{metric} {value:.6g} above the {level.value} limit "
                                  f"{bound:.6g}")
            if breach is not None:
                out.append(breach)
        transition = st.machine.evaluate(readings, ts)
        if transition is not None:
            out += self._transition_outputs(st, transition, cause)
        state = st.machine.state
        if full or transition is not None:
            if not full:
                st.risk_figures = self._var(st, ts)
                var95, es975, days, cost = st.risk_figures
                metrics = book.metrics(capital)
                st.largest_share = metrics.largest_share
            st.last_publish_ts = ts
            positions = [PositionRisk(
                symbol=s, qty=p.qty, avg_cost=p.avg_cost, mark=book.price(s),
                market_value=p.qty * book.price(s),
                unrealized_pnl=p.qty * (book.price(s) - p.avg_cost), realized_pnl=p.realized)
                for s, p in sorted(book.positions.items())]
            snapshot = AccountRisk(
                **self._env(cause, f"ACCOUNT_RISK:{st.account}"), account=st.account,
                desk=scope_id(scopes.desk) if scopes.desk else None,
                firm=scope_id(scopes.firm) if scopes.firm else None,
                trading_state=state, positions=positions,
                realized_pnl=metrics.realized_pnl, unrealized_pnl=metrics.unrealized_pnl,
                day_pnl=metrics.day_pnl, gross_exposure=metrics.gross_exposure,
                net_exposure=metrics.net_exposure, long_exposure=metrics.long_exposure,
                short_exposure=metrics.short_exposure, leverage=metrics.leverage,
                hhi=metrics.hhi, largest_share=metrics.largest_share,
                drawdown_intraday=max(0.0, metrics.drawdown_intraday),
                drawdown_trailing=max(0.0, metrics.drawdown_trailing), var_95=var95,
                es_975=es975, open_order_notional=metrics.open_order_notional,
                counterparty_exposure=metrics.counterparty_exposure,
                time_to_liquidate_days=days, liquidity_adjusted_var=var95 + cost,
                anomaly_score=min(1.0, max(0.0, st.model.score_ewma)))
            out.append(Output(AccountRisk.TOPIC, st.account, snapshot))
            out += self._contributions(st, snapshot, scopes, cause)
        return out

    def _contributions(self, st: AccountState, snapshot: AccountRisk, scopes: OrderScopes,
                       cause: Envelope) -> list[Output]:
        """The account's figures for the aggregation stage of each desk and firm above it
        (one ScopeContribution per scope, keyed by the scope), and a withdrawal for each
        scope it contributed to last time and has left since (moved on `risk.limits`)."""
        out: list[Output] = []
        now = tuple(scope for scope in (scopes.desk, scopes.firm) if scope is not None)
        for scope in st.contributed_to:
            if scope not in now:
                withdrawal = ScopeContribution(
                    **self._env(cause, f"SCOPE_WITHDRAWN:{scope}"), scope=scope,
                    account=snapshot.account, withdrawn=True)
                out.append(Output(ScopeContribution.TOPIC, scope, withdrawal))
        st.contributed_to = now
        figures = {name: getattr(snapshot, name) for name in SCOPE_FIGURES}
        for scope in now:
            contribution = ScopeContribution(
                **self._env(cause, f"SCOPE_CONTRIBUTION:{scope}"), scope=scope,
                account=snapshot.account, trading_state=snapshot.trading_state, **figures)
            out.append(Output(ScopeContribution.TOPIC, scope, contribution))
        return out

    def _transition_outputs(self, st: AccountState | None, tr: Transition, cause: Envelope,
                            *, publish: bool = True) -> list[Output]:
        out: list[Output] = []
        if publish:
            changed = TradingStateChanged(
                **self._env(cause, f"STATE:{tr.scope}:{tr.to_state.value}"), scope=tr.scope,
                from_state=tr.from_state, to_state=tr.to_state, cause=tr.cause[:500],
                metric=tr.metric, observed=tr.observed, threshold=tr.threshold, actor=tr.actor)
            out.append(Output(TradingStateChanged.TOPIC, tr.scope, changed))
        if st is not None and tr.to_state is TradingState.HALTED and tr.actor is None \
                and self.config.cancel_on_halt:
            out += self._mass_cancel(st, cause, tr.scope, None, tr.cause, self.name, always=False)
        return out

    def _mass_cancel(self, st: AccountState, cause: Envelope, scope: str, symbol: str | None,
                     reason: str, requested_by: str, *, always: bool) -> list[Output]:
        """Cancel the account's open orders in `scope` (submitted up to the cause's time)."""
        strategy = scope_id(scope).split("/", 1)[1] if scope_kind(scope) == "strategy" else None
        orders = st.book.open_orders_in(strategy=strategy, symbol=symbol,
                                        up_to_ts=cause.ts_event)
        if not orders and not always:
            return []
        for order in orders:
            st.book.remove_order(order.cl_ord_id)
        self._dirty.add(st.account)
        cancel = MassCancel(**self._env(cause, f"MASS_CANCEL:{st.account}:{scope}"),
                            account=st.account, scope=scope, symbol=symbol,
                            reason=reason[:500] or "mass cancel", requested_by=requested_by)
        return [Output(MassCancel.TOPIC, st.account, cancel)]

    # --- cancels, executions, mass cancels ------------------------------------------------

    def _on_cancel(self, ev: OrderCancel) -> list[Output]:
        st, out = self._account(ev.account, ev)
        if st.seen_orders.seen_or_add(ev.event_id):
            return out
        self._refresh(st, ev.ts_event)
        _prune(st.messages, ev.ts_event - self.config.throttle_window_ns)
        st.messages.append(ev.ts_event)
        order = st.book.remove_order(ev.orig_cl_ord_id)
        if order is not None:
            window = st.strategy_messages.setdefault(order.strategy, deque())
            _prune(window, ev.ts_event - self.config.throttle_window_ns)
            window.append(ev.ts_event)
        st.model.learn_cancel()
        return out + self._monitor(st, ev, None, None, publish=False)

    def _on_execution(self, ev: ExecutionReport) -> list[Output]:
        st, out = self._account(ev.account, ev)
        if st.seen_execs.seen_or_add(ev.exec_id):
            return out  # a duplicate execution report changes nothing
        book = st.book
        self._refresh(st, ev.ts_event, ev.symbol)
        fill = ev.exec_type in (ExecType.PARTIAL_FILL, ExecType.FILL)
        if fill:
            assert ev.last_px is not None
            order = book.open_orders.get(ev.cl_ord_id)
            book.apply_fill(ev.symbol, ev.side, ev.last_qty, ev.last_px,
                            order.strategy if order is not None else "default",
                            ev.counterparty)
            book.set_leaves(ev.cl_ord_id, ev.leaves_qty)
            self._mark(st, ev.ts_event, ev.symbol)
            book.update_path()
        elif ev.exec_type is ExecType.NEW:
            if ev.cl_ord_id not in book.open_orders and ev.leaves_qty > EPS:
                book.add_order(OpenOrder(ev.cl_ord_id, ev.symbol, ev.side, ev.leaves_qty, None,
                                         "default", ev.ts_event))
        elif ev.exec_type is ExecType.REPLACED:
            book.set_leaves(ev.cl_ord_id, ev.leaves_qty)
        else:  # canceled, expired, rejected: the order is gone
            book.remove_order(ev.cl_ord_id)
        return out + self._monitor(st, ev, None, None, publish=fill)

    def _on_mass_cancel(self, ev: MassCancel) -> list[Output]:
        st, out = self._account(ev.account, ev)
        if st.seen_orders.seen_or_add(ev.event_id):
            return out
        strategy = scope_id(ev.scope).split("/", 1)[1] \
            if scope_kind(ev.scope) == "strategy" else None
        symbol = ev.symbol or (scope_id(ev.scope) if scope_kind(ev.scope) == "instrument"
                               else None)
        for order in st.book.open_orders_in(strategy=strategy, symbol=symbol,
                                            up_to_ts=ev.ts_event):
            st.book.remove_order(order.cl_ord_id)
        return out

    # --- tables ---------------------------------------------------------------------------

    def _on_instrument(self, ev: InstrumentRisk) -> list[Output]:
        self.instruments.put(ev.symbol, ev.ts_event, ev)
        self._ref_log.append(ev.symbol)
        self._ref_count += 1
        if len(self._ref_log) > 2 * _REF_LOG:
            del self._ref_log[:_REF_LOG]
            self._ref_log_start += _REF_LOG
        latest = self._latest.get(ev.symbol)
        if latest is None or ev.ts_event >= latest.ts_event:
            self._latest[ev.symbol] = ev
        self.covariance.update(ev.symbol, ev.price, ev.ts_event)
        cfg = self.config
        scope = f"instrument:{ev.symbol}"
        machine = self.scope_states.get(scope)
        if machine is None:
            machine = self.scope_states[scope] = self._scope_machine(scope)
        readings = [
            Reading("stale_data", 1.0 if ev.stale else 0.0,
                    0.5 if cfg.stale_reduces_instrument else None, None),
            Reading("anomaly_score", ev.anomaly_score, cfg.instrument_anomaly_reduce,
                    cfg.instrument_anomaly_halt, cfg.instrument_anomaly_recover),
        ]
        tr = machine.evaluate(readings, ev.ts_event)
        if tr is None:
            return []
        out = self._transition_outputs(None, tr, ev, publish=self.publish_scope_events)
        if tr.to_state is TradingState.HALTED and cfg.cancel_on_halt:
            for account in sorted(self.accounts):
                st = self.accounts[account]
                out += self._mass_cancel(st, ev, scope, ev.symbol, tr.cause, self.name,
                                         always=False)
        return out

    def _rejected(self, cause: Envelope, code: str, scope: str, reason: str) -> list[Output]:
        alert = RiskAlert(**self._env(cause, code), reason_code=code, severity=Severity.WARNING,
                          entity=scope, entity_kind="scope", observed=0.0, threshold=0.0,
                          message=f"{cause.type} for {scope} rejected: {reason}"[:1000],
                          cause_event_id=cause.event_id)
        return [Output(RiskAlert.TOPIC, scope, alert)]

    def _on_limit(self, ev: LimitConfig) -> list[Output]:
        if ev.source == self.name:
            return []  # our own audit echo read back: already applied
        result = self.limits.apply(ev)
        if not result.accepted:
            return self._rejected(ev, "LIMIT_CHANGE_REJECTED", ev.scope, result.reason)
        topic = self.config.limit_audit_topic
        if not result.changed or topic is None:
            return []
        echo = ev.model_copy(update=self._env(ev, "LIMIT_AUDIT"))
        return [Output(topic, f"{AUDIT_KEY_PREFIX}{ev.scope}/{echo.event_id}", echo)]

    def _on_command(self, cmd: TradingStateCommand) -> list[Output]:
        reason = validate_command(cmd)
        if reason is not None:
            return self._rejected(cmd, "COMMAND_REJECTED", cmd.scope, reason)
        previous = self.commands.get(cmd.scope)
        if previous is not None and (previous.event_id == cmd.event_id
                                     or cmd.ts_event < previous.ts_event):
            return []  # a repeat, or older than the command already in force
        self.commands[cmd.scope] = cmd
        kind = scope_kind(cmd.scope)
        if kind == "account":
            st = self.accounts.get(scope_id(cmd.scope))
            return [] if st is None else self._apply_account_command(st, cmd, None)
        if kind == "strategy":
            account, _, strategy = scope_id(cmd.scope).partition("/")
            self._account_commands.setdefault(account, {})[cmd.scope] = cmd
            st = self.accounts.get(account)
            return [] if st is None or not strategy else \
                self._apply_account_command(st, cmd, strategy)
        machine = self.scope_states.get(cmd.scope)
        if machine is None:
            machine = self.scope_states[cmd.scope] = self._scope_machine(cmd.scope)
        tr = machine.command(cmd)
        # desk and firm transitions are published by the aggregation stage (risk.scopes):
        # here the command only takes effect at once on this worker's accounts
        publish = self.publish_scope_events and kind not in _AGGREGATED_KINDS
        out = [] if tr is None else self._transition_outputs(None, tr, cmd, publish=publish)
        if cmd.command is StateCommand.KILL:
            symbol = scope_id(cmd.scope) if kind == "instrument" else None
            for account in sorted(self.accounts):
                if symbol is None and not self.limits.in_scope(account, cmd.scope):
                    continue
                st = self.accounts[account]
                out += self._mass_cancel(st, cmd, cmd.scope, symbol,
                                         f"kill switch by {cmd.issued_by}: {cmd.reason}",
                                         cmd.issued_by, always=False)
        return out

    def _on_scope_risk(self, ev: ScopeRisk) -> list[Output]:
        """The aggregation stage's figures and state of a desk or firm: the latest (by event
        time) gates the orders of the accounts under it from now on (fail-safe, as commands:
        applied on arrival, not as of each order's time). A move to HALTED cancels the open
        orders of this worker's accounts in the scope (`cancel_on_halt`)."""
        if scope_kind(ev.scope) not in _AGGREGATED_KINDS:
            return []
        previous = self.scope_risk.get(ev.scope)
        if previous is not None and ev.ts_event < previous.ts_event:
            return []  # older than the state in force
        self.scope_risk[ev.scope] = ev
        was = previous.trading_state if previous is not None else TradingState.ACTIVE
        if ev.trading_state is not TradingState.HALTED or was is TradingState.HALTED \
                or not self.config.cancel_on_halt:
            return []
        out: list[Output] = []
        for account in sorted(self.accounts):
            if not self.limits.in_scope(account, ev.scope):
                continue
            out += self._mass_cancel(self.accounts[account], ev, ev.scope, None,
                                     ev.state_cause or f"{ev.scope} halted", self.name,
                                     always=False)
        return out

    def _apply_account_command(self, st: AccountState, cmd: TradingStateCommand,
                               strategy: str | None) -> list[Output]:
        machine = st.machine if strategy is None else self._strategy_machine(st, strategy)
        tr = machine.command(cmd)
        self._dirty.add(st.account)
        out: list[Output] = [] if tr is None else self._transition_outputs(st, tr, cmd)
        if cmd.command is StateCommand.KILL:
            out += self._mass_cancel(st, cmd, cmd.scope, None,
                                     f"kill switch by {cmd.issued_by}: {cmd.reason}",
                                     cmd.issued_by, always=True)
        if tr is not None and strategy is None:
            out += self._monitor(st, cmd, None, None, publish=True)
        return out

