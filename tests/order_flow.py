"""A desk day in phases, for the desk/firm aggregation tests (in-process and through Kafka).

desk:D has a day-loss limit (soft 150, hard 400) and three accounts A1, A2, A3 under it.

* phase "losses": A1 and A2 buy 100 AAPL at 100, A3 10; the price falls by `losses[0]` and
  A1 and A2 each mark the loss with a small order: each loses less than the desk's soft
  level (which also binds each account) but together more -> desk REDUCING;
* phase "gate": A3 sends a buy (adds exposure: denied TRADING_STATE while the desk reduces)
  and a sell (reduces A3's position: accepted);
* phase "more": the price falls by `losses[1]` more and A1 and A2 mark it -> desk HALTED.

Each phase ends with a trade a little after its last order, so the Kafka order worker's
event-time hold (which waits for instrument risk past each order's time) releases at once.
"""

from __future__ import annotations

from typing import Any

from schemas.common import Side
from schemas.control import LimitConfig, LimitLevel
from schemas.market import InstrumentPhase, InstrumentStatus, Trade
from schemas.orders import ExecType, ExecutionReport, OrderNew
from schemas.recording import RecordedMessage

S = 1_000_000_000
T0 = 1_704_205_800 * S
DESK = "desk:D"
ACCOUNTS = ("A1", "A2", "A3")
DAY_LOSS = (150.0, 400.0)


def _rec(topic: str, key: str, event: Any) -> RecordedMessage:
    return RecordedMessage.from_event(topic, key, event)


def desk_day(losses: tuple[float, float] = (1.0, 1.5), *, tag: str = "dd"
             ) -> dict[str, list[RecordedMessage]]:
    """The phases ("setup", "losses", "gate", "more") as recorded messages, in order."""
    n = iter(range(1, 10_000))
    soft, hard = DAY_LOSS
    setup = [_rec("risk.limits", DESK, LimitConfig(
        event_id=f"{tag}-l-desk", ts_event=T0, ts_init=T0, source="test", scope=DESK,
        changed_by="alice", limits={"day_loss": LimitLevel(soft=soft, hard=hard)}))]
    setup += [_rec("risk.limits", f"account:{a}", LimitConfig(
        event_id=f"{tag}-l-{a}", ts_event=T0, ts_init=T0, source="test", scope=f"account:{a}",
        parent=DESK, changed_by="alice")) for a in ACCOUNTS]
    setup.append(_rec("market", "AAPL", InstrumentStatus(
        event_id=f"{tag}-st", ts_event=T0, ts_init=T0, source="test", symbol="AAPL",
        status=InstrumentPhase.TRADING, tick_size=0.01, lot_size=1.0)))
    phases: dict[str, list[RecordedMessage]] = {"setup": setup}

    def trade(out: list[RecordedMessage], ts: int, price: float) -> None:
        i = next(n)
        out.append(_rec("market", "AAPL", Trade(
            event_id=f"{tag}-t{i}", ts_event=ts, ts_init=ts, source="test", seq=i,
            symbol="AAPL", price=price, qty=100.0)))

    def order(out: list[RecordedMessage], account: str, ts: int, side: Side, qty: float,
              price: float, filled: bool) -> None:
        i = next(n)
        out.append(_rec("orders", account, OrderNew(
            event_id=f"{tag}-o{i}", ts_event=ts, ts_init=ts, source="test", account=account,
            symbol="AAPL", side=side, price=price, qty=qty, cl_ord_id=f"{tag}-c{i}")))
        if filled:
            out.append(_rec("orders", account, ExecutionReport(
                event_id=f"{tag}-f{i}", ts_event=ts + 1000, ts_init=ts, source="venue",
                account=account, cl_ord_id=f"{tag}-c{i}", exec_id=f"{tag}-x{i}",
                exec_type=ExecType.FILL, symbol="AAPL", side=side, last_px=price,
                last_qty=qty, leaves_qty=0.0, cum_qty=qty)))

    first: list[RecordedMessage] = []
    trade(first, T0 + S, 100.0)
    for account, qty in (("A1", 100), ("A2", 100), ("A3", 10)):
        order(first, account, T0 + 2 * S, Side.BUY, qty, 100.0, filled=True)
    price = 100.0 - losses[0]
    trade(first, T0 + 10 * S, price)
    for account in ("A1", "A2"):  # a small order: the account marks and publishes its risk
        order(first, account, T0 + 12 * S, Side.BUY, 1, price, filled=True)
    trade(first, T0 + 13 * S, price)
    phases["losses"] = first

    gate: list[RecordedMessage] = []
    order(gate, "A3", T0 + 14 * S, Side.BUY, 5, price, filled=False)
    order(gate, "A3", T0 + 15 * S, Side.SELL, 5, price, filled=False)
    trade(gate, T0 + 16 * S, price)
    phases["gate"] = gate

    more: list[RecordedMessage] = []
    price -= losses[1]
    trade(more, T0 + 20 * S, price)
    for account in ("A1", "A2"):
        order(more, account, T0 + 22 * S, Side.SELL, 1, price, filled=True)
    trade(more, T0 + 23 * S, price)
    phases["more"] = more
    return phases


def flat(phases: dict[str, list[RecordedMessage]]) -> list[RecordedMessage]:
    """Every phase's messages, in order."""
    return [m for messages in phases.values() for m in messages]


def final_day_pnl(losses: tuple[float, float] = (1.0, 1.5)) -> float:
    """desk:D's day PnL after the last phase: A1 and A2 each hold 100 shares bought at 100
    through both falls and 1 bought after the first; A3's last contribution (its orders of
    the gate phase) marked its 10 shares after the first fall only."""
    a, b = losses
    return 2 * -(100 * (a + b) + 1 * b) - 10 * a
