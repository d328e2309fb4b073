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

On the embedded broker (noida-db 0.2.3), two broker limits shape operations:
- It never expires a group member whose heartbeats stopped: a worker killed with -9 keeps
  its partitions (and blocks every later rebalance of its group) until it is restarted with
  the same `--instance-id` (static membership) or removed with a LeaveGroup on its behalf
  (`tests.processors.expire_dead_member` does that). Real Kafka expires it after
  `session.timeout.ms`.
- It does not time out abandoned transactions. The runtime never depends on that: a
  partition's next owner initialises the partition's transactional id, which aborts what the
  previous owner left open. A broker restart in the middle of a transaction can still leave a
  hanging transaction (pre-KIP-890 behaviour); the worker drops its producers the moment it
  loses the broker to make that unlikely.
"""

from consumers.runtime.metrics import MetricsHooks, RuntimeMetrics
from consumers.runtime.worker import Worker, WorkerConfig, WorkerError

__all__ = ["MetricsHooks", "RuntimeMetrics", "Worker", "WorkerConfig", "WorkerError"]
