"""Prometheus metrics of one worker: a `MetricsHooks` listener and a read-only HTTP endpoint.

`serve(metrics, host, port)` gives the worker's `RuntimeMetrics` a `PrometheusMetrics`
listener with its own `CollectorRegistry` (never the process-global one, so two workers in
one process, or a test, never share series) and serves it from a daemon thread, on loopback
unless told otherwise, at any path (`/metrics` is what Prometheus probes). GET only (any
other method is answered 405): the endpoint changes nothing.

The names and labels are the contract of `deploy/README.md` (Grafana and the alert rules use
them); every series carries `worker` (the processor name). How each one is measured:

* `events_in_total{topic}`: input messages handled, bad ones included (batch hook).
* `events_out_total{topic}`: messages produced per catalogue topic, dead letters included
  (`dlq`), changelog snapshots not; reported at each checkpoint.
* `consumer_lag{topic,partition}`: read at scrape time from the runtime's latest sample (taken
  at each checkpoint); a partition the worker gave up disappears.
* `partitions_assigned`: assigned minus revoked or lost partitions, from the rebalance hook.
* `unsnapshotted_partitions`: reported at each checkpoint (a crash now would replay their input
  from their replay marks; it drops to 0 once a quiet worker's snapshot rounds are done).
* `processing_latency_seconds`: the runtime times batches, not events (a clock read per event
  would cost the hot path), so each batch adds its per-event mean once per event: `_count`
  is exact in events and `_sum` in seconds; the buckets are those of the batch means.
* `decision_latency_seconds`, `alerts_total`, `decisions_total`, `model_*`: read from the
  outputs themselves (RiskDecision.decision_latency_ns, RiskAlert reason and severity,
  ModelHealth); only those three topics are decoded.
* `model_health_zone{model,zone}` and `model_fallback_active{model}`: entities whose latest
  ModelHealth from this replica says so; `model` is the VaR method (`parametric`, `tail`...),
  not the per-instrument model id, to keep the series count bounded.
* `checkpoint_duration_seconds`: checkpoints that committed something (idle ticks that find
  nothing to commit are not observed: they would drown the quantiles in zeros).

>>> from consumers.runtime.metrics import RuntimeMetrics
>>> runtime = RuntimeMetrics(worker="market-worker", input_topic="market")
>>> prom = PrometheusMetrics(runtime)
>>> runtime.batch(3, 0.003)
>>> runtime.dead_letter("undecodable", 1)
>>> prom.registry.get_sample_value("streamrisk_events_in_total",
...                                 {"worker": "market-worker", "topic": "market"})
3.0
>>> prom.registry.get_sample_value("streamrisk_dead_letters_total",
...                                 {"worker": "market-worker", "error_kind": "undecodable"})
1.0
"""

from __future__ import annotations

import bisect
import errno
import socket
import threading
from collections.abc import Iterable, Iterator, Sequence
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import orjson
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import make_wsgi_app
from prometheus_client.registry import Collector

from consumers.runtime.metrics import MetricsHooks, RuntimeMetrics
from schemas.outputs import ModelHealth, RiskAlert, RiskDecision

PREFIX = "streamrisk_"
DEFAULT_HOST = "127.0.0.1"
PROCESSING_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025,
                      0.05, 0.1, 0.25, 1.0)
DECISION_BUCKETS = (5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 7.5e-4, 1e-3, 2.5e-3, 5e-3,
                    0.01, 0.05)  # the target is p99 < 1 ms: keep bounds around it
CHECKPOINT_BUCKETS = (1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                      10.0, 30.0)
RESTORE_BUCKETS = (1e-3, 5e-3, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                   120.0)
ZONES = ("green", "yellow", "red")
ALERTS, DECISIONS = RiskAlert.TOPIC, RiskDecision.TOPIC
WATCHED = frozenset({ALERTS, DECISIONS, ModelHealth.TOPIC})


class MetricsServerError(RuntimeError):
    """The endpoint cannot start; the message is one readable line."""


