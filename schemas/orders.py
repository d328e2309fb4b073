"""Order-flow events, all published to the `orders` topic keyed by `account`.

Field names follow FIX: cl_ord_id / orig_cl_ord_id identify orders, exec_type and
leaves_qty / cum_qty describe executions.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import Envelope, Identifier, NonNegQty, Price, Qty, Scope, Side, Symbol


class OrdType(StrEnum):
    MARKET = "market"
    LIMIT = "limit"


class TimeInForce(StrEnum):
    DAY = "day"
    GTC = "gtc"
    IOC = "ioc"
    FOK = "fok"


class ExecType(StrEnum):
    NEW = "new"
    PARTIAL_FILL = "partial_fill"
    FILL = "fill"
    CANCELED = "canceled"
    REPLACED = "replaced"
    REJECTED = "rejected"
    EXPIRED = "expired"


class OrderEvent(Envelope):
    TOPIC: ClassVar[str] = "orders"
    account: Identifier

    @property
    def key(self) -> str:
        return self.account


class _PricedOrder(OrderEvent):
    symbol: Symbol
    side: Side
    ord_type: OrdType = OrdType.LIMIT
    price: Price | None = None
    qty: Qty
    strategy: Identifier = "default"

    @model_validator(mode="after")
    def _limit_needs_price(self) -> _PricedOrder:
        if self.ord_type is OrdType.LIMIT and self.price is None:
            raise ValueError("a limit order needs a price")
        return self


class OrderNew(_PricedOrder):
    type: Literal["OrderNew"] = "OrderNew"
    cl_ord_id: Identifier
    time_in_force: TimeInForce = TimeInForce.DAY


class OrderReplace(_PricedOrder):
    """Replaces the open order `orig_cl_ord_id` with new price/qty under `cl_ord_id`."""

    type: Literal["OrderReplace"] = "OrderReplace"
    cl_ord_id: Identifier
    orig_cl_ord_id: Identifier


class OrderCancel(OrderEvent):
    type: Literal["OrderCancel"] = "OrderCancel"
    cl_ord_id: Identifier
    orig_cl_ord_id: Identifier
    symbol: Symbol


class ExecutionReport(OrderEvent):
    """The venue's answer about one order. Fills carry `last_px` and `last_qty`."""

    type: Literal["ExecutionReport"] = "ExecutionReport"
    cl_ord_id: Identifier
    exec_id: Identifier
    exec_type: ExecType
    symbol: Symbol
    side: Side
    last_px: Price | None = None
    last_qty: NonNegQty = 0.0
    leaves_qty: NonNegQty
    cum_qty: NonNegQty
    avg_px: Price | None = None
    counterparty: Identifier | None = None
    text: Annotated[str, Field(max_length=500)] | None = None

    @model_validator(mode="after")
    def _fills_have_price(self) -> ExecutionReport:
        if self.exec_type in (ExecType.PARTIAL_FILL, ExecType.FILL):
            if self.last_px is None or self.last_qty <= 0:
                raise ValueError("a fill needs last_px and a positive last_qty")
            if self.cum_qty < self.last_qty:
                raise ValueError(f"cum_qty {self.cum_qty} is below last_qty {self.last_qty}")
        return self


class MassCancel(OrderEvent):
    """Cancel every open order of a scope (the kill switch emits these), optionally one symbol."""

    type: Literal["MassCancel"] = "MassCancel"
    scope: Scope
    symbol: Symbol | None = None
    reason: Annotated[str, Field(min_length=1, max_length=500)]
    requested_by: Identifier


ORDER_EVENTS: tuple[type[OrderEvent], ...] = (
    OrderNew, OrderCancel, OrderReplace, ExecutionReport, MassCancel)
