"""Hierarchical limits: firm > desk > account > strategy > instrument, soft and hard levels.

Limits arrive as LimitConfig events (from the compacted `risk.limits` topic or a YAML/TOML
file) and live in a `LimitBook`. A metric's effective limit for an order is the tightest
level among every scope that applies to it, so no level below can loosen a level above.

Rules a risk desk relies on:

* every change names who made it (`changed_by`, not blank); an override also names an
  approver who is not the requester (four eyes) and an expiry in event time;
* a temporary override replaces the levels of its scope for the metrics it names until
  `expires_ts` (judged against the event time of the order, never the wall clock), and can
  never loosen the caps of the scopes above it;
* per-client risk appetite (`risk_appetite`, the product along the account's chain) scales
  the levels set on the account and its strategies for the metrics in `SCALED_METRICS`;
  firm, desk, instrument and default levels are absolute caps and are never scaled;
* levels set on a firm or desk apply to each account below it: one worker sees only its own
  accounts, so aggregate desk and firm exposure is the job of the separate aggregation stage;
* instrument scopes (`instrument:SYM`) apply to every account's position in that symbol.

>>> from schemas.control import LimitConfig, LimitLevel
>>> book = LimitBook()
>>> def cfg(scope, parent=None, **levels):
...     return LimitConfig(event_id=scope, ts_event=0, ts_init=0, source="doc", scope=scope,
...                        parent=parent, changed_by="alice",
...                        limits={m: LimitLevel(soft=s, hard=h) for m, (s, h) in levels.items()})
>>> _ = book.apply(cfg("firm:F", order_notional=(None, 1000.0)))
>>> _ = book.apply(cfg("account:A", parent="firm:F", order_notional=(500.0, 2000.0)))
>>> scopes = book.order_scopes("A", "momo", "AAPL")
>>> lim = book.resolve("order_notional", scopes, ts=0)
>>> (lim.soft, lim.hard, lim.hard_source)
(500.0, 1000.0, 'firm:F')
"""

from __future__ import annotations

import bisect
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from pydantic import ValidationError

from schemas.codec import describe_validation_error
from schemas.common import scope_id, scope_kind
from schemas.control import LimitConfig, LimitLevel, LimitOverride
from schemas.ids import content_event_id
from schemas.settings import read_mapping_file

# --- the metric catalogue ------------------------------------------------------------------

METRICS: dict[str, str] = {
    "order_notional": "notional of one order (currency)",
    "order_qty": "quantity of one order",
    "adv_participation": "order quantity as a fraction of average daily volume",
    "order_rate": "order messages per second (account and strategy)",
    "position_long": "long exposure incl. open buy orders, worst case (currency)",
    "position_short": "short exposure incl. open sell orders, worst case (currency)",
    "gross_exposure": "gross exposure incl. open orders, worst case (currency)",
    "net_exposure": "absolute net exposure incl. open orders, worst case (currency)",
    "credit": "credit used: positions + every open order + losses (currency)",
    "day_loss": "loss since the start of the trading day (currency); soft REDUCING, hard HALTED",
    "drawdown_intraday": "drop from today's PnL peak (currency); soft REDUCING, hard HALTED",
    "drawdown_trailing": "drop from the all-time PnL peak (currency); soft REDUCING, hard HALTED",
    "var_95": "account 1-step VaR 95 (currency); soft REDUCING, hard HALTED",
    "anomaly_score": "smoothed order-flow anomaly score in [0, 1]; soft REDUCING, hard HALTED",
    "throttle_hits": "throttled orders within the throttle-hit window; soft REDUCING, hard HALTED",
    "leverage": "gross exposure / equity",
    "concentration": "largest single-instrument share of gross exposure",
    "capital": "reference value, not a limit: the account's capital (hard level), for leverage",
}

SCALED_METRICS = frozenset({
    "order_notional", "order_qty", "position_long", "position_short", "gross_exposure",
    "net_exposure", "credit", "day_loss", "drawdown_intraday", "drawdown_trailing", "var_95",
})
"""Metrics a client's risk appetite scales (on account and strategy levels only)."""