class _WeightedHistogram:
    """A histogram that takes one value `weight` times in O(buckets) (prometheus_client's
    Histogram only observes one value at a time)."""

    def __init__(self, buckets: Sequence[float]) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.lock = threading.Lock()

    def observe(self, value: float, weight: int) -> None:
        index = bisect.bisect_left(self.bounds, value)  # first bound >= value (le semantics)
        with self.lock:
            self.counts[index] += weight
            self.sum += value * weight

    def observe_all(self, values: Sequence[float]) -> None:
        """Many values at once: one lock per batch instead of one per value."""
        bounds, locate = self.bounds, bisect.bisect_left
        indexes = [locate(bounds, v) for v in values]
        total = sum(values)
        with self.lock:
            counts = self.counts
            for index in indexes:
                counts[index] += 1
            self.sum += total

    def family(self, name: str, documentation: str, labels: dict[str, str]) -> Metric:
        with self.lock:
            counts, total = list(self.counts), self.sum
        cumulative, running = [], 0
        for bound, count in zip((*self.bounds, float("inf")), counts, strict=True):
            running += count
            cumulative.append((_le(bound), float(running)))
        family = HistogramMetricFamily(name, documentation, labels=list(labels))
        family.add_metric(list(labels.values()), cumulative, total)
        return family


def _le(bound: float) -> str:
    return "+Inf" if bound == float("inf") else repr(float(bound))


class _ScrapeTime(Collector):
    """Series computed when scraped: lag per partition (from the runtime's samples), the
    runtime's recovery and replay totals, and the two latency histograms the listener fills
    in bulk."""

    def __init__(self, runtime: RuntimeMetrics, worker: str, topic: str,
                 processing: _WeightedHistogram, decisions: _WeightedHistogram) -> None:
        self.runtime = runtime
        self.worker = worker
        self.topic = topic
        self.processing = processing
        self.decisions = decisions

    def collect(self) -> Iterator[Metric]:
        lag = GaugeMetricFamily(f"{PREFIX}consumer_lag",
                                "High watermark minus position, per assigned input partition "
                                "(sampled at each checkpoint).",
                                labels=["worker", "topic", "partition"])
        # dict(d) copies in one step under the GIL while the worker thread updates it.
        for partition, value in sorted(dict(self.runtime.lag_by_partition).items()):
            lag.add_metric([self.worker, self.topic, str(partition)], float(value))
        yield lag
        recoveries = CounterMetricFamily(
            f"{PREFIX}recoveries", "Partitions sent back to their last checkpoint, or "
            "restored without their replay, by reason (SinkError kind, broker_lost, "
            "offset_out_of_range, replay_unavailable).", labels=["worker", "reason"])
        for reason, count in sorted(dict(self.runtime.recoveries).items()):
            recoveries.add_metric([self.worker, reason], float(count))
        yield recoveries
        replayed = CounterMetricFamily(
            f"{PREFIX}replayed_events", "Input processed again after a restore, from the "
            "partition's replay mark up to its committed offset (outputs dropped).",
            labels=["worker"])
        replayed.add_metric([self.worker], float(self.runtime.replayed_events))
        yield replayed
        yield self.processing.family(f"{PREFIX}processing_latency_seconds",
                                     "Engine time per input event (batch means).",
                                     {"worker": self.worker})
        yield self.decisions.family(f"{PREFIX}decision_latency_seconds",
                                    "Pre-trade decision time per OrderNew/OrderReplace "
                                    "(RiskDecision.decision_latency_ns).",
                                    {"worker": self.worker})

    def describe(self) -> Iterable[Metric]:
        return []  # nothing to check at registration (the names are fixed above)


