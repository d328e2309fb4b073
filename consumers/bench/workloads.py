"""The inputs the benchmarks run on, built once per run and shared by every measurement.

- `market_messages`: the simulator's market stream (quotes, trades, bars, reference data,
  news) for some instruments, encoded once, each instrument pinned to a partition so that
  every partition carries about the same number of events (two workers of a group then get
  the same load: the point is to measure the runtime, not the luck of hashing 30 keys).
- `synthetic_quotes`: a cheap quote/trade random walk for any number of instruments (the
  simulator stops at 1,000), for the scaling curves.
- `order_day`: a seeded day of orders, fills, cancels, replaces, instrument risk and limit
  configs for the order worker (`benchmarks/decision_bench.py` shows it in detail).
- `codec_samples`: one representative event of each market and order type.

>>> msgs = market_messages(200, instruments=4, seed=1)
>>> len(msgs), sorted({m.partition for m in msgs}) == sorted(set(range(4)))
(200, True)
"""

from __future__ import annotations

import itertools
import random
from collections import Counter
from collections.abc import Iterable
from typing import Any, NamedTuple

from schemas.codec import encode
from schemas.common import Envelope, Side
from schemas.control import LimitConfig, LimitLevel
from schemas.market import (
    Bar,
    BookTop,
    InstrumentPhase,
    InstrumentStatus,
    NewsSentiment,
    PriceLevel,
    Quote,
    Trade,
)
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
from schemas.outputs import InstrumentRisk

MARKET_PARTITIONS = 8
MS = 1_000_000
T0 = 1_704_205_800_000_000_000  # 2024-01-02 09:30 New York


class Message(NamedTuple):
    """One input message: key, partition, encoded event, and the event's id."""

    key: str
    partition: int
    value: bytes
    event_id: str


def balanced_partitions(counts: Counter[str], partitions: int) -> dict[str, int]:
    """Key -> partition, busiest keys first onto the least loaded partition."""
    load = [0] * partitions
    where: dict[str, int] = {}
    for key, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])):
        target = min(range(partitions), key=lambda p: (load[p], p))
        where[key] = target
        load[target] += n
    return where


def to_messages(events: Iterable[Envelope], key_of: Any,
                partitions: int = MARKET_PARTITIONS) -> list[Message]:
    events = list(events)
    keys = [key_of(e) for e in events]
    where = balanced_partitions(Counter(keys), partitions)
    return [Message(k, where[k], encode(e), e.event_id) for k, e in zip(keys, events, strict=True)]


def market_events(events: int, *, instruments: int, seed: int,
                  crossed_every: int = 0) -> list[Envelope]:
    """The first `events` market events of a simulation. With `crossed_every` = k, every
    k-th quote has bid and ask swapped: a crossed quote, which the market worker always
    alerts on (CROSSED_QUOTE has no cooldown), so latency runs get alerts to time."""
    from producers.simulator import SimConfig, Simulation

    sim = Simulation(SimConfig(seed=seed, instruments=instruments, accounts=0))
    out: list[Envelope] = []
    quotes = 0
    for item in itertools.islice((e for e in sim if e.topic == "market"), events):
        event = item.event
        if crossed_every and isinstance(event, Quote):
            quotes += 1
            if quotes % crossed_every == 0:
                event = event.model_copy(update={"bid": event.ask, "ask": event.bid})
        out.append(event)
    return out


def market_messages(events: int, *, instruments: int, seed: int, crossed_every: int = 0,
                    partitions: int = MARKET_PARTITIONS) -> list[Message]:
    stream = market_events(events, instruments=instruments, seed=seed,
                           crossed_every=crossed_every)
    return to_messages(stream, lambda e: e.symbol, partitions)


def synthetic_quotes(symbols: list[str], events: int, *, seed: int, start_ns: int,
                     price: float = 100.0, step_s: float = 0.5) -> list[Envelope]:
    """`events` quotes and trades over `symbols` in random order, each symbol a random walk
    starting at `price` and at `start_ns`, one step of event time apart per symbol."""
    rng = random.Random(seed)
    last = dict.fromkeys(symbols, price)
    ts = dict.fromkeys(symbols, start_ns)
    seq = dict.fromkeys(symbols, 0)
    out: list[Envelope] = []
    step = int(step_s * 1e9)
    for n in range(events):
        sym = symbols[n % len(symbols)] if n < len(symbols) else rng.choice(symbols)
        ts[sym] += step
        seq[sym] += 1
        px = last[sym] = round(last[sym] * (1.0 + rng.gauss(0.0, 0.0005)), 4)
        common: dict[str, Any] = {"event_id": f"syn-{seed}-{sym}-{seq[sym]}", "ts_event": ts[sym],
                  "ts_init": ts[sym], "source": "bench", "seq": seq[sym], "symbol": sym}
        if n % 2:
            out.append(Trade(**common, price=px, qty=float(rng.randint(1, 20) * 100)))
        else:
            half = max(0.01, round(px * 0.0002, 2))
            out.append(Quote(**common, bid=round(px - half, 2), ask=round(px + half, 2),
                             bid_size=float(rng.randint(1, 9) * 100),
                             ask_size=float(rng.randint(1, 9) * 100)))
    return out