STATE_METRICS = ("day_loss", "drawdown_intraday", "drawdown_trailing", "var_95",
                 "anomaly_score", "throttle_hits")
"""Metrics that drive the account's trading state: soft -> REDUCING, hard -> HALTED."""

Group = Literal["order", "account", "strategy", "instrument"]
"""Which levels apply to a measure: `order` for per-order metrics (every level), `account`
for account-wide measures (default, firm, desk, account), `strategy` for a strategy's own
measures and `instrument` for the account's position in one symbol."""

AUDIT_KEY_PREFIX = "audit/"
"""Key prefix of the worker's audit echoes on `risk.limits` (see `is_audit_record`)."""

_PARENT_KINDS: dict[str, tuple[str, ...]] = {
    "firm": (),
    "desk": ("firm", "desk"),
    "account": ("desk", "firm"),
    "strategy": ("account",),
    "instrument": (),
}


@dataclass(frozen=True, slots=True)
class EffectiveLimit:
    """The tightest soft and hard levels of one metric, and the scope each came from."""

    soft: float | None = None
    hard: float | None = None
    soft_source: str | None = None
    hard_source: str | None = None

    @property
    def empty(self) -> bool:
        return self.soft is None and self.hard is None


NO_LIMIT = EffectiveLimit()


@dataclass(frozen=True, slots=True)
class OrderScopes:
    """Every scope that applies to one (account, strategy, symbol), with appetite factors."""

    account: str
    strategy: str
    instrument: str
    ancestors: tuple[str, ...]
    """Desks and firms above the account, nearest first."""
    account_factor: float = 1.0
    strategy_factor: float = 1.0

    @property
    def firm(self) -> str | None:
        return next((s for s in self.ancestors if scope_kind(s) == "firm"), None)

    @property
    def desk(self) -> str | None:
        return next((s for s in self.ancestors if scope_kind(s) == "desk"), None)

    def all(self) -> tuple[str, ...]:
        """Every scope, broadest first."""
        return (*reversed(self.ancestors), self.account, self.strategy, self.instrument)


@dataclass(frozen=True, slots=True)
class ApplyResult:
    accepted: bool
    changed: bool
    reason: str = ""


def strategy_scope(account: str, strategy: str) -> str:
    """Scope id of one account's strategy.

    >>> strategy_scope("ACC-1", "momo")
    'strategy:ACC-1/momo'
    """
    return f"strategy:{account}/{strategy}"


def is_audit_record(key: str | None, value: Any = None) -> bool:
    """True for the worker's audit echoes on `risk.limits`, which table readers skip."""
    return bool(key and key.startswith(AUDIT_KEY_PREFIX))


def config_content(cfg: LimitConfig) -> dict[str, Any]:
    """What a LimitConfig says, without its envelope or author: compared to detect changes."""
    return cfg.model_dump(include={"scope", "parent", "limits", "risk_appetite", "override",
                                   "deleted"}, exclude_none=True)


def validate_config(cfg: LimitConfig) -> str | None:
    """Why a LimitConfig must be rejected, or None when it is acceptable.

    >>> from schemas.control import LimitConfig
    >>> c = LimitConfig(event_id="e", ts_event=0, ts_init=0, source="doc",
    ...                 scope="account:A", parent="account:B", changed_by="bob")
    >>> validate_config(c)
    'an account scope cannot have parent account:B (allowed: desk, firm)'
    """
    if not cfg.changed_by.strip():
        return "changed_by is blank: every limit change must name who made it"
    kind = scope_kind(cfg.scope)
    if cfg.parent is not None:
        allowed = _PARENT_KINDS[kind]
        if scope_kind(cfg.parent) not in allowed:
            kinds = ", ".join(allowed) if allowed else "none"
            article = "an" if kind[0] in "aeiou" else "a"
            return f"{article} {kind} scope cannot have parent {cfg.parent} (allowed: {kinds})"
        if cfg.parent == cfg.scope:
            return f"{cfg.scope} cannot be its own parent"
    unknown = sorted(set(cfg.limits) - set(METRICS))
    if cfg.override is not None:
        ov = cfg.override
        unknown += sorted(set(ov.limits) - set(METRICS) - set(unknown))
        if not ov.approver.strip():
            return "the override has a blank approver"
        if ov.approver.strip() == cfg.changed_by.strip():
            return (f"the override is approved by its own requester {ov.approver!r}: "
                    "an override needs a second person")
        if ov.expires_ts <= cfg.ts_event:
            return f"the override expired ({ov.expires_ts}) before it was made ({cfg.ts_event})"
    if unknown:
        return f"unknown metric(s) {', '.join(unknown)} (known: {', '.join(METRICS)})"
    return None


