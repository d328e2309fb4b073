"""What the demo simulates and how fast it publishes it.

The demo compresses simulated market time: with 12 instruments and 8 accounts the simulator
makes about 65 events per simulated second, so running it `SPEEDUP` (7) times faster than
the wall clock publishes about 450 events per second, and a 60 s demo covers seven minutes
of market time, room for every scenario with its own window. More instruments at a lower
speed-up (rather than fewer, faster) keep each instrument's updates slow enough on the wall
clock for the order worker's short per-instrument history (see `consumers.demo.feed`).

Two phases:

* warm-up: the simulated history before the first scenario starts is published as fast as
  the producer goes, so the models have seen some market before anything happens and the
  first alerts show within seconds of the start rather than after a minute of calm;
* live: from there on each event is published when its event time comes up on a clock
  running `speed` times faster than the wall clock, where `speed` is chosen once so the run
  ends at its deadline (bursts in the simulation are bursts on the wire too).

Event times start at "now" (whole seconds), so they are recent; the wall clock is used for
pacing only, never inside the events.

>>> plan = DemoPlan(seed=7, duration_s=60.0, scenarios=("flash-crash",), start_ns=0)
>>> plan.sim_duration_s, plan.config().scenarios
(420.0, ('flash-crash',))
>>> pacer = LivePacer(ts0=0, wall0=100.0, speed=10.0)
>>> pacer.due(5_000_000_000)  # 5 simulated seconds after ts0, at 10x: 0.5 s of wall time
100.5
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from producers.simulator import SCENARIOS, SimConfig, Simulation
from schemas.control import LimitConfig

NS = 1_000_000_000
SPEEDUP = 7.0
"""Simulated seconds per wall-clock second at the nominal pace (about 450 events/s)."""
DEFAULT_DURATION_S = 60.0
INSTRUMENTS = 12
ACCOUNTS = 8
MIN_SIM_S = 60.0  # shorter runs would squeeze every scenario into its minimum window
WARMUP_LEAD_S = 5.0  # simulated seconds of paced market before the first scenario
MIN_SPEED, MAX_SPEED = 0.5 * SPEEDUP, 4.0 * SPEEDUP  # a late start runs longer, not wild


def scenario_names() -> tuple[str, ...]:
    """Every scenario the simulator knows, market ones first (the simulator's order)."""
    return tuple(SCENARIOS)


def unknown_scenario(names: Iterable[str]) -> str | None:
    """The first name that is not a simulator scenario, or None.

    >>> unknown_scenario(["flash-crash", "moon-landing"])
    'moon-landing'
    """
    for name in names:
        if name not in SCENARIOS:
            return name
    return None


@dataclass(frozen=True)
class DemoPlan:
    """A demo run's simulation: seed, wall duration, scenarios (empty: all of them), and
    the first event time."""

    seed: int
    duration_s: float
    scenarios: tuple[str, ...]
    start_ns: int

    @property
    def chosen(self) -> tuple[str, ...]:
        # A name given twice is injected twice, on two entities (as the simulator does).
        return self.scenarios or scenario_names()

    @property
    def sim_duration_s(self) -> float:
        return max(MIN_SIM_S, self.duration_s * SPEEDUP)

    @property
    def end_ns(self) -> int:
        return self.start_ns + round(self.sim_duration_s * NS)

    def config(self) -> SimConfig:
        return SimConfig(seed=self.seed, instruments=INSTRUMENTS, accounts=ACCOUNTS,
                         scenarios=self.chosen, duration_s=self.sim_duration_s,
                         start_ns=self.start_ns)

    def simulation(self) -> Simulation:
        return Simulation(self.config())


def warmup_end_ns(sim: Simulation, lead_s: float = WARMUP_LEAD_S) -> int:
    """Event time where pacing starts: a little before the first scenario window."""
    starts = [label.start_ts for label in sim.planned_labels()]
    first = min(starts) if starts else sim.config.start_ns
    return max(sim.config.start_ns, first - round(lead_s * NS))


FIRM = "firm:DEMO"
DESKS = ("desk:DEMO-A", "desk:DEMO-B")


def hierarchy(accounts: Sequence[str], ts_ns: int) -> list[LimitConfig]:
    """The demo's firm and desks: the accounts alternate between two desks of one firm.

    Parent links only, no levels: the scope worker aggregates the desks and the firm (and
    the order workers gate with their states, which stay ACTIVE), while every decision is
    the one a run without a hierarchy would make.

    >>> [(c.scope, c.parent) for c in hierarchy(["A", "B", "C"], 0)][2:]
    [('desk:DEMO-B', 'firm:DEMO'), ('account:A', 'desk:DEMO-A'), ('account:B', 'desk:DEMO-B'), \
('account:C', 'desk:DEMO-A')]
    """
    links = [(FIRM, None), *((desk, FIRM) for desk in DESKS)]
    links += [(f"account:{a}", DESKS[i % len(DESKS)]) for i, a in enumerate(accounts)]
    return [LimitConfig(event_id=f"demo-hierarchy-{scope}-{ts_ns}", ts_event=ts_ns,
                        ts_init=ts_ns, source="demo", scope=scope, parent=parent,
                        changed_by="demo", reason="demo desks")
            for scope, parent in links]


def live_speed(sim_seconds_left: float, wall_seconds_left: float) -> float:
    """How much faster than the wall clock to run the rest so it ends on time, within
    [MIN_SPEED, MAX_SPEED].

    >>> live_speed(378.0, 54.0), live_speed(378.0, 1.0), live_speed(10.0, 60.0)
    (7.0, 28.0, 3.5)
    """
    if wall_seconds_left <= 0:
        return MAX_SPEED
    return min(MAX_SPEED, max(MIN_SPEED, sim_seconds_left / wall_seconds_left))


@dataclass(frozen=True)
class LivePacer:
    """Maps event times to wall-clock due times: `ts0` is due at `wall0`, later events
    `speed` times faster than real time."""

    ts0: int
    wall0: float
    speed: float

    def due(self, ts_event: int) -> float:
        return self.wall0 + max(0, ts_event - self.ts0) / NS / self.speed


def describe(names: Sequence[str]) -> str:
    """Short text for the header: `all 12 scenarios` or the names.

    >>> describe(scenario_names()), describe(["fat-finger"])
    ('all 12 scenarios', 'fat-finger')
    """
    if tuple(names) == scenario_names():
        return f"all {len(names)} scenarios"
    return ", ".join(names)
