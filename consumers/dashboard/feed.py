"""The dashboard's background reader: output topics -> `DashboardState`.

It reads committed data only and never joins a consumer group or commits: it assigns every
partition of the dashboard topics, starting a little history back from the end of each
(`history` records per partition, per topic), so the page is useful the moment it opens and
any number of dashboards can run without touching the workers' groups.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping

from confluent_kafka import TopicPartition

from consumers.dashboard.state import DASHBOARD_TOPICS, DashboardState
from producers.kafka import make_consumer
from schemas.codec import DecodeError, decode
from schemas.settings import Settings

log = logging.getLogger("streamrisk.dashboard")
VIEWER_GROUP = "streamrisk-viewer-dashboard"
# Records per partition read back at start: enough chart points per instrument, recent
# alerts and the latest snapshot of every account on the compacted topics.
DEFAULT_HISTORY: Mapping[str, int] = {"risk.alerts": 100, "risk.states": 100,
                                      "risk.instruments": 400, "risk.accounts": 200,
                                      "risk.decisions": 100}


class FeedError(RuntimeError):
    """The feed cannot start (missing topic, unreachable broker); one readable line."""


class Feed:
    """Consumes the dashboard topics into `state` on a daemon thread until `stop()`."""

    def __init__(self, settings: Settings, state: DashboardState,
                 history: Mapping[str, int] | None = None) -> None:
        self.settings = settings
        self.state = state
        self.history = dict(DEFAULT_HISTORY if history is None else history)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.error: str | None = None
        self.consumer = make_consumer(settings, VIEWER_GROUP, read_committed=True)

    def _assignment(self) -> list[TopicPartition]:
        timeout = self.settings.connect_timeout_s
        assignment = []
        for short in DASHBOARD_TOPICS:
            full = self.settings.topic(short)
            try:
                metadata = self.consumer.list_topics(full, timeout=timeout)
            except Exception as exc:  # noqa: BLE001 - KafkaException; one line
                raise FeedError(f"cannot reach Kafka at {self.settings.bootstrap_servers}: "
                                f"{exc}") from None
            topic = metadata.topics.get(full)
            if topic is None or topic.error is not None or not topic.partitions:
                raise FeedError(f"topic {full} does not exist (create the topics with "
                                "`streamrisk topics create`)")
            back = self.history.get(short, 100)
            for partition in sorted(topic.partitions):
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(full, partition), timeout=timeout)
                assignment.append(TopicPartition(full, partition, max(low, high - back)))
        return assignment

    def start(self) -> Feed:
        """Assign the partitions (raising FeedError if a topic is missing) and start reading."""
        try:
            self.consumer.assign(self._assignment())
        except BaseException:
            self.consumer.close()
            raise
        self._thread = threading.Thread(target=self._run, name="dashboard-feed", daemon=True)
        self._thread.start()
        return self

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                for msg in self.consumer.consume(500, 0.2):
                    if msg.error() is not None:
                        continue
                    try:
                        event = decode(msg.value() or b"", self.settings.max_message_bytes)
                    except DecodeError:
                        self.state.skipped += 1
                        continue
                    self.state.apply(event)
        except Exception as exc:  # noqa: BLE001 - reported on /healthz, never a traceback
            self.error = f"{type(exc).__name__}: {exc}"
            log.error("dashboard feed stopped: %s", self.error)
        finally:
            self.consumer.close()

    def stop(self, timeout_s: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