def _tighter(current: float | None, value: float | None) -> bool:
    return value is not None and (current is None or value < current)


def tightest(a: EffectiveLimit, b: EffectiveLimit) -> EffectiveLimit:
    """The tighter soft and hard levels of two effective limits (ties keep `a`)."""
    soft, soft_src = (b.soft, b.soft_source) if _tighter(a.soft, b.soft) else (a.soft,
                                                                                a.soft_source)
    hard, hard_src = (b.hard, b.hard_source) if _tighter(a.hard, b.hard) else (a.hard,
                                                                                a.hard_source)
    if soft is not None and hard is not None and soft > hard:
        soft, soft_src = hard, hard_src
    return EffectiveLimit(soft, hard, soft_src if soft is not None else None,
                          hard_src if hard is not None else None)


@dataclass
class LimitBook:
    """Every scope's current LimitConfig, and the resolution of effective limits.

    `defaults` are the levels used when nothing else names a metric (an implicit root that
    applies to every account, reported with source "default").
    """

    defaults: Mapping[str, LimitLevel] = field(default_factory=dict)
    configs: dict[str, LimitConfig] = field(default_factory=dict)
    version: int = 0
    _children: dict[str, set[str]] = field(default_factory=dict, repr=False)
    _expiries: list[int] = field(default_factory=list, repr=False)

    def apply(self, cfg: LimitConfig) -> ApplyResult:
        """Validate and store one LimitConfig; `changed` is False for a no-op repeat."""
        reason = validate_config(cfg)
        if reason is None and cfg.parent is not None and not cfg.deleted:
            reason = self._cycle_reason(cfg.scope, cfg.parent)
        if reason is not None:
            return ApplyResult(False, False, reason)
        current = self.configs.get(cfg.scope)
        if cfg.deleted:
            if current is None:
                return ApplyResult(True, False)
            self._unlink(current)
            del self.configs[cfg.scope]
            self._changed()
            return ApplyResult(True, True)
        if current is not None and config_content(current) == config_content(cfg):
            return ApplyResult(True, False)
        if current is not None:
            self._unlink(current)
        self.configs[cfg.scope] = cfg
        if cfg.parent is not None:
            self._children.setdefault(cfg.parent, set()).add(cfg.scope)
        self._changed()
        return ApplyResult(True, True)

    def _changed(self) -> None:
        self.version += 1
        self._expiries = sorted({c.override.expires_ts for c in self.configs.values()
                                 if c.override is not None})

    def validity(self, ts: int) -> tuple[int, int]:
        """[start, end) of event time around `ts` in which no override starts or stops
        applying: a resolution made at `ts` holds for any time in it (same `version`)."""
        at = bisect.bisect_right(self._expiries, ts)
        start = self._expiries[at - 1] if at else -(2**63)
        end = self._expiries[at] if at < len(self._expiries) else 2**63
        return start, end

    def _unlink(self, cfg: LimitConfig) -> None:
        if cfg.parent is not None:
            self._children.get(cfg.parent, set()).discard(cfg.scope)

    def _cycle_reason(self, scope: str, parent: str) -> str | None:
        seen = {scope}
        node: str | None = parent
        while node is not None:
            if node in seen:
                return f"parent {parent} would make a cycle through {scope}"
            seen.add(node)
            above = self.configs.get(node)
            node = above.parent if above is not None else None
        return None

    def get(self, scope: str) -> LimitConfig | None:
        return self.configs.get(scope)

    def ancestors(self, scope: str) -> tuple[str, ...]:
        """Scopes above `scope` via `parent` links, nearest first (cycle-safe)."""
        out: list[str] = []
        cfg = self.configs.get(scope)
        parent = cfg.parent if cfg is not None else None
        while parent is not None and parent not in out and parent != scope:
            out.append(parent)
            above = self.configs.get(parent)
            parent = above.parent if above is not None else None
        return tuple(out)

    def in_scope(self, account: str, scope: str) -> bool:
        """Whether `account` falls under a firm, desk or account scope.

        Fail-safe: an account whose chain names no firm belongs to every firm, so a firm-wide
        kill switch never misses an account that was never given a parent.
        """
        own = f"account:{account}"
        if scope == own:
            return True
        chain = self.ancestors(own)
        if scope in chain:
            return True
        return scope_kind(scope) == "firm" and not any(scope_kind(s) == "firm" for s in chain)

    def order_scopes(self, account: str, strategy: str, symbol: str) -> OrderScopes:
        acc = f"account:{account}"
        strat = strategy_scope(account, strategy)
        ancestors = self.ancestors(acc)
        factor = 1.0
        for scope in (*ancestors, acc):
            cfg = self.configs.get(scope)
            if cfg is not None:
                factor *= cfg.risk_appetite
        strat_cfg = self.configs.get(strat)
        strat_factor = factor * (strat_cfg.risk_appetite if strat_cfg is not None else 1.0)
        return OrderScopes(acc, strat, f"instrument:{symbol}", ancestors, factor, strat_factor)

    def levels(self, scope: str, ts: int) -> Mapping[str, LimitLevel]:
        """A scope's own levels at event time `ts`, its override applied while unexpired."""
        cfg = self.configs.get(scope)
        if cfg is None:
            return {}
        ov = cfg.override
        if ov is not None and ts < ov.expires_ts:
            return {**cfg.limits, **ov.limits}
        return cfg.limits

    def _group_levels(self, group: Group, scopes: OrderScopes
                      ) -> Iterable[tuple[str | None, float]]:
        """(scope, appetite factor) of each level a group consults; None = defaults."""
        if group in ("order", "account"):
            yield None, 1.0
            for scope in reversed(scopes.ancestors):
                yield scope, 1.0
            yield scopes.account, scopes.account_factor
        if group in ("order", "strategy"):
            yield scopes.strategy, scopes.strategy_factor
        if group in ("order", "instrument"):
            yield scopes.instrument, 1.0

    def resolve(self, metric: str, scopes: OrderScopes, ts: int,
                group: Group = "order") -> EffectiveLimit:
        """The tightest soft and hard level of `metric` over the group's levels at `ts`."""
        soft = hard = None
        soft_src = hard_src = None
        scaled = metric in SCALED_METRICS
        for scope, factor in self._group_levels(group, scopes):
            if scope is None:
                level = self.defaults.get(metric)
            else:
                level = self.levels(scope, ts).get(metric)
            if level is None:
                continue
            f = factor if scaled else 1.0
            s = None if level.soft is None else level.soft * f
            h = None if level.hard is None else level.hard * f
            if _tighter(soft, s):
                soft, soft_src = s, scope or "default"
            if _tighter(hard, h):
                hard, hard_src = h, scope or "default"
        if soft is not None and hard is not None and soft > hard:
            # a loose soft level under a tighter hard one warns at the hard level
            soft, soft_src = hard, hard_src
        return EffectiveLimit(soft, hard, soft_src, hard_src)

    def effective(self, scope: str, metric: str, ts: int) -> EffectiveLimit:
        """The tightest levels of `metric` that bind `scope` itself: its own level, those of
        every scope above it and the defaults (instrument scopes: their own level only).

        For an account this is `resolve(..., "account")`; for a strategy, its own level
        together with its account's chain (what `streamrisk limits show` reports).
        """
        kind = scope_kind(scope)
        if kind == "instrument":
            level = self.levels(scope, ts).get(metric)
            if level is None:
                return NO_LIMIT
            src = scope if level.hard is not None else None
            return EffectiveLimit(level.soft, level.hard, scope if level.soft is not None
                                  else None, src)
        if kind in ("account", "strategy"):
            account, _, strategy = scope_id(scope).partition("/")
            scopes = self.order_scopes(account, strategy or "-", "-")
            own = self.resolve(metric, scopes, ts, "account")
            if kind == "account":
                return own
            mine = self.resolve(metric, scopes, ts, "strategy")
            return tightest(own, mine)
        out = NO_LIMIT
        level = self.defaults.get(metric)
        if level is not None:
            out = tightest(out, EffectiveLimit(level.soft, level.hard, "default", "default"))
        for above in (scope, *self.ancestors(scope)):
            level = self.levels(above, ts).get(metric)
            if level is not None:
                out = tightest(out, EffectiveLimit(level.soft, level.hard, above, above))
        return out

    def capital(self, scopes: OrderScopes, ts: int, default: float) -> float:
        level = self.levels(scopes.account, ts).get("capital")
        return level.hard if level is not None and level.hard else default


