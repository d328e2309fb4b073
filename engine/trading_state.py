"""The trading-state machine of one scope: ACTIVE -> REDUCING -> HALTED.

Metrics drive it up: a reading above its reduce level (the limit's soft level) moves an
ACTIVE scope to REDUCING, a reading above its halt level (the hard level) moves any scope to
HALTED. REDUCING falls back to ACTIVE by itself once every reading is back under its reduce
level (unless `auto_recover` is off). HALTED is sticky: only a manual `enable` command, which
must name who issued it, leaves it. A `kill` command halts from any state.

Hysteresis, for drivers that hover around their reduce level (an instrument's anomaly score
near 0.99 flips it every few ticks): a Reading may name a `recover_at` level below its reduce
level, and a scope a `min_reducing_ns`. REDUCING then recovers only when every reading is at
or under its recover level AND the scope has been REDUCING for at least that much event time.
Neither changes when a scope goes up, so hysteresis never makes a scope less restrictive and
never adds transitions (tests/test_trading_state.py checks both as properties).

Each move is a `Transition` carrying its cause and the numbers, which the worker publishes
as a TradingStateChanged event.

>>> m = ScopeState("account:A")
>>> m.evaluate([Reading("day_loss", 60.0, reduce_at=50.0, halt_at=100.0)], ts=1).to_state
<TradingState.REDUCING: 'reducing'>
>>> m.evaluate([Reading("day_loss", 150.0, reduce_at=50.0, halt_at=100.0)], ts=2).to_state
<TradingState.HALTED: 'halted'>
>>> m.evaluate([Reading("day_loss", 0.0, reduce_at=50.0, halt_at=100.0)], ts=3) is None
True
>>> m.state
<TradingState.HALTED: 'halted'>
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from schemas.common import TradingState
from schemas.control import StateCommand, TradingStateCommand

RANK: dict[TradingState, int] = {TradingState.ACTIVE: 0, TradingState.REDUCING: 1,
                                 TradingState.HALTED: 2}


def most_restrictive(states: Iterable[TradingState]) -> TradingState:
    """The strictest of some states (ACTIVE when there are none).

    >>> most_restrictive([TradingState.ACTIVE, TradingState.REDUCING])
    <TradingState.REDUCING: 'reducing'>
    """
    worst = TradingState.ACTIVE
    for state in states:
        if RANK[state] > RANK[worst]:
            worst = state
    return worst


class CommandRejected(ValueError):
    """A TradingStateCommand the worker refuses (for instance: nobody named as issuer)."""


def validate_command(cmd: TradingStateCommand) -> str | None:
    """Why a command must be rejected, or None."""
    if not cmd.issued_by.strip():
        return "issued_by is blank: kill and enable commands must name who issued them"
    if not cmd.reason.strip():
        return "reason is blank"
    return None


class Reading(NamedTuple):
    """One driver of the state machine: its value and the levels it is compared to."""

    metric: str
    observed: float
    reduce_at: float | None = None
    halt_at: float | None = None
    recover_at: float | None = None
    """Level a REDUCING scope must come back to (at or under) before it recovers; None:
    the reduce level (no hysteresis)."""

    def severity(self) -> tuple[int, float, float | None]:
        """(0 none, 1 reduce, 2 halt), how far past the level, and the level crossed."""
        if self.halt_at is not None and self.observed > self.halt_at:
            return 2, _excess(self.observed, self.halt_at), self.halt_at
        if self.reduce_at is not None and self.observed > self.reduce_at:
            return 1, _excess(self.observed, self.reduce_at), self.reduce_at
        return 0, 0.0, None


    def recovered(self) -> bool:
        """Whether this driver lets a REDUCING scope recover.

        >>> Reading("anomaly", 0.95, reduce_at=0.99, recover_at=0.9).recovered()
        False
        >>> Reading("anomaly", 0.95, reduce_at=0.99).recovered()
        True
        """
        level = self.recover_at if self.recover_at is not None else self.reduce_at
        return level is None or self.observed <= level


def _excess(observed: float, level: float) -> float:
    return observed / level if level > 0 else float("inf")


@dataclass(frozen=True, slots=True)
class Transition:
    scope: str
    from_state: TradingState
    to_state: TradingState
    cause: str
    ts: int
    metric: str | None = None
    observed: float | None = None
    threshold: float | None = None
    actor: str | None = None


@dataclass
class ScopeState:
    """The state of one scope (firm, desk, account, strategy or instrument)."""

    scope: str
    state: TradingState = TradingState.ACTIVE
    cause: str = ""
    since_ts: int = 0
    auto_recover: bool = True
    last_command_ts: int = -1
    last_command_id: str | None = None
    min_reducing_ns: int = 0
    """Least event time a scope stays REDUCING before it may recover by itself."""

    def _move(self, to: TradingState, cause: str, ts: int, *, metric: str | None = None,
              observed: float | None = None, threshold: float | None = None,
              actor: str | None = None) -> Transition:
        tr = Transition(self.scope, self.state, to, cause, ts, metric, observed, threshold, actor)
        self.state, self.cause, self.since_ts = to, cause, ts
        return tr

    def evaluate(self, readings: Sequence[Reading], ts: int) -> Transition | None:
        """Apply the complete set of this scope's drivers at event time `ts`.

        Pass every driver each time: REDUCING recovers only when none is above its level.
        """
        if self.state is TradingState.HALTED:
            return None  # only an enable command leaves HALTED
        worst: tuple[int, float, float | None] = (0, 0.0, None)
        worst_reading: Reading | None = None
        for reading in readings:
            sev = reading.severity()
            if (sev[0], sev[1]) > (worst[0], worst[1]):
                worst, worst_reading = sev, reading
        level, _, threshold = worst
        if level == 2 and worst_reading is not None:
            return self._move(
                TradingState.HALTED,
                f"{worst_reading.metric} {worst_reading.observed:.6g} above halt level "
                f"{threshold:.6g}", ts, metric=worst_reading.metric,
                observed=worst_reading.observed, threshold=threshold)
        if level == 1 and worst_reading is not None:
            if self.state is TradingState.ACTIVE:
                return self._move(
                    TradingState.REDUCING,
                    f"{worst_reading.metric} {worst_reading.observed:.6g} above reduce level "
                    f"{threshold:.6g}", ts, metric=worst_reading.metric,
                    observed=worst_reading.observed, threshold=threshold)
            return None
        if self.state is not TradingState.REDUCING or not self.auto_recover:
            return None
        if any(r.recover_at is not None for r in readings) or self.min_reducing_ns:
            if not all(r.recovered() for r in readings) \
                    or ts - self.since_ts < self.min_reducing_ns:
                return None
            return self._move(
                TradingState.ACTIVE,
                f"recovered: every driver at or under its recover level after "
                f"{(ts - self.since_ts) / 1e9:.6g} s reducing", ts)
        return self._move(TradingState.ACTIVE,
                          "recovered: every driver is back under its reduce level", ts)

    def command(self, cmd: TradingStateCommand) -> Transition | None:
        """Apply a kill or enable command; CommandRejected when it names no issuer.

        Every accepted command yields a Transition, even when the state stays the same (a
        kill of a scope already halted re-latches it with the operator as cause), so each
        command leaves an audit record. A command older than the last one applied (event
        time), or the same one again, is ignored: replaying the control topic never undoes
        a later command.
        """
        reason = validate_command(cmd)
        if reason is not None:
            raise CommandRejected(reason)
        if cmd.event_id == self.last_command_id or cmd.ts_event < self.last_command_ts:
            return None
        self.last_command_ts, self.last_command_id = cmd.ts_event, cmd.event_id
        if cmd.command is StateCommand.KILL:
            return self._move(TradingState.HALTED,
                              f"kill switch by {cmd.issued_by}: {cmd.reason}", cmd.ts_event,
                              actor=cmd.issued_by)
        return self._move(TradingState.ACTIVE, f"enabled by {cmd.issued_by}: {cmd.reason}",
                          cmd.ts_event, actor=cmd.issued_by)
