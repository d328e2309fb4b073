"""Reading changelog partitions back: the latest value per message key, up to the end.

A `ChangelogReader` is a separate consumer outside the group (`assign`, never `subscribe`),
read-committed, so only snapshots of committed checkpoints count. A partition's restore ends
when the reader's position reaches the partition's high watermark as it was when the restore
started, read without isolation: if a transaction is still open on the partition the read
waits for it to be resolved, instead of restoring state that a late commit would contradict.
(The transactional sink fences the previous owner before the restore starts, which aborts
anything it left open.) Restores are incremental: the worker calls `poll` between input
batches, so the partitions it already owns keep flowing while others restore, and a
partition revoked mid-restore is simply cancelled.

The broker is never trusted to have compacted the topic: every message is read and the
latest per key wins, tombstones included.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, TopicPartition

from producers.kafka import make_consumer
from schemas.settings import Settings


@dataclass
class RestoreJob:
    partition: int
    target: int
    """The high watermark to reach."""
    position: int = 0
    messages: int = 0
    started: float = field(default_factory=time.perf_counter)
    latest: dict[str, tuple[bytes | None, int, int]] = field(default_factory=dict)
    """message key -> (value, offset, timestamp ms) of the newest message seen."""

    @property
    def done(self) -> bool:
        return self.position >= self.target

    def values(self) -> dict[str, bytes | None]:
        return {key: entry[0] for key, entry in self.latest.items()}


class ChangelogReader:
    """Restores changelog partitions incrementally, many at a time."""

    def __init__(self, settings: Settings, topic: str, *, batch: int = 2000) -> None:
        self.topic = topic
        self.batch = batch
        self.timeout_s = max(5.0, settings.profile_defaults.socket_timeout_ms / 1000)
        eof: dict[str, Any] = {"enable.partition.eof": True}
        self._consumer: Consumer = make_consumer(settings, None, read_committed=True, **eof)
        # High watermarks must be read without isolation (a read-committed query returns the
        # last stable offset, which stops short of an open transaction).
        self._marks: Consumer = make_consumer(settings, None, read_committed=False)
        self._jobs: dict[int, RestoreJob] = {}

    @property
    def busy(self) -> bool:
        return bool(self._jobs)

    def restoring(self) -> set[int]:
        return set(self._jobs)

    def start(self, partitions: Iterable[int]) -> list[RestoreJob]:
        """Begin restoring `partitions`; returns the jobs already complete (empty partitions).
        Raises KafkaException when the broker cannot say where the partitions end."""
        finished, assign = [], []
        for partition in partitions:
            if partition in self._jobs:
                continue
            low, high = self._marks.get_watermark_offsets(
                TopicPartition(self.topic, partition), self.timeout_s, cached=False)
            job = RestoreJob(partition, target=high, position=low)
            if job.done:
                finished.append(job)
                continue
            self._jobs[partition] = job
            assign.append(TopicPartition(self.topic, partition, OFFSET_BEGINNING))
        if assign:
            self._consumer.incremental_assign(assign)
        return finished

    def cancel(self, partitions: Iterable[int]) -> None:
        gone = [p for p in partitions if self._jobs.pop(p, None) is not None]
        if gone:
            self._consumer.incremental_unassign([TopicPartition(self.topic, p) for p in gone])

    def poll(self, timeout: float) -> list[RestoreJob]:
        """Read what is available (waiting up to `timeout`); returns the jobs that finished."""
        if not self._jobs:
            return []
        jobs = self._jobs
        for message in self._consumer.consume(self.batch, timeout):
            job = jobs.get(message.partition() or 0)
            if job is None:
                continue
            offset = message.offset() or 0
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    job.position = max(job.position, offset)
                continue
            key = message.key()
            text = key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key or "")
            value = message.value()
            job.latest[text] = (value if isinstance(value, bytes) or value is None
                                else bytes(value), offset, message.timestamp()[1])
            job.position = offset + 1
            job.messages += 1
        finished = [job for job in jobs.values() if job.done]
        if finished:
            for job in finished:
                del jobs[job.partition]
            self._consumer.incremental_unassign(
                [TopicPartition(self.topic, job.partition) for job in finished])
        return finished

    def close(self) -> None:
        self._jobs.clear()
        self._consumer.close()
        self._marks.close()