# --- limits files ---------------------------------------------------------------------------


class LimitsFileError(ValueError):
    """A limits file that cannot be read or does not validate; the message is one line."""


_DURATION = re.compile(r"^\+?(\d+(?:\.\d+)?)\s*(s|m|h|d)$")
_UNIT_NS = {"s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9, "d": 86_400 * 10**9}


def parse_expiry(value: Any, now_ns: int) -> int:
    """An expiry as event-time nanoseconds: ns integer, ISO-8601 time, or a duration from now.

    >>> parse_expiry("2h", 0)
    7200000000000
    >>> parse_expiry("2024-01-02T00:00:00Z", 0)
    1704153600000000000
    >>> parse_expiry(5, 0)
    5
    """
    if isinstance(value, bool):
        raise ValueError(f"expiry {value!r} is not a time")
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        when = value if value.tzinfo else value.replace(tzinfo=UTC)
        return int(when.timestamp() * 1e9)
    text = str(value).strip()
    match = _DURATION.match(text)
    if match:
        return now_ns + int(float(match.group(1)) * _UNIT_NS[match.group(2)])
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"expiry {text!r} is neither nanoseconds, an ISO-8601 time nor a "
                         "duration like 30m, 2h or 1d") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp()) * 10**9 + when.microsecond * 1000


