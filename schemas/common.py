"""Field types and the event envelope shared by every message on every topic.

Numbers are validated where they enter the system: a NaN price, a negative size or an
unknown enum value is rejected here with a message a person understands, so the engine
never has to guard against them.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, ClassVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# Non-finite numbers are rejected model-wide (allow_inf_nan=False in EventModel's config).
Price = Annotated[float, Field(gt=0, description="Price, strictly positive.")]
Qty = Annotated[float, Field(gt=0, description="Quantity, strictly positive.")]
NonNegQty = Annotated[float, Field(ge=0, description="Quantity, zero or more.")]
Fraction = Annotated[float, Field(ge=0, le=1)]
# Kafka and orjson carry 64-bit signed integers: a larger value would validate, then fail to
# encode (TypeError in a producer) instead of being rejected here.
INT64_MAX = 2**63 - 1
Nanos = Annotated[int, Field(ge=0, le=INT64_MAX,
                             description="Nanoseconds since the Unix epoch.")]
Symbol = Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._:/\-]+$")]
Identifier = Annotated[str, Field(min_length=1, max_length=128)]

SCOPE_KINDS = ("firm", "desk", "account", "strategy", "instrument")
_SCOPE_RE = re.compile(r"^(firm|desk|account|strategy|instrument):[^\s:][^\s]{0,127}$")


def _check_scope(value: str) -> str:
    if not _SCOPE_RE.match(value):
        raise ValueError(
            f"scope must look like KIND:ID with KIND one of {', '.join(SCOPE_KINDS)}"
            f" (for example account:ACC-1), got {value!r}"
        )
    return value


Scope = Annotated[str, AfterValidator(_check_scope)]


def scope_kind(scope: str) -> str:
    """The kind part of a scope id.

    >>> scope_kind("desk:EQ-1")
    'desk'
    """
    return scope.split(":", 1)[0]


def scope_id(scope: str) -> str:
    """The id part of a scope id.

    >>> scope_id("strategy:ACC-1/momo")
    'ACC-1/momo'
    """
    return scope.split(":", 1)[1]


class Side(StrEnum):
    BUY = "buy"
    SELL = "sell"


class Severity(StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


class TradingState(StrEnum):
    ACTIVE = "active"
    REDUCING = "reducing"
    HALTED = "halted"


class EventModel(BaseModel):
    """Base of every model that travels on a topic: strict, immutable, finite numbers."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        allow_inf_nan=False,
        str_strip_whitespace=False,
        use_enum_values=False,
        validate_default=False,
    )


class Envelope(EventModel):
    """Fields every event carries (DESIGN.md section 3).

    `ts_event` is when the thing happened (event time, drives all risk logic); `ts_init` is
    when this message was created (wall clock, excluded from determinism comparisons).
    """

    TOPIC: ClassVar[str] = ""

    type: str
    schema_version: Annotated[int, Field(ge=1)] = 1
    event_id: Identifier
    ts_event: Nanos
    ts_init: Nanos
    source: Identifier
    seq: Annotated[int, Field(ge=0, le=INT64_MAX)] = 0
