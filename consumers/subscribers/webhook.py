"""Forward risk alerts to an HTTP endpoint, committing only what was delivered.

Failure semantics (at-least-once, nothing lost):

- The forwarder reads `risk.alerts` read_committed in its own consumer group and POSTs each
  alert, in partition order, as one JSON object (the event as published). Its offset is
  stored only once the receiver answered 2xx; stored offsets are committed every
  `commit_every` deliveries or `commit_interval_s`, on a rebalance and on stop. So a crash,
  a stop or a receiver outage never skips an alert: the next run starts after the last
  delivered one and may send a few again. Receivers deduplicate on the `Idempotency-Key`
  header (the alert's event_id, stable across replays).
- Connection errors, timeouts, 408, 425, 429 and 5xx are retried with exponential backoff
  (`backoff_initial_s` doubling up to `backoff_max_s`, +-20% jitter; a `Retry-After` header is
  honoured up to that cap), forever unless `max_attempts` is set; when the attempts run out
  `WebhookUnavailable` is raised without committing that alert.
- Any other answer (e.g. 400, 401, 404) means the receiver refuses the request: retrying
  cannot help, so `WebhookRejected` is raised, again without committing it. Fix the receiver
  (or the URL/token) and start again: forwarding resumes at that alert.
- Alerts filtered out by severity, and records that are not valid alerts, are passed over:
  their offsets are committed with the next delivered one.

A bearer token, when needed, comes from the environment (`STREAMRISK_WEBHOOK_TOKEN`), never
from the command line; the URL's user-info and the token never appear in messages.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime

from confluent_kafka import Consumer, KafkaException, TopicPartition

from producers.kafka import make_consumer
from schemas.codec import DecodeError, decode, encode
from schemas.outputs import RiskAlert
from schemas.settings import Settings

DEFAULT_GROUP = "streamrisk-webhook"
TOKEN_ENV = "STREAMRISK_WEBHOOK_TOKEN"
RETRYABLE_STATUS = frozenset({408, 425, 429})


class WebhookError(RuntimeError):
    """Forwarding stopped; the alert it was on is not committed and will be sent again."""


class WebhookUnavailable(WebhookError):
    """The receiver kept failing (connection error, timeout, 5xx, 429) `max_attempts` times."""


class WebhookRejected(WebhookError):
    """The receiver answered with a status that retrying cannot fix (4xx other than 408/425/429)."""


def redact_url(url: str) -> str:
    """The URL without user-info, for messages.

    >>> redact_url("https://user:secret@hooks.example/alerts?x=1")
    'https://hooks.example/alerts?x=1'
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, parts.query, ""))