def _entries(data: Mapping[str, Any]) -> list[dict[str, Any]]:
    scopes = data.get("scopes")
    if scopes is None:
        raise ValueError("no 'scopes' table or list")
    if isinstance(scopes, Mapping):
        return [{"scope": name, **(body or {})} for name, body in scopes.items()]
    if isinstance(scopes, list) and all(isinstance(e, Mapping) for e in scopes):
        return [dict(e) for e in scopes]
    raise ValueError("'scopes' must be a list of tables or a table keyed by scope")


def configs_from_mapping(data: Mapping[str, Any], *, ts_event: int, changed_by: str | None = None,
                         source: str = "limits-file") -> list[LimitConfig]:
    """LimitConfig events from a parsed limits document (see `load_limits_file`)."""
    author = changed_by or data.get("changed_by")
    default_reason = str(data.get("reason", ""))
    out: list[LimitConfig] = []
    for i, entry in enumerate(_entries(data)):
        where = entry.get("scope", f"entry {i + 1}")
        try:
            override = entry.pop("override", None)
            if override is not None:
                override = dict(override)
                expires = override.pop("expires", override.pop("expires_ts", None))
                if expires is None:
                    raise ValueError("an override needs 'expires'")
                override["expires_ts"] = parse_expiry(expires, ts_event)
                override = LimitOverride.model_validate(override)
            who = entry.pop("changed_by", None) or author
            if not who:
                raise ValueError("no changed_by: give it in the file or with --by")
            body = {"reason": default_reason, **entry}
            cfg = LimitConfig.model_validate({
                **body, "override": override, "changed_by": who, "event_id": "pending",
                "ts_event": ts_event, "ts_init": ts_event, "source": source})
            digest = json.dumps(config_content(cfg), sort_keys=True, default=str)
            out.append(cfg.model_copy(update={"event_id": content_event_id(
                "LimitConfig", cfg.scope, ts_event, digest, who)}))
        except ValidationError as exc:
            raise LimitsFileError(f"{where}: {describe_validation_error(exc)}") from None
        except (ValueError, TypeError) as exc:
            raise LimitsFileError(f"{where}: {exc}") from None
    scopes = [c.scope for c in out]
    dupes = sorted({s for s in scopes if scopes.count(s) > 1})
    if dupes:
        raise LimitsFileError(f"scope(s) listed twice: {', '.join(dupes)}")
    return out


