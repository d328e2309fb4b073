"""What flows through streamrisk: event models, the codec, the topic catalogue, settings and
the recording format. Pure data: nothing here talks to Kafka."""

from schemas.codec import DecodeError, decode, encode
from schemas.common import Envelope, Severity, Side, TradingState
from schemas.control import LimitConfig, LimitLevel, LimitOverride, TradingStateCommand
from schemas.market import Bar, BookTop, InstrumentStatus, NewsSentiment, Quote, Trade
from schemas.orders import (
    ExecType,
    ExecutionReport,
    MassCancel,
    OrderCancel,
    OrderNew,
    OrderReplace,
    OrdType,
    TimeInForce,
)
from schemas.outputs import (
    AccountRisk,
    DeadLetter,
    InstrumentRisk,
    LimitBreach,
    ModelHealth,
    RiskAlert,
    RiskDecision,
    TradingStateChanged,
)
from schemas.registry import EVENT_TYPES

__all__ = [
    "EVENT_TYPES", "AccountRisk", "Bar", "BookTop", "DeadLetter", "DecodeError", "Envelope",
    "ExecType", "ExecutionReport", "InstrumentRisk", "InstrumentStatus", "LimitBreach",
    "LimitConfig", "LimitLevel", "LimitOverride", "MassCancel", "ModelHealth", "NewsSentiment",
    "OrdType", "OrderCancel", "OrderNew", "OrderReplace", "Quote", "RiskAlert", "RiskDecision",
    "Severity", "Side", "TimeInForce", "Trade", "TradingState", "TradingStateChanged",
    "TradingStateCommand", "decode", "encode",
]