def check_url(url: str) -> str:
    """The URL if it is http(s) with a host, else ValueError with a readable reason."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"webhook URL must be http:// or https:// with a host, got "
                         f"{redact_url(url)!r}")
    return url


@dataclass
class DeliveryPolicy:
    timeout_s: float = 10.0
    max_attempts: int = 0  # 0: retry until delivered or stopped
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 30.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        """Wait before attempt `attempt + 1` (attempt counts from 1)."""
        base = min(self.backoff_max_s, self.backoff_initial_s * 2 ** (attempt - 1))
        if retry_after is not None:
            base = min(self.backoff_max_s, max(base, retry_after))
        return base * random.uniform(0.8, 1.2)  # jitter: many forwarders do not retry in step


@dataclass
class ForwardStats:
    delivered: int = 0
    attempts: int = 0
    failures: int = 0
    filtered: int = 0
    skipped: int = 0
    commits: int = 0
    last_error: str = ""


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


@dataclass
class WebhookForwarder:
    """Consume `risk.alerts` and POST each alert to `url` (see the module doc for semantics).

    >>> fwd = WebhookForwarder(settings, "http://127.0.0.1:9000/hook")  # doctest: +SKIP
    >>> fwd.run(stop=threading.Event())  # doctest: +SKIP
    """

    settings: Settings
    url: str
    group_id: str = DEFAULT_GROUP
    severities: frozenset[str] = frozenset()
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    token: str | None = None
    from_beginning: bool = False
    commit_every: int = 100
    commit_interval_s: float = 1.0
    on_delivered: Callable[[RiskAlert], None] | None = None
    stats: ForwardStats = field(default_factory=ForwardStats)
    _stored: dict[tuple[str, int], int] = field(default_factory=dict, repr=False)
    _uncommitted: int = field(default=0, repr=False)
    _last_commit: float = field(default=0.0, repr=False)

    def __post_init__(self) -> None:
        check_url(self.url)

    # --- delivery ------------------------------------------------------------------------

    def _post_once(self, alert: RiskAlert, body: bytes) -> tuple[bool, float | None]:
        """(delivered, retry_after); raises WebhookRejected on a permanent refusal."""
        headers = {
            "Content-Type": "application/json",
            "User-Agent": "streamrisk-webhook/1",
            "Idempotency-Key": alert.event_id,
            "X-Streamrisk-Event-Id": alert.event_id,
            "X-Streamrisk-Severity": str(alert.severity.value),
            "X-Streamrisk-Reason-Code": alert.reason_code,
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=body, headers=headers, method="POST")
        self.stats.attempts += 1
        try:
            with urllib.request.urlopen(request, timeout=self.policy.timeout_s) as response:
                response.read()
                return True, None
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code in RETRYABLE_STATUS or exc.code >= 500:
                self.stats.last_error = f"HTTP {exc.code}"
                return False, _retry_after(exc.headers.get("Retry-After"))
            raise WebhookRejected(
                f"{redact_url(self.url)} refused alert {alert.event_id} with HTTP {exc.code} "
                f"{exc.reason}; nothing after it was committed") from None
        except (urllib.error.URLError, OSError) as exc:  # refused, reset, DNS, timeout
            reason = getattr(exc, "reason", exc)
            self.stats.last_error = str(reason) or type(exc).__name__
            return False, None

    def deliver(self, alert: RiskAlert, stop: threading.Event) -> bool:
        """POST until delivered (True), stopped (False) or out of attempts (raises)."""
        body = encode(alert)
        attempt = 0
        while not stop.is_set():
            attempt += 1
            delivered, retry_after = self._post_once(alert, body)
            if delivered:
                self.stats.delivered += 1
                return True
            self.stats.failures += 1
            if self.policy.max_attempts and attempt >= self.policy.max_attempts:
                raise WebhookUnavailable(
                    f"{redact_url(self.url)} did not accept alert {alert.event_id} after "
                    f"{attempt} attempts ({self.stats.last_error}); nothing after it was "
                    "committed")
            stop.wait(self.policy.delay(attempt, retry_after))
        return False

    # --- offsets -------------------------------------------------------------------------

    def _store(self, topic: str, partition: int, offset: int) -> None:
        self._stored[(topic, partition)] = offset + 1
        self._uncommitted += 1

    def _commit(self, consumer: Consumer, force: bool = False) -> None:
        due = (self._uncommitted >= self.commit_every
               or time.monotonic() - self._last_commit >= self.commit_interval_s)
        if not self._stored or not (force or due):
            return
        offsets = [TopicPartition(t, p, o) for (t, p), o in self._stored.items()]
        consumer.commit(offsets=offsets, asynchronous=False)
        self._stored.clear()
        self._uncommitted = 0
        self._last_commit = time.monotonic()
        self.stats.commits += 1

    # --- the loop ------------------------------------------------------------------------

    def run(self, stop: threading.Event | None = None, *,
            until: Callable[[ForwardStats], bool] | None = None) -> ForwardStats:
        """Forward until `stop` is set (or `until(stats)` is true); commits what was
        delivered before returning, also when it raises."""
        stop = stop or threading.Event()
        consumer = make_consumer(
            self.settings, self.group_id, read_committed=True,
            **{"auto.offset.reset": "earliest" if self.from_beginning else "latest"})

        def on_revoke(c: Consumer, partitions: list[TopicPartition]) -> None:
            # Hand over exactly what was delivered; called inside poll(), between alerts.
            # If this commit fails, the next owner re-sends from the last committed offset.
            with contextlib.suppress(KafkaException):
                self._commit(c, force=True)
            for tp in partitions:  # never commit for a partition we no longer own
                self._stored.pop((tp.topic, tp.partition), None)

        consumer.subscribe([self.settings.topic("risk.alerts")], on_revoke=on_revoke)
        try:
            while not stop.is_set() and not (until and until(self.stats)):
                msg = consumer.poll(0.2)
                if msg is None:
                    self._commit(consumer)
                    continue
                if msg.error() is not None:
                    continue
                topic, partition, offset = msg.topic() or "", msg.partition() or 0, msg.offset()
                try:
                    event = decode(msg.value() or b"", self.settings.max_message_bytes)
                except DecodeError:
                    event = None
                if not isinstance(event, RiskAlert):
                    self.stats.skipped += 1
                elif self.severities and event.severity.value not in self.severities:
                    self.stats.filtered += 1
                elif not self.deliver(event, stop):
                    break  # stopped while retrying: this alert stays uncommitted
                elif self.on_delivered is not None:
                    self.on_delivered(event)
                self._store(topic, partition, offset or 0)
                self._commit(consumer)
        finally:
            try:
                self._commit(consumer, force=True)
            finally:
                consumer.close()
        return self.stats
