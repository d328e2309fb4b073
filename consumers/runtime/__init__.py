"""The generic worker runtime: consume -> process -> produce with exactly-once checkpoints,
state hand-over through a signed changelog, dead letters and metric hooks.

See `consumers.runtime.worker` for the failure semantics. Pieces:

- `worker`: the `Worker` loop, rebalance callbacks, checkpoints, recovery.
- `sink`: transactional (one producer per input partition) and at-least-once publishing.
- `restore`: reading changelog partitions back to their end.
- `tables`: side tables read in full by every worker.
- `metrics`: `RuntimeMetrics` and the `MetricsHooks` an exporter implements.
- `shutdown`: SIGTERM/SIGINT handling.

Run one: `streamrisk worker market`, or with any processor class
`python -m consumers.runtime --processor package.module:Class [worker options]`.
"""

from consumers.runtime.metrics import MetricsHooks, RuntimeMetrics
from consumers.runtime.worker import Worker, WorkerConfig, WorkerError

__all__ = ["MetricsHooks", "RuntimeMetrics", "Worker", "WorkerConfig", "WorkerError"]