def load_limits_file(path: str | Path, *, ts_event: int, changed_by: str | None = None,
                     source: str = "limits-file") -> list[LimitConfig]:
    """Read a YAML (.yaml/.yml) or TOML limits file into LimitConfig events.

    Format (YAML shown; TOML is the same tree, `[scopes."account:ACC-1"]` style)::

        changed_by: alice            # author of every entry unless an entry names its own
        reason: start of day limits
        scopes:
          firm:ACME:
            limits:
              order_notional: {soft: 1000000, hard: 5000000}
          desk:EQ:
            parent: firm:ACME
            limits: {day_loss: {soft: 50000, hard: 100000}}
          account:ACC-1:
            parent: desk:EQ
            risk_appetite: 1.5
            limits: {gross_exposure: {hard: 20000000}}
            override:                # temporary, approved by someone else
              limits: {order_notional: {hard: 8000000}}
              approver: bob
              expires: 2h            # or an ISO-8601 time, or nanoseconds
              reason: index rebalance

    `scopes` may also be a list of tables each with a `scope` key. Event ids are derived
    from the content, so loading the same file at the same time gives the same events.
    """
    data = read_mapping_file(path, "limits file", LimitsFileError)
    try:
        return configs_from_mapping(data, ts_event=ts_event, changed_by=changed_by,
                                    source=source)
    except LimitsFileError as exc:
        raise LimitsFileError(f"limits file {path}: {exc}") from None
    except ValueError as exc:
        raise LimitsFileError(f"limits file {path}: {exc}") from None


@dataclass(frozen=True)
class LimitDiff:
    scope: str
    field: str
    current: Any
    wanted: Any


def diff_configs(current: Mapping[str, LimitConfig],
                 wanted: Sequence[LimitConfig]) -> list[LimitDiff]:
    """What applying `wanted` would change in `current` (scopes absent from `wanted` are
    reported as `(not in file)`, since a file need not list every scope)."""
    out: list[LimitDiff] = []
    wanted_by_scope = {c.scope: c for c in wanted}
    for scope in sorted(set(current) | set(wanted_by_scope)):
        cur = current.get(scope)
        new = wanted_by_scope.get(scope)
        if new is None:
            out.append(LimitDiff(scope, "*", "present", "(not in file)"))
            continue
        if cur is None:
            out.append(LimitDiff(scope, "*", "(absent)", "new scope"))
            continue
        a, b = config_content(cur), config_content(new)
        for key in ("parent", "risk_appetite"):
            if a.get(key) != b.get(key):
                out.append(LimitDiff(scope, key, a.get(key), b.get(key)))
        la, lb = a.get("limits", {}), b.get("limits", {})
        for metric in sorted(set(la) | set(lb)):
            if la.get(metric) != lb.get(metric):
                out.append(LimitDiff(scope, f"limits.{metric}", la.get(metric), lb.get(metric)))
        oa, ob = a.get("override"), b.get("override")
        if (oa or {}).get("limits") != (ob or {}).get("limits") or \
                (oa or {}).get("approver") != (ob or {}).get("approver"):
            out.append(LimitDiff(scope, "override", oa, ob))
    return out
