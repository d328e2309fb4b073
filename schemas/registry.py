"""Every event type by its `type` discriminator, and the topic each one travels on."""

from __future__ import annotations

from schemas.common import Envelope
from schemas.control import LimitConfig, TradingStateCommand
from schemas.market import MARKET_EVENTS
from schemas.orders import ORDER_EVENTS
from schemas.outputs import (
    AccountRisk,
    DeadLetter,
    InstrumentRisk,
    LimitBreach,
    ModelHealth,
    RiskAlert,
    RiskDecision,
    ScopeContribution,
    ScopeRisk,
    TradingStateChanged,
)

OUTPUT_EVENTS: tuple[type[Envelope], ...] = (
    RiskAlert,
    RiskDecision,
    LimitBreach,
    InstrumentRisk,
    AccountRisk,
    ScopeContribution,
    ScopeRisk,
    TradingStateChanged,
    ModelHealth,
    DeadLetter,
)
CONTROL_EVENTS: tuple[type[Envelope], ...] = (LimitConfig, TradingStateCommand)

ALL_EVENTS: tuple[type[Envelope], ...] = (*MARKET_EVENTS, *ORDER_EVENTS, *OUTPUT_EVENTS,
                                          *CONTROL_EVENTS)
EVENT_TYPES: dict[str, type[Envelope]] = {
    cls.model_fields["type"].default: cls for cls in ALL_EVENTS
}


def event_class(type_name: str) -> type[Envelope] | None:
    """The model class for a `type` discriminator, or None when the type is unknown."""
    return EVENT_TYPES.get(type_name)
