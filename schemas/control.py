"""Operator inputs: limit configuration and trading-state commands. Both are audited:
every one names who made it, and an override names its approver and expiry."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import Envelope, EventModel, Identifier, Nanos, Scope


class LimitLevel(EventModel):
    """Soft (warn) and hard levels of one metric. Either may be absent; soft <= hard."""

    soft: Annotated[float, Field(ge=0)] | None = None
    hard: Annotated[float, Field(ge=0)] | None = None

    @model_validator(mode="after")
    def _soft_below_hard(self) -> LimitLevel:
        if self.soft is not None and self.hard is not None and self.soft > self.hard:
            raise ValueError(f"soft level {self.soft} is above hard level {self.hard}")
        return self


class LimitOverride(EventModel):
    """A temporary change to some levels, approved by someone, until `expires_ts`."""

    limits: dict[str, LimitLevel]
    approver: Identifier
    expires_ts: Nanos
    reason: Annotated[str, Field(min_length=1, max_length=500)]


class LimitConfig(Envelope):
    """The limits of one scope. `parent` links the hierarchy firm > desk > account > strategy."""

    TOPIC: ClassVar[str] = "risk.limits"
    type: Literal["LimitConfig"] = "LimitConfig"
    scope: Scope
    parent: Scope | None = None
    limits: dict[str, LimitLevel] = Field(default_factory=dict)
    risk_appetite: Annotated[float, Field(gt=0, le=10)] = 1.0
    override: LimitOverride | None = None
    changed_by: Identifier
    reason: Annotated[str, Field(max_length=500)] = ""
    deleted: bool = False

    @property
    def key(self) -> str:
        return self.scope


class StateCommand(StrEnum):
    KILL = "kill"
    ENABLE = "enable"


class TradingStateCommand(Envelope):
    """Kill switch or re-enable for a scope, from an identified operator."""

    TOPIC: ClassVar[str] = "risk.control"
    type: Literal["TradingStateCommand"] = "TradingStateCommand"
    scope: Scope
    command: StateCommand
    issued_by: Identifier
    reason: Annotated[str, Field(min_length=1, max_length=500)]

    @property
    def key(self) -> str:
        return self.scope
