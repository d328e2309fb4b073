"""Market and order-flow simulator with labelled scenarios, usable without Kafka.

>>> from producers.simulator import SimConfig, Simulation
>>> sim = Simulation(SimConfig(seed=1, instruments=3, accounts=2, duration_s=30))
>>> topics = {e.topic for e in sim}
>>> sorted(topics)
['market', 'orders']
"""

from producers.simulator.labels import Label, read_labels, write_labels
from producers.simulator.scenarios import SCENARIOS, describe_scenarios
from producers.simulator.simulation import (
    DEFAULT_START_NS,
    SimConfig,
    SimEvent,
    Simulation,
    simulate,
)

__all__ = ["DEFAULT_START_NS", "SCENARIOS", "Label", "SimConfig", "SimEvent", "Simulation",
           "describe_scenarios", "read_labels", "simulate", "write_labels"]