class PrometheusMetrics(MetricsHooks):
    """Updates a dedicated registry from the worker's hooks; see the module docstring.

    Attaches itself to `runtime` and starts from its totals, so a listener added late does
    not start the counters at zero.
    """

    def __init__(self, runtime: RuntimeMetrics, registry: CollectorRegistry | None = None,
                 *, process_metrics: bool = True) -> None:
        # `*_created` series double the series count for nothing our queries use. The switch
        # is process-wide (prometheus_client reads it at collect time); a worker process has
        # no other registry.
        disable_created_metrics()
        self.runtime = runtime
        self.registry = registry if registry is not None else CollectorRegistry()
        self.worker = worker = runtime.worker or "worker"
        self.topic = runtime.input_topic or "input"
        reg = self.registry
        self.events_in = Counter(f"{PREFIX}events_in_total",
                                 "Input events consumed (bad ones included).",
                                 ["worker", "topic"], registry=reg).labels(worker, self.topic)
        self.events_out = Counter(f"{PREFIX}events_out_total",
                                  "Output events produced (dead letters included).",
                                  ["worker", "topic"], registry=reg)
        self.partitions = Gauge(f"{PREFIX}partitions_assigned",
                                "Input partitions owned by this replica.", ["worker"],
                                registry=reg).labels(worker)
        self.alerts = Counter(f"{PREFIX}alerts_total", "RiskAlerts emitted.",
                              ["worker", "reason_code", "severity"], registry=reg)
        self.decisions = Counter(f"{PREFIX}decisions_total", "RiskDecisions emitted.",
                                 ["worker", "decision"], registry=reg)
        self.dead_letters = Counter(f"{PREFIX}dead_letters_total",
                                    "Inputs sent to the dead-letter topic, by error kind.",
                                    ["worker", "error_kind"], registry=reg)
        self.checkpoint_seconds = Histogram(
            f"{PREFIX}checkpoint_duration_seconds",
            "One checkpoint: snapshots, outputs and offsets committed.", ["worker"],
            buckets=CHECKPOINT_BUCKETS, registry=reg).labels(worker)
        self.restore_seconds = Histogram(
            f"{PREFIX}restore_duration_seconds",
            "State of one partition rebuilt from the changelog.", ["worker"],
            buckets=RESTORE_BUCKETS, registry=reg).labels(worker)
        self.unsnapshotted_gauge = Gauge(
            f"{PREFIX}unsnapshotted_partitions",
            "Owned input partitions holding input their snapshots do not yet hold.",
            ["worker"], registry=reg).labels(worker)
        self.signature_failures = Counter(
            f"{PREFIX}snapshot_signature_failures_total",
            "Changelog snapshots whose HMAC failed (never unpickled).", ["worker"],
            registry=reg).labels(worker)
        self.zone_gauge = Gauge(f"{PREFIX}model_health_zone",
                                "Entities whose latest VaR backtest is in this Basel zone.",
                                ["worker", "model", "zone"], registry=reg)
        self.fallback_gauge = Gauge(f"{PREFIX}model_fallback_active",
                                    "Entities currently on the conservative fallback model.",
                                    ["worker", "model"], registry=reg)
        self.drift = Counter(f"{PREFIX}model_drift_total", "Drift detections.",
                             ["worker", "model"], registry=reg)
        self.processing = _WeightedHistogram(PROCESSING_BUCKETS)
        self.decision_latency = _WeightedHistogram(DECISION_BUCKETS)
        reg.register(_ScrapeTime(runtime, worker, self.topic, self.processing,
                                 self.decision_latency))
        if process_metrics:  # memory and CPU of this worker process (process_* series)
            ProcessCollector(registry=reg)
        self._zones: dict[tuple[str, str], str] = {}
        self._fallback: dict[tuple[str, str], bool] = {}
        self._assigned = 0
        self._seed(runtime)
        runtime.add_listener(self)

    def _seed(self, runtime: RuntimeMetrics) -> None:
        if runtime.events_in:
            self.events_in.inc(runtime.events_in)
        for topic, count in runtime.events_out.items():
            self.produced(topic, count)
        for kind, count in runtime.dead_letters.items():
            self.dead_letter(kind, count)
        if runtime.snapshots_rejected["signature"]:
            self.signature_failures.inc(runtime.snapshots_rejected["signature"])

    # --- hooks (worker thread) ----------------------------------------------------------------

    def batch(self, events: int, seconds: float) -> None:
        if events > 0:
            self.events_in.inc(events)
            self.processing.observe(seconds / events, events)

    def produced(self, topic: str, count: int) -> None:
        if count:
            self.events_out.labels(self.worker, topic).inc(count)

    def dead_letter(self, kind: str, count: int) -> None:
        if count:
            self.dead_letters.labels(self.worker, kind).inc(count)

    def checkpoint(self, seconds: float, partitions: int, keys: int) -> None:
        if partitions or keys:
            self.checkpoint_seconds.observe(seconds)

    def unsnapshotted(self, partitions: int) -> None:
        self.unsnapshotted_gauge.set(partitions)

    def restore(self, seconds: float, partition: int, keys: int) -> None:
        self.restore_seconds.observe(seconds)

    def snapshot_rejected(self, kind: str) -> None:
        if kind == "signature":
            self.signature_failures.inc()

    def rebalance(self, assigned: int, revoked: int) -> None:
        self._assigned = max(0, self._assigned + assigned - revoked)
        self.partitions.set(self._assigned)

    def outputs(self, emitted: Sequence[tuple[str, str | None, bytes]]) -> None:
        # Tallied locally, then one update per label set: prometheus_client takes a lock per
        # call, which would cost more than the decoding on an order worker's batch.
        alerts: dict[tuple[str, str], int] = {}
        verdicts: dict[str, int] = {}
        latencies: list[float] = []
        loads = orjson.loads
        for topic, _key, value in emitted:
            if topic not in WATCHED:
                continue
            try:
                event = loads(value)
                if topic == DECISIONS:
                    verdict = event["decision"]
                    verdicts[verdict] = verdicts.get(verdict, 0) + 1
                    if event.get("decision_latency_ns"):
                        latencies.append(event["decision_latency_ns"] / 1e9)
                elif topic == ALERTS:
                    labels = (event["reason_code"], event["severity"])
                    alerts[labels] = alerts.get(labels, 0) + 1
                else:
                    self._health(event)
            except (ValueError, KeyError, TypeError, AttributeError):
                continue  # a metric must never stop the worker
        for verdict, count in verdicts.items():
            self.decisions.labels(self.worker, verdict).inc(count)
        if latencies:
            self.decision_latency.observe_all(latencies)
        for (reason, severity), count in alerts.items():
            self.alerts.labels(self.worker, reason, severity).inc(count)

    # --- outputs ------------------------------------------------------------------------------

    def _health(self, health: dict[str, Any]) -> None:
        model = str(health.get("method") or health["model_id"])
        entity = (model, str(health["entity"]))
        if health.get("drift"):
            self.drift.labels(self.worker, model).inc()
        backtest = health.get("rolling") or health.get("since_start")
        zone = backtest.get("zone") if isinstance(backtest, dict) else None
        previous = self._zones.get(entity)
        if zone != previous:
            if previous is not None:
                self.zone_gauge.labels(self.worker, model, previous).dec()
            if zone in ZONES:
                self._zones[entity] = zone
                self.zone_gauge.labels(self.worker, model, zone).inc()
            else:
                self._zones.pop(entity, None)
        fallback = bool(health.get("fallback_active"))
        if fallback != self._fallback.get(entity, False):
            self._fallback[entity] = fallback
            self.fallback_gauge.labels(self.worker, model).inc(1 if fallback else -1)


