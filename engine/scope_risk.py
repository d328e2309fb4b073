"""The scope stage: desk and firm risk aggregated from their member accounts.

Accounts live on the order worker's partitions, so no order worker sees a whole desk. The
order worker therefore publishes, with every AccountRisk, one `ScopeContribution` per desk
and firm above the account to `risk.scope-accounts`, keyed by scope; `ScopeRiskProcessor`
(the `scope-worker`) consumes that topic, so every contribution of one desk lands on one
partition and one worker (DESIGN.md section 4, item 3: never shared memory between workers).

Per scope (the state key; snapshotted to `scope-worker.changelog`):

* the latest contribution of each member account (one entry per account: bounded memory).
  A contribution older than the account's current one (event time) never replaces it, the
  same one again changes nothing; at equal times the later arrival wins. An account moved
  to another desk or firm sends its old scope a withdrawal (`withdrawn`), which counts as
  that account's latest contribution with zero figures and no member;
* the aggregate: sums over those latest contributions, kept exactly (integers in units of
  the smallest float, each a correctly rounded float when read): a contribution costs the
  same whatever the number of members, and the sum does not depend on the order accounts
  arrived in. VaR and ES are summed without diversification, an upper bound. `day_pnl`
  counts only contributions of the scope's current trading day (UTC days shifted by
  `day_offset_ns`, as `engine.order_config.OrderConfig.day_of`): an account that has not
  traded today brings no PnL of an earlier day;
* the PnL path of the aggregate (today's peak of day PnL, all-time peak of total PnL), which
  gives intraday and trailing drawdown, sampled at each contribution (a withdrawal takes
  the account's share out of the peaks too: leaving is not a loss);
* the breach levels already reported, and an `engine.trading_state.ScopeState` machine.

Limits are the scope's own levels on `risk.limits` (`LimitBook.levels(scope, ts)`, override
applied while unexpired): `day_loss`, `drawdown_intraday`, `drawdown_trailing`, `var_95` and
`gross_exposure` (see `STATE_DRIVERS`); soft -> REDUCING, hard -> HALTED, HALTED left only by
an enable command. Levels of the scopes above (a firm's) bind the firm's own aggregate, not
each desk's: the firm is a scope of this stage too. Account-level defaults do not apply.

Outputs for each contribution that changed the aggregate, all derived from it
(`engine.envelope.output_envelope`; event time only, nothing from the wall clock):

* `risk.breaches`: LimitBreach when a metric's level rises (none -> soft -> hard), with the
  contributing account as `account` and the desk or firm as `scope`; re-armed once the
  metric is back under its soft level (as the order worker does);
* `risk.states`: TradingStateChanged for every transition, with its cause and numbers;
* `risk.scopes`: ScopeRisk, the aggregate and the trading state (compacted; the order
  worker reads it as a table and gates orders with the desk and firm states).

Commands (`risk.control`, kill and enable for desk and firm scopes) and limits arrive as
table events that every scope worker reads in full. A command without issuer or reason is
ignored (the order workers, which read the same topic, raise the COMMAND_REJECTED alert:
a second copy from here would carry the same event id). The latest command per scope is
kept as table state; the worker that holds the scope applies it at once and publishes the
TradingStateChanged and a ScopeRisk (`output_owner` names the scope, so the runtime puts
them in that partition's transaction); a scope nobody holds yet gets it when its first
contribution arrives. Its outputs derive from the command, whenever they are published.

Ordering: one account's contributions arrive in its order (one order-worker partition);
different accounts' contributions interleave as the order workers publish them. The final
aggregate does not depend on that interleaving; the intermediate ScopeRisk, the drawdown
path and the moment a level is crossed do, so a replay of `risk.scope-accounts` reproduces
the outputs exactly while two live runs can differ where accounts interleaved differently.

>>> from schemas.control import LimitConfig, LimitLevel
>>> from schemas.outputs import ScopeContribution
>>> p = ScopeRiskProcessor()
>>> _ = p.apply_table("risk.limits", LimitConfig(event_id="l1", ts_event=0, ts_init=0,
...     source="ops", scope="desk:D", changed_by="alice",
...     limits={"day_loss": LimitLevel(soft=100.0, hard=200.0)}))
>>> def loss(account, amount, ts):
...     return ScopeContribution(event_id=f"{account}-{ts}", ts_event=ts, ts_init=0,
...         source="order-worker", scope="desk:D", account=account, day_pnl=-amount,
...         realized_pnl=-amount)
>>> [o.value.type for o in p.process(loss("A1", 60.0, 1))]
['ScopeRisk']
>>> [o.value.type for o in p.process(loss("A2", 70.0, 2))]
['LimitBreach', 'TradingStateChanged', 'ScopeRisk']
>>> risk = p.process(loss("A2", 150.0, 3))[-1].value
>>> risk.day_pnl, risk.accounts, risk.trading_state.value
(-210.0, 2, 'halted')
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from engine.config_sections import from_section
from engine.envelope import output_envelope
from engine.limits import LimitBook
from engine.processor import DispatchByType, Output
from engine.snapshots import load_state
from engine.trading_state import Reading, ScopeState, Transition, validate_command
from schemas.common import Envelope, TradingState, scope_kind
from schemas.control import LimitConfig, TradingStateCommand
from schemas.outputs import (
    SCOPE_FIGURES,
    BreachLevel,
    LimitBreach,
    ScopeContribution,
    ScopeRisk,
    TradingStateChanged,
)

NAME = "scope-worker"
INPUT_TOPIC = "risk.scope-accounts"
SNAPSHOT_VERSION = 1
DAY_NS = 86_400_000_000_000
SCOPE_KINDS = ("desk", "firm")
"""Scope kinds this stage aggregates (accounts and below are the order worker's)."""
STATE_DRIVERS = ("day_loss", "drawdown_intraday", "drawdown_trailing", "var_95",
                 "gross_exposure")
"""Metrics of the aggregate checked against the scope's limits and driving its state."""
_REALIZED, _UNREALIZED, _DAY_PNL, _VAR_95, _GROSS = (
    SCOPE_FIGURES.index(name) for name in ("realized_pnl", "unrealized_pnl", "day_pnl",
                                           "var_95", "gross_exposure"))
_EXP = 1074  # every finite float is an integer multiple of 2**-1074
_EPS = 1e-9


@dataclass(frozen=True, slots=True)
class ScopeConfig:
    """Settings of the scope stage."""

    day_offset_ns: int = 0
    """Shift of the trading day from UTC midnight (as the order worker's `day_offset_ns`)."""
    auto_recover: bool = True
    """REDUCING returns to ACTIVE once every driver is back under its soft level."""

    def day_of(self, ts: int) -> int:
        """Trading day index of an event time.

        >>> ScopeConfig().day_of(DAY_NS + 5)
        1
        """
        return (ts + self.day_offset_ns) // DAY_NS


@dataclass(frozen=True, slots=True)
class Member:
    """The latest contribution of one account to one scope."""

    ts: int
    event_id: str
    trading_state: TradingState
    figures: tuple[float, ...]
    """Values of `SCOPE_FIGURES`, in that order."""
    withdrawn: bool = False
    """The account left the scope: kept with zero figures, so that an older contribution
    arriving late cannot bring it back."""

    def __setstate__(self, state: Sequence[Any]) -> None:
        # snapshots taken before `withdrawn` existed hold the first four fields only
        for name, value in zip(_MEMBER_FIELDS, (*state, False)[:len(_MEMBER_FIELDS)],
                               strict=True):
            object.__setattr__(self, name, value)


_MEMBER_FIELDS = tuple(f.name for f in fields(Member))
_ZEROS = (0.0,) * len(SCOPE_FIGURES)


@dataclass
class ScopeAggregate:
    """Everything the stage keeps for one desk or firm (the unit of snapshot and hand-over)."""

    scope: str
    machine: ScopeState
    members: dict[str, Member] = field(default_factory=dict)
    day: int | None = None
    day_peak: float = 0.0
    peak_total: float = 0.0
    drawdown_intraday: float = 0.0
    drawdown_trailing: float = 0.0
    breach_levels: dict[str, BreachLevel] = field(default_factory=dict)
    totals: tuple[float, ...] = (0.0,) * len(SCOPE_FIGURES)
    exact: list[int] = field(default_factory=lambda: [0] * len(SCOPE_FIGURES))
    """`totals` as integers in units of 2**-1074 (exact sums, see `_fixed`)."""
    reducing: int = 0
    halted: int = 0
    """Members whose latest contribution says REDUCING, HALTED."""
    withdrawn: int = 0
    """Entries of `members` that are withdrawals (accounts that left the scope)."""
    version: int = SNAPSHOT_VERSION


def _fixed(value: float) -> int:
    """`value` as an exact integer count of 2**-1074 (the smallest subnormal float).

    >>> _fixed(0.5) == 1 << 1073, _fixed(-3.0) / (1 << 1074)
    (True, -3.0)
    """
    numerator, denominator = value.as_integer_ratio()  # denominator: a power of two
    return numerator << (_EXP - denominator.bit_length() + 1)


class ScopeRiskProcessor(DispatchByType):
    """Desk and firm aggregation for the `scope-worker` (see the module docstring)."""

    name = NAME
    input_topic = INPUT_TOPIC
    table_types: ClassVar[Mapping[str, tuple[str, ...]]] = {
        "risk.limits": ("LimitConfig",), "risk.control": ("TradingStateCommand",)}
    tables: tuple[str, ...] = tuple(table_types)
    """Side tables (engine.processor.TableProcessor): read in full by every worker."""

    def __init__(self, config: ScopeConfig | None = None) -> None:
        self.config = config or ScopeConfig()
        self.scopes: dict[str, ScopeAggregate] = {}
        self.limits = LimitBook()
        self.commands: dict[str, TradingStateCommand] = {}
        """Latest valid command per desk/firm scope (table state, on every worker)."""
        self._dirty: set[str] = set()
        self._handlers: dict[str, Callable[[Any], list[Output]]] = {
            "ScopeContribution": self._on_contribution, "LimitConfig": self._on_limit,
            "TradingStateCommand": self._on_command,
        }

    @classmethod
    def from_settings(cls, settings: Any, config: ScopeConfig | None = None
                      ) -> ScopeRiskProcessor:
        """With the `[scopes]` section of the settings (ValueError with one line when a
        field is wrong), unless `config` is given."""
        return cls(config or from_section(ScopeConfig, settings.scopes, "scopes"))

    # --- Processor protocol ---------------------------------------------------------------

    def key_of(self, event: Envelope) -> str | None:
        return event.scope if isinstance(event, ScopeContribution) else None

    def output_owner(self, output: Output) -> str | None:
        """Every output belongs to the scope (state key) it is about, breaches included
        (whose `account` is the contributing account, not a key of this stage)."""
        scope = getattr(output.value, "scope", None)
        return scope if isinstance(scope, str) else None

    def dirty_keys(self) -> set[str]:
        keys, self._dirty = self._dirty, set()
        return keys

    def snapshot(self, key: str) -> bytes | None:
        agg = self.scopes.get(key)
        return None if agg is None else pickle.dumps(agg, protocol=5)

    def restore(self, key: str, data: bytes | None) -> None:
        if data is None:
            self.scopes.pop(key, None)
            return
        self.scopes[key] = load_state(data, ScopeAggregate, SNAPSHOT_VERSION, key)

    def evict(self, keys: Iterable[str]) -> None:
        for key in keys:
            self.scopes.pop(key, None)
            self._dirty.discard(key)

    # --- contributions --------------------------------------------------------------------

    def _scope(self, scope: str) -> tuple[ScopeAggregate, list[Output]]:
        """The scope's state, created on first sight; a command still pending is applied."""
        agg = self.scopes.get(scope)
        if agg is None:
            agg = self.scopes[scope] = ScopeAggregate(
                scope, ScopeState(scope, auto_recover=self.config.auto_recover))
        self._dirty.add(scope)
        cmd = self.commands.get(scope)
        machine = agg.machine
        if cmd is not None and cmd.event_id != machine.last_command_id \
                and cmd.ts_event >= machine.last_command_ts:
            # the contribution's own ScopeRisk follows: no snapshot of the empty aggregate
            return agg, self._apply_command(agg, cmd, with_risk=False)
        return agg, []

    def _on_contribution(self, ev: ScopeContribution) -> list[Output]:
        if scope_kind(ev.scope) not in SCOPE_KINDS:
            raise ValueError(f"scope {ev.scope} is not a desk or firm: this stage aggregates "
                             f"{' and '.join(SCOPE_KINDS)} scopes only")
        agg, out = self._scope(ev.scope)
        previous = agg.members.get(ev.account)
        if previous is not None and (previous.event_id == ev.event_id
                                     or ev.ts_event < previous.ts):
            return out  # a repeat, or older than what the account already told us
        member = (Member(ev.ts_event, ev.event_id, TradingState.ACTIVE, _ZEROS, withdrawn=True)
                  if ev.withdrawn else
                  Member(ev.ts_event, ev.event_id, ev.trading_state,
                         tuple(float(getattr(ev, f)) for f in SCOPE_FIGURES)))
        totals = self._replace(agg, ev.account, previous, member)
        if member.withdrawn and previous is not None:
            # Leaving is not a PnL move: the peaks lose what the account added to them, so
            # the drawdowns are the remaining members' (a profitable account that leaves
            # does not show as a loss).
            agg.peak_total -= previous.figures[_REALIZED] + previous.figures[_UNREALIZED]
            if self.config.day_of(previous.ts) == agg.day:
                agg.day_peak -= previous.figures[_DAY_PNL]
        total_pnl = totals[_REALIZED] + totals[_UNREALIZED]
        day_pnl = totals[_DAY_PNL]
        agg.peak_total = max(agg.peak_total, total_pnl)
        agg.day_peak = max(agg.day_peak, day_pnl)
        agg.drawdown_trailing = max(0.0, agg.peak_total - total_pnl)
        agg.drawdown_intraday = max(0.0, agg.day_peak - day_pnl)
        observed = {"day_loss": max(0.0, -day_pnl),
                    "drawdown_intraday": agg.drawdown_intraday,
                    "drawdown_trailing": agg.drawdown_trailing,
                    "var_95": totals[_VAR_95],
                    "gross_exposure": totals[_GROSS]}
        levels = self.limits.levels(agg.scope, ev.ts_event)
        readings = []
        for metric in STATE_DRIVERS:
            level = levels.get(metric)
            if level is None:
                agg.breach_levels.pop(metric, None)
                continue
            value = observed[metric]
            readings.append(Reading(metric, value, level.soft, level.hard))
            breach = self._breach(agg, ev, metric, value, level.soft, level.hard)
            if breach is not None:
                out.append(breach)
        transition = agg.machine.evaluate(readings, ev.ts_event)
        if transition is not None:
            out.append(self._changed(transition, ev))
        out.append(self._risk(agg, ev))
        return out

    def _replace(self, agg: ScopeAggregate, account: str, previous: Member | None,
                 member: Member) -> tuple[float, ...]:
        """Swap an account's contribution in the sums; roll the trading day; the totals."""
        exact, day_of = agg.exact, self.config.day_of
        if previous is not None:
            for i, value in enumerate(previous.figures):
                if i != _DAY_PNL or day_of(previous.ts) == agg.day:
                    exact[i] -= _fixed(value)
            agg.reducing -= previous.trading_state is TradingState.REDUCING
            agg.halted -= previous.trading_state is TradingState.HALTED
            agg.withdrawn -= previous.withdrawn
        agg.members[account] = member
        agg.reducing += member.trading_state is TradingState.REDUCING
        agg.halted += member.trading_state is TradingState.HALTED
        agg.withdrawn += member.withdrawn
        day = day_of(member.ts)
        for i, value in enumerate(member.figures):
            if i != _DAY_PNL or day == agg.day:
                exact[i] += _fixed(value)
        if agg.day is None or day > agg.day:  # a new day: only today's PnL counts as day PnL
            agg.day, agg.day_peak = day, 0.0
            exact[_DAY_PNL] = sum(_fixed(m.figures[_DAY_PNL]) for m in agg.members.values()
                                  if day_of(m.ts) == day)
        agg.totals = tuple(total / (1 << _EXP) for total in exact)  # correctly rounded
        return agg.totals

    def _breach(self, agg: ScopeAggregate, cause: ScopeContribution, metric: str, value: float,
                soft: float | None, hard: float | None) -> Output | None:
        """A LimitBreach when `metric`'s level rose since the last report."""
        if hard is not None and value > hard + _EPS:
            level, bound = BreachLevel.HARD, hard
        elif soft is not None and value > soft + _EPS:
            level, bound = BreachLevel.SOFT, soft
        else:
            agg.breach_levels.pop(metric, None)  # back under the soft level: re-armed
            return None
        previous = agg.breach_levels.get(metric)
        agg.breach_levels[metric] = level
        if previous is level or previous is BreachLevel.HARD:
            return None  # reported already (a drop from hard to soft is not news)
        why = (f"after {cause.account} left the scope" if cause.withdrawn
               else f"with {cause.account}'s latest figures")
        breach = LimitBreach(
            **output_envelope(cause, f"BREACH:{agg.scope}:{metric}:{level.value}", self.name),
            account=cause.account, scope=agg.scope, metric=metric, level=level,
            observed=value, limit=bound,
            message=f"{agg.scope} {metric} {value:.6g} above the {level.value} limit "
                    f"{bound:.6g} ({why})"[:1000])
        return Output(LimitBreach.TOPIC, cause.account, breach)

    def _changed(self, tr: Transition, cause: Envelope) -> Output:
        changed = TradingStateChanged(
            **output_envelope(cause, f"STATE:{tr.scope}:{tr.to_state.value}", self.name),
            scope=tr.scope, from_state=tr.from_state, to_state=tr.to_state,
            cause=tr.cause[:500], metric=tr.metric, observed=tr.observed,
            threshold=tr.threshold, actor=tr.actor)
        return Output(TradingStateChanged.TOPIC, tr.scope, changed)

    def _risk(self, agg: ScopeAggregate, cause: Envelope) -> Output:
        t = dict(zip(SCOPE_FIGURES, agg.totals, strict=True))

        def positive(name: str) -> float:
            return max(0.0, t[name])  # non-negative figures: no float residue below zero

        risk = ScopeRisk(
            **output_envelope(cause, f"SCOPE_RISK:{agg.scope}", self.name), scope=agg.scope,
            accounts=len(agg.members) - agg.withdrawn, trading_state=agg.machine.state,
            state_cause=agg.machine.cause[:500], realized_pnl=t["realized_pnl"],
            unrealized_pnl=t["unrealized_pnl"], day_pnl=t["day_pnl"],
            gross_exposure=positive("gross_exposure"), net_exposure=t["net_exposure"],
            long_exposure=positive("long_exposure"), short_exposure=positive("short_exposure"),
            var_95=positive("var_95"), es_975=positive("es_975"),
            open_order_notional=positive("open_order_notional"),
            drawdown_intraday=agg.drawdown_intraday, drawdown_trailing=agg.drawdown_trailing,
            accounts_reducing=agg.reducing, accounts_halted=agg.halted)
        return Output(ScopeRisk.TOPIC, agg.scope, risk)

    # --- tables ---------------------------------------------------------------------------

    def _on_limit(self, ev: LimitConfig) -> list[Output]:
        # Rejections are alerted by the order workers; levels apply from the next
        # contribution (sampled at the scope's own events, like the order worker's accounts).
        self.limits.apply(ev)
        return []

    def _on_command(self, cmd: TradingStateCommand) -> list[Output]:
        if scope_kind(cmd.scope) not in SCOPE_KINDS or validate_command(cmd) is not None:
            return []
        previous = self.commands.get(cmd.scope)
        if previous is not None and (previous.event_id == cmd.event_id
                                     or cmd.ts_event < previous.ts_event):
            return []  # a repeat, or older than the command already in force
        self.commands[cmd.scope] = cmd
        agg = self.scopes.get(cmd.scope)
        if agg is None:
            return []  # applied when the scope's first contribution arrives (`_scope`)
        self._dirty.add(cmd.scope)
        return self._apply_command(agg, cmd)

    def _apply_command(self, agg: ScopeAggregate, cmd: TradingStateCommand, *,
                       with_risk: bool = True) -> list[Output]:
        tr = agg.machine.command(cmd)
        if tr is None:
            return []
        changed = self._changed(tr, cmd)
        return [changed, self._risk(agg, cmd)] if with_risk else [changed]