def order_day(orders: int, instruments: int, accounts: int, seed: int) -> list[Envelope]:
    """A seeded synthetic day: `instruments` random-walk instruments publish an
    InstrumentRisk snapshot per tick, `accounts` accounts send limit orders around the
    reference price, about half fill (partly, then fully) and most of the rest are cancelled,
    so every account keeps a realistic book of open orders; a few replaces and limit configs
    (firm, desk, account, strategy, instrument levels) are mixed in."""
    rng = random.Random(seed)
    symbols = [f"SYM{i:03d}" for i in range(instruments)]
    price = {s: rng.uniform(20.0, 400.0) for s in symbols}
    strategies = ["momo", "mm", "arb"]
    events: list[Envelope] = []
    n = 0

    def nid(prefix: str) -> str:
        nonlocal n
        n += 1
        return f"{prefix}{n}"

    def level(soft: float | None, hard: float | None) -> LimitLevel:
        return LimitLevel(soft=soft, hard=hard)

    ts = 1_700_000_000_000_000_000
    events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                              scope="firm:F", changed_by="bench",
                              limits={"order_notional": level(2e6, 1e7),
                                      "gross_exposure": level(5e7, 1e8)}))
    for d in range(3):
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"desk:D{d}", parent="firm:F", changed_by="bench",
                                  limits={"day_loss": level(2e6, 5e6)}))
    for a in range(accounts):
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"account:ACC{a:03d}", parent=f"desk:D{a % 3}",
                                  changed_by="bench", risk_appetite=1.0 + (a % 4) * 0.25,
                                  limits={"position_long": level(5e6, 2e7),
                                          "order_rate": level(200.0, 400.0)}))
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"strategy:ACC{a:03d}/momo", changed_by="bench",
                                  limits={"net_exposure": level(None, 1e7)}))
    for s in symbols[:5]:
        events.append(LimitConfig(event_id=nid("l"), ts_event=ts, ts_init=0, source="bench",
                                  scope=f"instrument:{s}", changed_by="bench",
                                  limits={"order_qty": level(None, 50_000.0)}))

    def tick(symbol: str) -> None:
        price[symbol] *= 1.0 + rng.gauss(0.0, 0.0008)
        px = round(price[symbol], 2)
        events.append(InstrumentRisk(
            event_id=nid("ir"), ts_event=ts, ts_init=0, source="bench", symbol=symbol,
            price=px, vol=0.0008, var_95=0.0013, var_99=0.0019, es_975=0.0017,
            var_method="ewma", adv=2_000_000.0, spread_bps=2.0, tick_size=0.01,
            lot_size=1.0))

    for s in symbols:
        tick(s)
    open_orders: dict[str, list[tuple[str, str, Side, float, float, str]]] = {}
    for i in range(orders):
        ts += rng.randint(200_000, 2 * MS)
        if i % 3 == 0:
            tick(rng.choice(symbols))
        account = f"ACC{rng.randrange(accounts):03d}"
        book = open_orders.setdefault(account, [])
        symbol = rng.choice(symbols)
        side = rng.choice((Side.BUY, Side.SELL))
        ref = round(price[symbol], 2)
        px = round(ref * (1 + (-1 if side is Side.BUY else 1) * rng.uniform(0.0001, 0.003)), 2)
        qty = float(rng.choice((100, 200, 300, 500, 1000)))
        strategy = rng.choice(strategies)
        cl = nid("c")
        if book and rng.random() < 0.05:
            old = book.pop(rng.randrange(len(book)))
            events.append(OrderReplace(
                event_id=nid("r"), ts_event=ts, ts_init=0, source="bench", account=account,
                symbol=old[1], side=old[2], qty=old[3], price=round(old[4] * 1.0005, 2),
                strategy=old[5], cl_ord_id=cl, orig_cl_ord_id=old[0]))
            book.append((cl, old[1], old[2], old[3], round(old[4] * 1.0005, 2), old[5]))
        else:
            events.append(OrderNew(event_id=nid("o"), ts_event=ts, ts_init=0, source="bench",
                                   account=account, symbol=symbol, side=side, qty=qty,
                                   price=px, strategy=strategy, cl_ord_id=cl))
            book.append((cl, symbol, side, qty, px, strategy))
        # settle older orders: fills (some in two parts) or cancels, keeping books bounded
        while len(book) > rng.randint(5, 25):
            cl_old, sym, sd, q, p, _ = book.pop(0)
            ts += 1000
            if rng.random() < 0.55:
                part = q / 2 if rng.random() < 0.3 else q
                events.append(ExecutionReport(
                    event_id=nid("f"), ts_event=ts, ts_init=0, source="bench",
                    account=account, cl_ord_id=cl_old, exec_id=nid("x"),
                    exec_type=ExecType.PARTIAL_FILL if part < q else ExecType.FILL,
                    symbol=sym, side=sd, last_px=p, last_qty=part, leaves_qty=q - part,
                    cum_qty=part, counterparty=f"CP{rng.randrange(4)}"))
                if part < q:
                    events.append(ExecutionReport(
                        event_id=nid("f"), ts_event=ts + 1000, ts_init=0, source="bench",
                        account=account, cl_ord_id=cl_old, exec_id=nid("x"),
                        exec_type=ExecType.FILL, symbol=sym, side=sd, last_px=p,
                        last_qty=q - part, leaves_qty=0.0, cum_qty=q))
            else:
                events.append(OrderCancel(event_id=nid("x"), ts_event=ts, ts_init=0,
                                          source="bench", account=account, cl_ord_id=nid("c"),
                                          orig_cl_ord_id=cl_old, symbol=sym))
    return events


