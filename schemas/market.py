"""Market data events, all published to the `market` topic keyed by `symbol`."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, ClassVar, Literal

from pydantic import Field, model_validator

from schemas.common import Envelope, EventModel, Fraction, NonNegQty, Price, Qty, Side, Symbol


class MarketEvent(Envelope):
    TOPIC: ClassVar[str] = "market"
    symbol: Symbol

    @property
    def key(self) -> str:
        return self.symbol


class Trade(MarketEvent):
    """A print on the tape. `aggressor` is the side that crossed the spread, when known."""

    type: Literal["Trade"] = "Trade"
    price: Price
    qty: Qty
    aggressor: Side | None = None
    trade_id: str | None = None
    venue: str | None = None


class Quote(MarketEvent):
    """Top of book. A crossed or locked quote (bid >= ask) is valid input: the engine
    alerts on it."""

    type: Literal["Quote"] = "Quote"
    bid: Price
    ask: Price
    bid_size: NonNegQty
    ask_size: NonNegQty
    venue: str | None = None


class Bar(MarketEvent):
    """An OHLCV bar closing at `ts_event`, covering `interval_s` seconds."""

    type: Literal["Bar"] = "Bar"
    open: Price
    high: Price
    low: Price
    close: Price
    volume: NonNegQty
    interval_s: Annotated[float, Field(gt=0)] = 60.0

    @model_validator(mode="after")
    def _check_range(self) -> Bar:
        if self.high < max(self.open, self.close, self.low):
            raise ValueError(
                f"high {self.high} is below open {self.open}, close {self.close} or low {self.low}"
            )
        if self.low > min(self.open, self.close):
            raise ValueError(f"low {self.low} is above open {self.open} or close {self.close}")
        return self


class PriceLevel(EventModel):
    price: Price
    size: Qty


class BookTop(MarketEvent):
    """The best few levels of the book, best first on each side."""

    type: Literal["BookTop"] = "BookTop"
    bids: Annotated[list[PriceLevel], Field(max_length=50)]
    asks: Annotated[list[PriceLevel], Field(max_length=50)]

    @model_validator(mode="after")
    def _check_order(self) -> BookTop:
        if any(a.price < b.price for a, b in zip(self.bids, self.bids[1:], strict=False)):
            raise ValueError("bids must be sorted best (highest) first")
        if any(a.price > b.price for a, b in zip(self.asks, self.asks[1:], strict=False)):
            raise ValueError("asks must be sorted best (lowest) first")
        return self


class InstrumentPhase(StrEnum):
    TRADING = "trading"
    HALTED = "halted"
    AUCTION = "auction"
    CLOSED = "closed"
    RESTRICTED = "restricted"


class InstrumentStatus(MarketEvent):
    """Trading phase and reference data of an instrument (precision, size bounds, ADV)."""

    type: Literal["InstrumentStatus"] = "InstrumentStatus"
    status: InstrumentPhase
    tick_size: Price | None = None
    lot_size: Qty | None = None
    min_qty: Qty | None = None
    max_qty: Qty | None = None
    ref_price: Price | None = None
    adv: NonNegQty | None = Field(default=None, description="Average daily volume, in shares.")
    currency: Annotated[str, Field(min_length=3, max_length=3)] = "USD"
    sector: str | None = None

    @model_validator(mode="after")
    def _check_bounds(self) -> InstrumentStatus:
        if self.min_qty is not None and self.max_qty is not None and self.min_qty > self.max_qty:
            raise ValueError(f"min_qty {self.min_qty} is above max_qty {self.max_qty}")
        return self


class NewsSentiment(MarketEvent):
    """A scored news item: `sentiment` from -1 (very negative) to 1 (very positive)."""

    type: Literal["NewsSentiment"] = "NewsSentiment"
    sentiment: Annotated[float, Field(ge=-1, le=1)]
    relevance: Fraction = 1.0
    headline: Annotated[str, Field(max_length=500)] | None = None
    provider: str | None = None


MARKET_EVENTS: tuple[type[MarketEvent], ...] = (
    Trade, Quote, Bar, BookTop, InstrumentStatus, NewsSentiment)
