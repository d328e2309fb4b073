"""The Prometheus endpoint of a worker (`consumers.metrics`).

Unit level: each runtime hook moves the right series of a dedicated registry, the outputs
(alerts, decisions, model health) are counted from their own fields, and the exposition
carries exactly the names `deploy/README.md` documents, each with its `worker` label.
Endpoint: loopback by default, read-only, a taken port is one line. Integration: a real
`streamrisk worker` subprocess against the broker, scraped over HTTP while it runs; its
figures must equal what the in-process driver says the same stream gives.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from consumers.metrics import (
    MetricsServer,
    MetricsServerError,
    PrometheusMetrics,
    serve,
)
from consumers.runtime.metrics import MetricsHooks, RuntimeMetrics
from schemas.codec import encode
from schemas.common import Severity
from schemas.outputs import BacktestStats, Decision, ModelHealth, RiskAlert, RiskDecision, Zone

ROOT = Path(__file__).resolve().parents[1]
W = {"worker": "market-worker"}
ENV: dict[str, Any] = {"event_id": "e", "ts_event": 1, "ts_init": 1, "source": "test"}

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def documented_metrics() -> dict[str, tuple[str, set[str]]]:
    """name -> (type, labels) from the table in deploy/README.md."""
    table: dict[str, tuple[str, set[str]]] = {}
    for line in (ROOT / "deploy" / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 4 and re.fullmatch(r"`streamrisk_[a-z0-9_]+`", cells[0]):
            labels = {x.strip() for x in cells[2].split(",") if x.strip()}
            table[cells[0].strip("`")] = (cells[1], labels)
    return table


def samples(text: str) -> Samples:
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: Samples, name: str, **labels: str) -> float | None:
    return found.get((name, frozenset({**W, **labels}.items())))


@pytest.fixture
def runtime() -> RuntimeMetrics:
    return RuntimeMetrics(worker="market-worker", input_topic="market")


@pytest.fixture
def prom(runtime: RuntimeMetrics) -> PrometheusMetrics:
    return PrometheusMetrics(runtime, process_metrics=False)


def get(prom: PrometheusMetrics, name: str, **labels: str) -> float | None:
    return prom.registry.get_sample_value(name, {**W, **labels})


def alert(reason: str, severity: Severity) -> bytes:
    return encode(RiskAlert(**ENV, reason_code=reason, severity=severity, entity="AAPL",
                            entity_kind="instrument", observed=2.0, threshold=1.0,
                            message="m", cause_event_id="c"))


def decision(verdict: Decision, latency_ns: int) -> bytes:
    return encode(RiskDecision(**ENV, account="A1", strategy="S1", symbol="AAPL",
                               cl_ord_id="o1", order_event_id="o1", decision=verdict,
                               decision_latency_ns=latency_ns))


def health(method: str, entity: str, zone: Zone | None, *, drift: bool = False,
           fallback: bool = False) -> bytes:
    stats = None if zone is None else BacktestStats(
        observations=250, exceedances=3, expected_rate=0.01, kupiec_lr=0.1, kupiec_p=0.7,
        christoffersen_ind_lr=0.1, christoffersen_ind_p=0.7, christoffersen_cc_lr=0.2,
        christoffersen_cc_p=0.6, zone=zone)
    return encode(ModelHealth(**ENV, model_id=f"market-worker/{method}/{entity}", entity=entity,
                              method=method, rolling=stats, drift=drift,
                              fallback_active=fallback))


# --- the listener ---------------------------------------------------------------------------


def test_batches_count_events_and_spread_the_batch_mean_over_them(
        runtime: RuntimeMetrics, prom: PrometheusMetrics) -> None:
    runtime.batch(4, 0.004)  # 1 ms per event
    runtime.batch(0, 0.002)  # a batch of skipped messages: no event, no latency
    runtime.batch(2, 0.00002)  # 10 us per event
    assert get(prom, "streamrisk_events_in_total", topic="market") == 6
    name = "streamrisk_processing_latency_seconds"
    assert get(prom, f"{name}_count") == 6
    assert get(prom, f"{name}_sum") == pytest.approx(0.00402)
    assert get(prom, f"{name}_bucket", le="1e-05") == 2  # le is inclusive
    assert get(prom, f"{name}_bucket", le="0.0005") == 2
    assert get(prom, f"{name}_bucket", le="0.001") == 6
    assert get(prom, f"{name}_bucket", le="+Inf") == 6


def test_produced_dead_letters_and_signature_failures_are_counters(
        runtime: RuntimeMetrics, prom: PrometheusMetrics) -> None:
    runtime.produced("risk.instruments", 10)
    runtime.produced("risk.instruments", 5)
    runtime.produced("dlq", 2)
    runtime.dead_letter("undecodable", 1)
    runtime.dead_letter("duplicate", 1)
    runtime.snapshot_rejected("signature")
    runtime.snapshot_rejected("version")  # refused, but not a signature failure
    assert get(prom, "streamrisk_events_out_total", topic="risk.instruments") == 15
    assert get(prom, "streamrisk_events_out_total", topic="dlq") == 2
    assert get(prom, "streamrisk_dead_letters_total", error_kind="undecodable") == 1
    assert get(prom, "streamrisk_dead_letters_total", error_kind="duplicate") == 1
    assert get(prom, "streamrisk_snapshot_signature_failures_total") == 1


def test_checkpoint_and_restore_histograms_skip_idle_checkpoints(
        runtime: RuntimeMetrics, prom: PrometheusMetrics) -> None:
    runtime.checkpoint(0.02, 3, 10)
    runtime.checkpoint(0.2, 0, 4)  # snapshots only still counts
    runtime.checkpoint(0.0001, 0, 0)  # nothing to commit: not a checkpoint worth timing
    runtime.restore(1.5, 0, 100)
    name = "streamrisk_checkpoint_duration_seconds"
    assert get(prom, f"{name}_count") == 2
    assert get(prom, f"{name}_sum") == pytest.approx(0.22)
    assert get(prom, f"{name}_bucket", le="0.025") == 1
    assert get(prom, "streamrisk_restore_duration_seconds_count") == 1
    assert get(prom, "streamrisk_restore_duration_seconds_bucket", le="1.0") == 0
    assert get(prom, "streamrisk_restore_duration_seconds_bucket", le="2.5") == 1


def test_recoveries_by_reason_and_replayed_events_are_counters(
        runtime: RuntimeMetrics, prom: PrometheusMetrics) -> None:
    assert get(prom, "streamrisk_replayed_events_total") == 0
    assert get(prom, "streamrisk_recoveries_total", reason="abort") is None
    runtime.recovery("abort")
    runtime.recovery("abort")
    runtime.recovery("replay_unavailable")
    runtime.replayed_events += 120  # the worker counts replays itself, no hook
    assert get(prom, "streamrisk_recoveries_total", reason="abort") == 2
    assert get(prom, "streamrisk_recoveries_total", reason="replay_unavailable") == 1
    assert get(prom, "streamrisk_replayed_events_total") == 120


def test_partitions_and_lag_follow_the_assignment(runtime: RuntimeMetrics,
                                                  prom: PrometheusMetrics) -> None:
    runtime.rebalance(8, 0)
    runtime.lag(3, 42)
    runtime.lag(5, 0)
    assert get(prom, "streamrisk_partitions_assigned") == 8
    assert get(prom, "streamrisk_consumer_lag", topic="market", partition="3") == 42
    assert get(prom, "streamrisk_consumer_lag", topic="market", partition="5") == 0
    runtime.rebalance(0, 8)  # eager: everything revoked...
    runtime.forget_partition(3)  # ...and partition 3 went to another replica
    runtime.rebalance(7, 0)
    assert get(prom, "streamrisk_partitions_assigned") == 7
    assert get(prom, "streamrisk_consumer_lag", topic="market", partition="3") is None
    runtime.rebalance(0, 9)  # never negative, whatever the callbacks say
    assert get(prom, "streamrisk_partitions_assigned") == 0
    runtime.unsnapshotted(3)  # at a checkpoint: three partitions await their round
    assert get(prom, "streamrisk_unsnapshotted_partitions") == 3
    runtime.unsnapshotted(0)
    assert get(prom, "streamrisk_unsnapshotted_partitions") == 0 == runtime.unsnapshotted_partitions


def test_alerts_and_decisions_are_counted_from_the_outputs(runtime: RuntimeMetrics,
                                                           prom: PrometheusMetrics) -> None:
    runtime.outputs([
        ("risk.alerts", "AAPL", alert("VOL_SPIKE", Severity.WARNING)),
        ("risk.alerts", "AAPL", alert("VOL_SPIKE", Severity.CRITICAL)),
        ("risk.alerts", "AAPL", alert("VOL_SPIKE", Severity.WARNING)),
        ("risk.decisions", "A1", decision(Decision.ACCEPT, 40_000)),
        ("risk.decisions", "A1", decision(Decision.DENY, 2_000_000)),
        ("risk.instruments", "AAPL", b"not decoded: not a watched topic"),
        ("risk.alerts", "AAPL", b"\xffbroken"),  # never stops the worker
        ("risk.decisions", "A1", b"{}"),
    ])
    assert get(prom, "streamrisk_alerts_total", reason_code="VOL_SPIKE", severity="warning") == 2
    assert get(prom, "streamrisk_alerts_total", reason_code="VOL_SPIKE",
               severity="critical") == 1
    assert get(prom, "streamrisk_decisions_total", decision="accept") == 1
    assert get(prom, "streamrisk_decisions_total", decision="deny") == 1
    name = "streamrisk_decision_latency_seconds"
    assert get(prom, f"{name}_count") == 2
    assert get(prom, f"{name}_sum") == pytest.approx(0.00204)
    assert get(prom, f"{name}_bucket", le="5e-05") == 1
    assert get(prom, f"{name}_bucket", le="0.001") == 1  # the 2 ms one breaks the 1 ms target


def test_model_health_gauges_count_entities_by_their_latest_zone(
        runtime: RuntimeMetrics, prom: PrometheusMetrics) -> None:
    def zones(model: str) -> dict[str, float | None]:
        return {z: get(prom, "streamrisk_model_health_zone", model=model, zone=z)
                for z in ("green", "yellow", "red")}

    runtime.outputs([("risk.model-health", "m", health("parametric", "AAPL", Zone.GREEN)),
                     ("risk.model-health", "m", health("parametric", "MSFT", Zone.GREEN)),
                     ("risk.model-health", "m", health("fhs", "AAPL", Zone.YELLOW))])
    assert zones("parametric") == {"green": 2, "yellow": None, "red": None}
    assert zones("fhs")["yellow"] == 1
    runtime.outputs([("risk.model-health", "m",
                      health("parametric", "AAPL", Zone.RED, drift=True, fallback=True))])
    assert zones("parametric") == {"green": 1, "yellow": None, "red": 1}
    assert get(prom, "streamrisk_model_drift_total", model="parametric") == 1
    assert get(prom, "streamrisk_model_fallback_active", model="parametric") == 1
    runtime.outputs([("risk.model-health", "m", health("parametric", "AAPL", Zone.GREEN)),
                     ("risk.model-health", "m", health("tail", "AAPL", None, drift=True))])
    assert zones("parametric") == {"green": 2, "yellow": None, "red": 0}
    assert get(prom, "streamrisk_model_fallback_active", model="parametric") == 0
    assert get(prom, "streamrisk_model_drift_total", model="parametric") == 1
    assert get(prom, "streamrisk_model_drift_total", model="tail") == 1
    assert get(prom, "streamrisk_model_health_zone", model="tail", zone="green") is None


def test_outputs_are_collected_only_for_a_listener_that_wants_them() -> None:
    runtime = RuntimeMetrics()
    assert not runtime.wants_outputs

    class Checkpoints(MetricsHooks):
        def checkpoint(self, seconds: float, partitions: int, keys: int) -> None:
            pass

    runtime.add_listener(Checkpoints())
    assert not runtime.wants_outputs  # the worker keeps its hot path untouched
    PrometheusMetrics(runtime, process_metrics=False)
    assert runtime.wants_outputs


def test_a_late_listener_starts_from_the_runtime_totals(runtime: RuntimeMetrics) -> None:
    runtime.batch(7, 0.01)
    runtime.produced("risk.alerts", 3)
    runtime.dead_letter("invalid", 2)
    runtime.snapshot_rejected("signature")
    prom = PrometheusMetrics(runtime, process_metrics=False)
    runtime.batch(1, 0.001)
    assert get(prom, "streamrisk_events_in_total", topic="market") == 8
    assert get(prom, "streamrisk_events_out_total", topic="risk.alerts") == 3
    assert get(prom, "streamrisk_dead_letters_total", error_kind="invalid") == 2
    assert get(prom, "streamrisk_snapshot_signature_failures_total") == 1


def test_exposition_has_every_documented_metric_with_its_labels(
        runtime: RuntimeMetrics, prom: PrometheusMetrics) -> None:
    documented = documented_metrics()
    assert len(documented) >= 15, "the table in deploy/README.md was not found"
    # Touch every labelled series once so each has a sample to check the labels of.
    runtime.batch(3, 0.003)
    runtime.produced("risk.alerts", 1)
    runtime.lag(0, 1)
    runtime.rebalance(1, 0)
    runtime.dead_letter("undecodable", 1)
    runtime.checkpoint(0.01, 1, 1)
    runtime.restore(0.1, 0, 1)
    runtime.snapshot_rejected("signature")
    runtime.recovery("broker_lost")
    runtime.outputs([("risk.alerts", "AAPL", alert("VOL_SPIKE", Severity.WARNING)),
                     ("risk.decisions", "A1", decision(Decision.DENY, 5000)),
                     ("risk.model-health", "m",
                      health("parametric", "AAPL", Zone.RED, drift=True, fallback=True))])
    text = generate_latest(prom.registry).decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    exported = {}
    for family in families.values():
        name = family.name + ("_total" if family.type == "counter" else "")
        exported[name] = family
    assert {n for n in exported if n.startswith("streamrisk_")} == set(documented)
    for name, (kind, labels) in documented.items():
        family = exported[name]
        assert family.type == kind, name
        own = [s for s in family.samples if not s.name.endswith("_created")]
        assert own, f"{name} has no sample"
        for sample in own:
            assert set(sample.labels) - {"le"} == labels, (name, sample.labels)
            assert sample.labels["worker"] == "market-worker"


def test_every_worker_has_its_own_registry() -> None:
    one = PrometheusMetrics(RuntimeMetrics(worker="market-worker"), process_metrics=False)
    two = PrometheusMetrics(RuntimeMetrics(worker="order-worker"), process_metrics=False)
    one.runtime.batch(5, 0.001)
    assert one.registry is not two.registry
    assert two.registry.get_sample_value("streamrisk_events_in_total",
                                         {"worker": "order-worker", "topic": "input"}) == 0
    assert REGISTRY.get_sample_value("streamrisk_events_in_total",
                                     {"worker": "market-worker", "topic": "input"}) is None
    assert isinstance(one.registry, CollectorRegistry)


# --- the endpoint ---------------------------------------------------------------------------


@pytest.fixture
def server() -> Iterator[Callable[..., MetricsServer]]:
    started: list[MetricsServer] = []

    def start(metrics: RuntimeMetrics, *args: Any) -> MetricsServer:
        started.append(serve(metrics, *args))
        return started[-1]

    yield start
    for s in started:
        s.close()


def test_endpoint_binds_loopback_by_default_and_serves_any_path(
        runtime: RuntimeMetrics, server: Callable[..., MetricsServer]) -> None:
    endpoint = server(runtime)
    assert endpoint.host == "127.0.0.1" and endpoint.port > 0
    runtime.batch(2, 0.001)
    for path in ("/metrics", "/"):
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}{path}", timeout=5) as r:
            assert r.status == 200
            found = samples(r.read().decode())
        assert value(found, "streamrisk_events_in_total", topic="market") == 2
    assert any(name.startswith("process_") for name, _ in found)  # memory/CPU of the worker
    assert not any(name.endswith("_created") for name, _ in found)


def test_endpoint_is_read_only(runtime: RuntimeMetrics,
                               server: Callable[..., MetricsServer]) -> None:
    endpoint = server(runtime)
    for method in ("POST", "PUT", "DELETE"):
        request = urllib.request.Request(endpoint.url, data=b"x", method=method)
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(request, timeout=5)
        assert refused.value.code == 405
    assert urllib.request.urlopen(endpoint.url, timeout=5).status == 200


def test_a_taken_port_is_one_readable_line(runtime: RuntimeMetrics,
                                           server: Callable[..., MetricsServer]) -> None:
    endpoint = server(runtime)
    with pytest.raises(MetricsServerError) as taken:
        serve(RuntimeMetrics(), "127.0.0.1", endpoint.port)
    message = str(taken.value)
    assert "\n" not in message
    assert f"127.0.0.1:{endpoint.port}" in message and "already in use" in message
    with pytest.raises(MetricsServerError, match=r"cannot serve metrics on 192\.0\.2\.1"):
        serve(RuntimeMetrics(), "192.0.2.1", 0)  # TEST-NET: not an address of this machine


def test_worker_command_with_a_taken_port_exits_with_one_line() -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with socket.socket() as nobody:  # a broker address: never contacted before metrics
            nobody.bind(("127.0.0.1", 0))
            unused = nobody.getsockname()[1]
        done = subprocess.run(
            [*worker_command(), "--processor", "tests.processors:CountingProcessor",
             "--bootstrap-servers", f"127.0.0.1:{unused}", "--metrics-port", str(port)],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
            text=True, timeout=60)
    assert done.returncode != 0
    lines = [line for line in done.stderr.splitlines()
             if line.strip() and "GLIBC" not in line]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith("streamrisk worker: error: cannot serve metrics on 127.0.0.1")
    assert "already in use" in lines[0] and "Traceback" not in done.stderr


# --- a real worker, scraped while it runs ---------------------------------------------------


def worker_command() -> list[str]:
    script = Path(sys.executable).with_name("streamrisk")
    return [str(script), "worker"] if script.exists() else [sys.executable, "-m",
                                                             "consumers.runtime"]


def listening_addresses(port: int) -> set[str]:
    """Local addresses with a socket LISTENing on `port` (Linux /proc/net/tcp)."""
    found = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        local, state = line.split()[1], line.split()[3]
        address, hex_port = local.split(":")
        if state == "0A" and int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        return samples(r.read().decode())


@pytest.mark.kafka
def test_a_running_worker_is_scraped_and_its_figures_add_up(
        make_settings: Callable[..., Any], tmp_path: Path) -> None:
    from engine.driver import Driver
    from producers.broker import free_port
    from producers.provision import ensure_topics
    from tests.processors import CountingProcessor, make_stream, produce_recording, runtime_specs

    cap = 20_000
    settings = make_settings(max_message_bytes=cap)
    ensure_topics(settings, runtime_specs())
    stream = make_stream(3000, symbols=16, garbage=0.02, max_message_bytes=cap, seed=5)
    expected_out: Counter[str] = Counter()
    result = Driver(CountingProcessor(), max_message_bytes=cap).run(
        stream, on_output=lambda e: expected_out.update([e.topic]))
    dead = result.dead_letters
    assert dead["undecodable"] > 0 and dead["duplicate"] > 0

    port = free_port()
    log = tmp_path / "worker.log"
    cmd = [*worker_command(), "--processor", "tests.processors:CountingProcessor",
           "--bootstrap-servers", settings.bootstrap_servers, "--topic-prefix",
           settings.topic_prefix, "--profile", settings.profile, "--commit-interval", "200",
           "--metrics-port", str(port)]
    env = {**os.environ, "PYTHONPATH": str(ROOT), "STREAMRISK_MAX_MESSAGE_BYTES": str(cap)}
    env.pop("STREAMRISK_WORKER__METRICS_HOST", None)
    with open(log, "wb") as out:
        worker = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:  # the endpoint answers before the worker has joined its group
            assert worker.poll() is None, log.read_text()[-2000:]
            try:
                first = scrape(port)
                break
            except OSError:
                assert time.monotonic() < deadline, "metrics endpoint never answered"
                time.sleep(0.1)
        assert value(first, "streamrisk_events_in_total", topic="market") == 0
        if Path("/proc/net/tcp").exists():
            assert listening_addresses(port) == {"127.0.0.1"}

        produce_recording(settings, stream)
        deadline = time.monotonic() + 120
        out_topics = sorted(expected_out)
        while True:
            assert worker.poll() is None, log.read_text()[-2000:]
            got = scrape(port)
            produced = {t: value(got, "streamrisk_events_out_total", topic=t)
                        for t in out_topics}
            lags = {k: v for k, v in got.items() if k[0] == "streamrisk_consumer_lag"}
            if (produced == {t: float(n) for t, n in expected_out.items()} and len(lags) == 8
                    and sum(lags.values()) == 0):
                break
            assert time.monotonic() < deadline, (produced, expected_out, lags)
            time.sleep(0.2)

        # Everything in was counted once, bad messages included.
        assert value(got, "streamrisk_events_in_total", topic="market") == len(stream)
        assert value(got, "streamrisk_processing_latency_seconds_count") == len(stream)
        assert (value(got, "streamrisk_processing_latency_seconds_sum") or 0) > 0
        # Dead letters by kind are the driver's, and they are what went to dlq.
        kinds = {dict(k[1])["error_kind"]: v for k, v in got.items()
                 if k[0] == "streamrisk_dead_letters_total"}
        assert kinds == {k: float(n) for k, n in dead.items()}
        assert sum(kinds.values()) == value(got, "streamrisk_events_out_total", topic="dlq")
        # Every alert produced is counted by its reason and severity.
        assert value(got, "streamrisk_alerts_total", reason_code="TEST_PRICE_MOVE",
                     severity="warning") == expected_out["risk.alerts"] > 0
        # Checkpoints committed the work; each assigned partition was restored once.
        checkpoints = value(got, "streamrisk_checkpoint_duration_seconds_count")
        assert checkpoints is not None and checkpoints > 0
        assert value(got, "streamrisk_checkpoint_duration_seconds_bucket",
                     le="+Inf") == checkpoints
        assert (value(got, "streamrisk_checkpoint_duration_seconds_sum") or 0) > 0
        assert value(got, "streamrisk_partitions_assigned") == 8
        assert value(got, "streamrisk_restore_duration_seconds_count") == 8
        assert value(got, "streamrisk_snapshot_signature_failures_total") == 0

        worker.send_signal(signal.SIGTERM)
        assert worker.wait(60) == 0, log.read_text()[-2000:]
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(10)
    assert f"{len(stream)} events in" in log.read_text()