def order_topic(event: Envelope) -> tuple[str, str]:
    """(catalogue topic, key) an event of `order_day` is published to."""
    if isinstance(event, InstrumentRisk):
        return "risk.instruments", event.symbol
    if isinstance(event, LimitConfig):
        return "risk.limits", event.scope
    return "orders", event.account  # type: ignore[attr-defined]


def _env(n: int) -> dict[str, Any]:
    return {"event_id": f"bench-{n:08d}", "ts_event": T0 + n * 1_000_000,
            "ts_init": T0 + n * 1_000_000 + 35_000, "source": "sim-feed", "seq": n}


def codec_samples() -> list[Envelope]:
    """One representative event of each market and order type (realistic field values,
    optional fields filled as a live feed would)."""
    book = [PriceLevel(price=189.50 - i * 0.01, size=100 * (i + 1)) for i in range(5)]
    asks = [PriceLevel(price=189.52 + i * 0.01, size=100 * (i + 1)) for i in range(5)]
    return [
        Trade(**_env(1), symbol="ACME", price=189.51, qty=300, aggressor=Side.BUY,
              trade_id="T-1029384", venue="XNAS"),
        Quote(**_env(2), symbol="ACME", bid=189.50, ask=189.52, bid_size=400, ask_size=700,
              venue="XNAS"),
        Bar(**_env(3), symbol="ACME", open=189.1, high=189.9, low=188.7, close=189.51,
            volume=182_300, interval_s=60),
        BookTop(**_env(4), symbol="ACME", bids=book, asks=asks),
        InstrumentStatus(**_env(5), symbol="ACME", status=InstrumentPhase.TRADING,
                         tick_size=0.01, lot_size=1, min_qty=1, max_qty=100_000,
                         ref_price=189.2, adv=52_000_000, currency="USD", sector="tech"),
        NewsSentiment(**_env(6), symbol="ACME", sentiment=-0.62, relevance=0.9,
                      headline="ACME misses earnings estimates", provider="newswire"),
        OrderNew(**_env(7), account="ACC-0007", symbol="ACME", side=Side.BUY,
                 ord_type=OrdType.LIMIT, price=189.50, qty=500, strategy="momo",
                 cl_ord_id="ACC-0007-000123", time_in_force=TimeInForce.DAY),
        OrderCancel(**_env(8), account="ACC-0007", cl_ord_id="ACC-0007-000124",
                    orig_cl_ord_id="ACC-0007-000123", symbol="ACME"),
        OrderReplace(**_env(9), account="ACC-0007", symbol="ACME", side=Side.BUY, price=189.48,
                     qty=400, strategy="momo", cl_ord_id="ACC-0007-000125",
                     orig_cl_ord_id="ACC-0007-000123"),
        ExecutionReport(**_env(10), account="ACC-0007", cl_ord_id="ACC-0007-000125",
                        exec_id="X-99812", exec_type=ExecType.PARTIAL_FILL, symbol="ACME",
                        side=Side.BUY, last_px=189.48, last_qty=200, leaves_qty=200,
                        cum_qty=200, avg_px=189.48, counterparty="CP-ATLAS"),
        MassCancel(**_env(11), account="ACC-0007", scope="account:ACC-0007", symbol="ACME",
                   reason="kill switch", requested_by="risk-desk"),
    ]
