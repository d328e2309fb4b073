"""The simulation: market + order flow + scheduled scenarios, as one ordered event stream.

`Simulation(config)` yields `SimEvent(topic, key, event)` in event-time order, with no Kafka
involved, so the demo, the engine tests and `streamrisk simulate` share it. Everything is
simulated: `ts_event` advances from `config.start_ns` in steps, `ts_init` equals `ts_event`,
`seq` counts per source (sim-feed, sim-oms, sim-venue) and `event_id` is
`<run tag>-<source>-<seq>`, where the run tag is a hash of the config. The same config
(seed included) therefore gives byte-identical events.

>>> sim = Simulation(SimConfig(seed=7, instruments=2, accounts=2, events=50))
>>> events = list(sim)
>>> len(events), events[0].event.type, events[0].topic
(50, 'InstrumentStatus', 'market')
>>> all(a.event.ts_event <= b.event.ts_event for a, b in zip(events, events[1:]))
True
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from producers.simulator.labels import Label
from producers.simulator.market import NS, MarketSimulator, Pending, make_instruments
from producers.simulator.orderflow import Account, OrderFlowSimulator, make_accounts
from producers.simulator.scenarios import (
    PREFERRED_STRATEGY,
    SCENARIOS,
    Scenario,
    StepContext,
)
from schemas.common import Envelope

DEFAULT_START_NS = 1_704_205_800 * NS  # 2024-01-02 09:30 New York, the session open
DEFAULT_HORIZON_S = 600.0  # where scenarios go when the run has no end
_SHORT = {"sim-feed": "feed", "sim-oms": "oms", "sim-venue": "venue"}


class SimEvent(NamedTuple):
    """One simulated message: catalogue topic (no prefix), key, event."""

    topic: str
    key: str
    event: Envelope


@dataclass(frozen=True)
class SimConfig:
    """What to simulate. Give `events` or `duration_s` (simulated seconds), or neither to run
    until the consumer stops iterating."""

    seed: int = 0
    instruments: int = 8
    accounts: int = 6
    scenarios: tuple[str, ...] = ()
    events: int | None = None
    duration_s: float | None = None
    news: bool = True
    start_ns: int = DEFAULT_START_NS
    dt_s: float = 0.5
    bar_interval_s: float = 60.0

    def __post_init__(self) -> None:
        if not 1 <= self.instruments <= 1000:
            raise ValueError(f"instruments must be between 1 and 1000, got {self.instruments}")
        if not 0 <= self.accounts <= 1000:
            raise ValueError(f"accounts must be between 0 and 1000, got {self.accounts}")
        if self.events is not None and self.duration_s is not None:
            raise ValueError("give events or duration_s, not both")
        if self.events is not None and self.events < 1:
            raise ValueError(f"events must be positive, got {self.events}")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError(f"duration_s must be positive, got {self.duration_s}")
        if not 0.01 <= self.dt_s <= 60 or self.bar_interval_s < self.dt_s:
            raise ValueError("dt_s must be in [0.01, 60] and bar_interval_s at least dt_s")
        if round(self.bar_interval_s / self.dt_s) * self.dt_s != self.bar_interval_s:
            raise ValueError("bar_interval_s must be a multiple of dt_s")
        unknown = [s for s in self.scenarios if s not in SCENARIOS]
        if unknown:
            raise ValueError(f"unknown scenario {unknown[0]!r} (known: {', '.join(SCENARIOS)})")
        if self.accounts == 0:
            needs = [s for s in self.scenarios if SCENARIOS[s].target == "account"]
            if needs:
                raise ValueError(f"scenario {needs[0]} needs at least one account")



class Simulation:
    """Iterate it for the events; `labels()` then gives the injected scenarios' windows."""

    def __init__(self, config: SimConfig) -> None:
        self.config = config
        seeds = np.random.SeedSequence(config.seed).spawn(5)
        rng_ref, rng_market, rng_acc, rng_flow, self._rng_scen = (
            np.random.default_rng(s) for s in seeds)
        self.instruments = make_instruments(config.instruments, rng_ref)
        self.market = MarketSimulator(self.instruments, rng_market, start_ns=config.start_ns,
                                      dt_s=config.dt_s, bar_interval_s=config.bar_interval_s,
                                      news=config.news)
        self.accounts: list[Account] = make_accounts(config.accounts, self.instruments, rng_acc)
        self.horizon_s = self._horizon()
        self.scenarios = self._plan()
        self.tag = self._tag()
        self.flow = (OrderFlowSimulator(self.accounts, self.market, rng_flow, self.tag)
                     if self.accounts else None)
        self.emitted = 0
        self.last_ts: int | None = None
        self._started = False

    def _tag(self) -> str:
        """Short hash of everything that shapes the stream, prefixing event and order ids.
        The run's length is left out, so a shorter run without scenarios is a prefix of a
        longer one; the scenario windows (which depend on the length) are in."""
        cfg = self.config
        text = repr((cfg.seed, cfg.instruments, cfg.accounts, cfg.news, cfg.start_ns, cfg.dt_s,
                     cfg.bar_interval_s, [s.label for s in self.scenarios]))
        return hashlib.blake2b(text.encode(), digest_size=3).hexdigest()

    # --- scenario schedule ---------------------------------------------------------------

    def _horizon(self) -> float:
        cfg = self.config
        if cfg.duration_s is not None:
            return cfg.duration_s
        if cfg.events is None:
            return DEFAULT_HORIZON_S
        if not cfg.scenarios:
            return 0.0  # nothing to place: no need to know the run's length
        # Measure this configuration's event rate on a minute without scenarios.
        probe = Simulation(SimConfig(seed=cfg.seed, instruments=cfg.instruments,
                                     accounts=cfg.accounts, duration_s=60.0, news=cfg.news,
                                     start_ns=cfg.start_ns, dt_s=cfg.dt_s,
                                     bar_interval_s=cfg.bar_interval_s))
        rate = max(1.0, sum(1 for _ in probe) / 60.0)
        # Scenarios add events (bursts, crashes) and order flow picks up after the first
        # minute: plan on 80% of what is left, so every window ends before the run does.
        extra = sum(SCENARIOS[name].extra_events for name in cfg.scenarios)
        events = max(0.3 * cfg.events, 0.8 * (cfg.events - extra))
        return max(cfg.dt_s, events / rate)

    def _plan(self) -> list[Scenario]:
        cfg, rng = self.config, self._rng_scen
        names = list(cfg.scenarios)
        if not names:
            return []
        horizon = self.horizon_s
        warmup = min(120.0, max(20.0, 0.15 * horizon))
        span_end = 0.92 * horizon
        symbols = [self.instruments[i].symbol for i in rng.permutation(len(self.instruments))]
        n_instr = sum(1 for n in names if SCENARIOS[n].target == "instrument")
        targeted = symbols[:n_instr]
        used_accounts: list[str] = []
        planned: list[Scenario] = []
        next_symbol = 0
        for k, name in enumerate(names):
            cls = SCENARIOS[name]
            # Evenly spaced starts, moved earlier when a long window would not fit.
            start_s = warmup + max(0.0, span_end - warmup) * k / len(names)
            start_s = max(warmup, min(start_s, 0.97 * horizon - cls.nominal_s))
            length_s = min(cls.nominal_s, max(cls.min_s, 0.97 * horizon - start_s))
            start_ns = cfg.start_ns + self._steps(start_s) * self.market.dt_ns
            end_ns = start_ns + max(1, self._steps(length_s)) * self.market.dt_ns
            if cls.target == "instrument":
                entity = symbols[next_symbol % len(symbols)]
                next_symbol += 1
                planned.append(cls(entity, start_ns, end_ns, rng))
                continue
            acc = self._pick_account(name, used_accounts)
            used_accounts.append(acc.id)
            calm = [s for s in acc.symbols if s not in targeted] or acc.symbols
            symbol = calm[int(rng.integers(len(calm)))]
            planned.append(cls(acc.id, start_ns, end_ns, rng, symbol=symbol))
        return planned

    def _steps(self, seconds: float) -> int:
        return round(seconds / self.config.dt_s)

    def _pick_account(self, name: str, used: Sequence[str]) -> Account:
        preferred = PREFERRED_STRATEGY.get(name)
        free = [a for a in self.accounts if a.id not in used]
        for pool in ([a for a in free if a.strategy == preferred], free):
            if pool:
                return pool[0]
        return self.accounts[len(used) % len(self.accounts)]

    # --- the event stream ----------------------------------------------------------------

    def __iter__(self) -> Iterator[SimEvent]:
        return self.events()

    def events(self) -> Iterator[SimEvent]:
        if self._started:
            raise RuntimeError("a Simulation runs once: make a new one to run again")
        self._started = True
        cfg = self.config
        limit = cfg.events
        end_ns = None if cfg.duration_s is None else cfg.start_ns + round(cfg.duration_s * NS)
        seqs = {source: 0 for source in _SHORT}
        batch: list[Pending] = self.market.reference_events()
        t0 = cfg.start_ns
        while True:
            batch.sort(key=lambda p: p.ts)  # stable: ties keep generation order
            for pending in batch:
                if limit is not None and self.emitted >= limit:
                    return
                seq = seqs[pending.source]
                seqs[pending.source] = seq + 1
                event = pending.cls(
                    event_id=f"{self.tag}-{_SHORT[pending.source]}-{seq}", ts_event=pending.ts,
                    ts_init=pending.ts, source=pending.source, seq=seq, **pending.fields)
                self.emitted += 1
                self.last_ts = pending.ts
                yield SimEvent(pending.topic, pending.key, event)
            if end_ns is not None and t0 >= end_ns:
                return
            batch = self._step(t0)
            t0 += self.market.dt_ns

    def _step(self, t0: int) -> list[Pending]:
        ctx = StepContext(t0, self.market, self.flow)
        for scenario in self.scenarios:
            if scenario.start_ns <= t0 < scenario.end_ns:
                scenario.on_step(ctx)
        batch: list[Pending] = []
        if self.flow is not None:
            self.flow.passive_fills(t0)
            self.flow.strategies(t0)
            batch = self.flow.execute()
        batch.extend(self.market.step(t0, ctx.effects))
        return batch

    # --- ground truth --------------------------------------------------------------------

    def planned_labels(self) -> list[Label]:
        """Every scheduled scenario window, whether or not the run reaches it."""
        return [s.label for s in self.scenarios]

    def labels(self) -> list[Label]:
        """Windows of the scenarios the emitted events actually contain, clipped to the last
        emitted event (a run stopped by `events` may end inside a window)."""
        if self.last_ts is None:
            return []
        out = []
        for label in self.planned_labels():
            if label.start_ts > self.last_ts:
                continue
            out.append(Label(label.scenario, label.entity, label.start_ts,
                             min(label.end_ts, self.last_ts)))
        return out

    def not_injected(self) -> list[Label]:
        """Scheduled windows the run stopped before reaching, or cut short."""
        kept = {(lb.scenario, lb.entity, lb.start_ts): lb.end_ts for lb in self.labels()}
        return [lb for lb in self.planned_labels()
                if kept.get((lb.scenario, lb.entity, lb.start_ts)) != lb.end_ts]


def simulate(config: SimConfig | None = None, **options: object) -> Iterator[SimEvent]:
    """The simulated stream for `config` (or SimConfig(**options)), in event-time order.

    >>> first = next(simulate(seed=1, instruments=1, accounts=0, events=1))
    >>> first.event.type, first.key
    ('InstrumentStatus', 'ACME')
    """
    return Simulation(config or SimConfig(**options)).events()  # type: ignore[arg-type]