# --- the endpoint ---------------------------------------------------------------------------


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True  # a slow scraper never holds the worker's exit


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        """Scrapes every few seconds would flood the worker's stderr."""


class MetricsServer:
    """A running endpoint: `url`, the `exporter` feeding it, `close()` to stop it."""

    def __init__(self, httpd: WSGIServer, thread: threading.Thread,
                 exporter: PrometheusMetrics) -> None:
        self.httpd = httpd
        self.thread = thread
        self.exporter = exporter
        address = httpd.server_address
        self.host, self.port = str(address[0]), int(address[1])

    @property
    def registry(self) -> CollectorRegistry:
        return self.exporter.registry

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/metrics"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join(5)


def serve(metrics: RuntimeMetrics, host: str = DEFAULT_HOST, port: int = 0) -> MetricsServer:
    """Export `metrics` over HTTP on `host:port` (port 0: any free one) from a daemon thread.

    Raises MetricsServerError (one line) when the address cannot be bound: port in use, an
    address this machine does not have, a privileged port.
    """
    exporter = PrometheusMetrics(metrics)
    app = make_wsgi_app(exporter.registry)  # GET at any path; other methods get 405
    try:
        family = socket.getaddrinfo(host or DEFAULT_HOST, port, type=socket.SOCK_STREAM)[0][0]
        server_class = type("MetricsHTTPServer", (_Server,), {"address_family": family})
        httpd: WSGIServer = make_server(host or DEFAULT_HOST, port, app, server_class,
                                        _QuietHandler)
    except OSError as exc:
        where = f"{host}:{port}"
        if exc.errno == errno.EADDRINUSE:
            reason = "the port is already in use (another worker? pick another --metrics-port)"
        else:
            reason = exc.strerror or str(exc)
        raise MetricsServerError(f"cannot serve metrics on {where}: {reason}") from None
    thread = threading.Thread(target=httpd.serve_forever, name="metrics-http", daemon=True)
    thread.start()
    return MetricsServer(httpd, thread, exporter)


__all__ = ["MetricsServer", "MetricsServerError", "PrometheusMetrics", "serve"]
