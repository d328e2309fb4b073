"""`streamrisk demo`: the main job, end to end on one machine.

With no --bootstrap-servers it starts the embedded broker (data and log in the run
directory), creates the catalogue topics, starts the market, order and scope (desk/firm aggregation)
workers as child processes, publishes a firm and two desks over the simulated accounts (parent
links, no levels: `consumers.demo.plan.hierarchy`), and the simulator's market and order flow
with a mix of labelled
scenarios (all of them unless --scenario is given), paced so the run lasts about --duration
seconds (see `consumers.demo.plan`). While it runs, a live view shows the workers' alerts,
decisions, breaches, trading states and throughput (plain progress lines when stdout is not a
terminal). At the end it drains the workers, stops them (SIGTERM, then SIGKILL after a grace
period) and the broker, replays the recording in-process with `streamrisk evaluate`, and
prints a summary: events, outputs by topic, alerts by reason code, decisions, state changes,
detections against the scenario labels, and where the files are.

With --bootstrap-servers it runs against that cluster: it starts no broker, creates the
topics idempotently and starts local workers, under a topic prefix of its own
(`streamrisk.demo-<time>-<random>.`) unless one is given, so it never mixes with other data.

Run directory (default `./streamrisk-demo-<timestamp>/`, or --out DIR): `input.jsonl.gz`
(the published stream, recording format), `labels.jsonl`, `report/` (the evaluation, with
report.html), `market-worker.log`, `order-worker.log`, `scope-worker.log`, `broker.log` (the
embedded broker's; its data lives in a temporary directory removed when it stops) and
`pids.json` (the child processes).

Ctrl-C or SIGTERM stops the run cleanly at any moment: children stopped by PID, the summary
of what happened so far, exit 130. Exit codes: 0 done, 1 failure (one line on stderr, after
the summary if the run had started), 2 bad options, 130 interrupted.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from consumers.cli.base import CliError, Context

if TYPE_CHECKING:
    import threading

    from rich.console import Console

    from consumers.demo.feed import Feed
    from consumers.demo.live import LiveState
    from consumers.demo.plan import DemoPlan
    from consumers.demo.reader import OutputReader
    from consumers.demo.summary import Evaluation, Files
    from consumers.demo.view import PlainCursor, RunStatus
    from consumers.demo.workers import DeliveredOffsets, WorkerProgress, Workers
    from producers.broker import EmbeddedBroker
    from producers.simulator import Simulation
    from schemas.settings import Settings

NAME = "demo"
HELP = ("the main job: embedded broker, simulated market and order flow with labelled "
        "scenarios, both risk workers, a live view, and a summary")

INTERRUPTED = 130
FAILED = 1
PLAIN_EVERY_S = 5.0
TICK_S = 0.25
PROGRESS_EVERY_S = 0.5
REFRESH_PER_S = 4
DRAIN_TIMEOUT_S = 30.0
SETTLE_S = 1.0  # quiet time on the output topics that means the reader has everything
RECORDING = "input.jsonl.gz"
REPORT_PLOTS = 3  # instruments plotted in the report (labelled first): plots cost ~1 s each


def _duration(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 < value <= 86_400:
        raise argparse.ArgumentTypeError(f"must be between 0 and 86400 seconds, got {text}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from consumers.demo.plan import DEFAULT_DURATION_S, SPEEDUP

    parser.add_argument("--duration", type=_duration, default=DEFAULT_DURATION_S, metavar="S",
                        help=f"about how long the run lasts, in seconds (default "
                             f"{DEFAULT_DURATION_S:g}); it covers {SPEEDUP:g}x as much "
                             "simulated market time")
    parser.add_argument("--seed", type=int, default=1, metavar="N",
                        help="seed of the simulation: same seed, same market paths and "
                             "scenario placement (default 1)")
    parser.add_argument("--scenario", nargs="+", action="extend", default=[], metavar="NAME",
                        help="scenarios to inject (default: all; `streamrisk simulate "
                             "--scenario list` describes them)")
    parser.add_argument("--out", metavar="DIR",
                        help="run directory (default ./streamrisk-demo-<timestamp>)")


def check_scenarios(names: list[str]) -> list[str]:
    """The requested scenario names, or CliError (one line) naming the first unknown one."""
    from consumers.demo.plan import scenario_names, unknown_scenario

    bad = unknown_scenario(names)
    if bad is not None:
        raise CliError(f"unknown scenario {bad!r} (known scenarios: "
                       f"{', '.join(scenario_names())})", exit_code=2)
    return names


@dataclass
class DemoRun:
    """What the stages of a run share."""

    ctx: Context
    settings: Settings
    stop: threading.Event
    run_dir: Path
    status: RunStatus
    state: LiveState
    plan: DemoPlan
    broker: EmbeddedBroker | None = None
    sim: Simulation | None = None
    feed: Feed | None = None
    delivered: DeliveredOffsets = field(default_factory=lambda: _delivered())
    workers: Workers | None = None
    progress: WorkerProgress | None = None
    reader: OutputReader | None = None
    recorded: int = 0
    failure: str | None = None
    drained: bool = False
    plain: PlainCursor | None = None
    _last_tick: float = 0.0
    _last_progress: float = 0.0
    _last_plain: float = 0.0
    _in_marks: list[tuple[float, int]] = field(default_factory=list)

    @property
    def interrupted(self) -> bool:
        return self.stop.is_set()

    def tick(self, force: bool = False) -> None:
        """Periodic work of the orchestrating thread: input rate, worker progress and
        health, and the plain lines when there is no live view."""
        now = time.monotonic()
        if not force and now - self._last_tick < TICK_S:
            return
        self._last_tick = now
        st = self.status
        self._in_marks.append((now, st.published))
        while len(self._in_marks) > 2 and now - self._in_marks[0][0] > 3.0:
            self._in_marks.pop(0)
        t0, n0 = self._in_marks[0]
        st.in_rate = (st.published - n0) / (now - t0) if now > t0 else 0.0
        if self.progress is not None and (force or now - self._last_progress
                                          >= PROGRESS_EVERY_S):
            self._last_progress = now
            st.progress.update(self.progress.poll(self.delivered, timeout_s=1.0))
            market = st.progress.get("market-worker")
            if st.phase == "catching up" and market is not None and market[0] == 0:
                st.phase = "starting"  # the worker has not committed anything yet
        if self.workers is not None and self.failure is None:
            for proc in self.workers.failed():
                code = proc.exit_code or 0
                how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
                self.failure = (f"the {proc.name} {how} during the run; its log "
                                f"{proc.log_path} ends: {proc.last_words()}")
                st.problems.append(self.failure)
        if self.reader is not None and self.reader.error and self.reader.error not in st.problems:
            st.problems.append(self.reader.error)
        if self.plain is not None and now - self._last_plain >= PLAIN_EVERY_S:
            self._last_plain = now
            self.print_plain()

    def print_plain(self) -> None:
        from consumers.demo.view import new_items, plain_line

        assert self.plain is not None
        snap = self.state.snapshot(full=False)
        out = self.ctx.out
        out.print(plain_line(self.status, snap), markup=False, highlight=False, soft_wrap=True)
        for line in new_items(snap, self.plain):
            out.print(line, markup=False, highlight=False, soft_wrap=True)
        out.file.flush()

    def sleep(self, seconds: float) -> None:
        """Wait, staying responsive to Ctrl-C."""
        self.stop.wait(max(0.0, seconds))


def _delivered() -> DeliveredOffsets:
    from consumers.demo.workers import DeliveredOffsets

    return DeliveredOffsets()


def run(ctx: Context) -> int:
    from confluent_kafka import KafkaError, KafkaException

    from consumers.cli.broker import stop_signals
    from producers.broker import BrokerError
    from producers.kafka import BrokerUnreachable
    from producers.provision import ProvisionError

    check_scenarios(ctx.args.scenario)
    settings = ctx.settings  # a bad config file fails here, before anything starts
    began = time.monotonic()
    with stop_signals() as stop:
        try:
            with ExitStack() as cleanup:
                demo = _start(ctx, settings, stop, cleanup, began)
                _run(demo, cleanup)
            # Everything is stopped now: the broker by the ExitStack, the rest in _run.
        except (BrokerError, BrokerUnreachable, ProvisionError) as exc:
            raise CliError(str(exc)) from None
        except KafkaException as exc:
            error = exc.args[0] if exc.args else None
            reason = error.str() if isinstance(error, KafkaError) else str(exc)
            raise CliError(f"Kafka error: {reason}") from None
    # The signal handlers are back to normal: a Ctrl-C now interrupts the evaluation only.
    return _finish(demo)


# --- start ---------------------------------------------------------------------------------


def _start(ctx: Context, settings: Settings, stop: threading.Event, cleanup: ExitStack,
           began: float) -> DemoRun:
    """Cluster (embedded or given), run directory, topics, workers, output reader."""
    from consumers.demo.live import LiveState
    from consumers.demo.plan import DemoPlan, describe
    from consumers.demo.view import RunStatus
    from consumers.demo.workers import record_pids, start_guard
    from producers.broker import EmbeddedBroker
    from producers.kafka import check_reachable
    from schemas.settings import DEFAULT_PREFIX

    args = ctx.args
    broker = None
    if settings.bootstrap_servers:
        check_reachable(settings)  # one line within the connect timeout, before any file
        explicit = (getattr(args, "topic_prefix", None) is not None
                    or settings.topic_prefix != DEFAULT_PREFIX)
        if not explicit:
            settings = settings.model_copy(update={"topic_prefix": _unique_prefix()})
        run_dir = _run_dir(args.out)
        where = f"cluster {settings.bootstrap_servers}"
        ctx.out.print(f"using the cluster at {settings.bootstrap_servers} (topic prefix "
                      f"{settings.topic_prefix!r})", markup=False, soft_wrap=True)
    else:
        run_dir = _run_dir(args.out)
        broker = EmbeddedBroker()  # its data (the whole log) in a temporary dir, removed
        guard: list[subprocess.Popen[bytes]] = []
        cleanup.callback(_stop_broker, broker, guard)
        cleanup.callback(_keep_broker_log, broker, run_dir)
        broker.start()
        assert broker.process is not None
        started = start_guard(broker.process.pid, "--kafka-port", str(broker.port))
        if started is not None:
            guard.append(started)
            record_pids(run_dir, {"broker-guard": started.pid})
        settings = settings.model_copy(update={"bootstrap_servers": broker.bootstrap})
        where = f"embedded broker {broker.bootstrap}"
        ctx.out.print(f"embedded broker at {broker.bootstrap} (pid {broker.process.pid})",
                      markup=False, soft_wrap=True)
    plan = DemoPlan(seed=args.seed, duration_s=args.duration, scenarios=tuple(args.scenario),
                    start_ns=time.time_ns() // 1_000_000_000 * 1_000_000_000)
    status = RunStatus(broker=where, prefix=settings.topic_prefix, seed=args.seed,
                       scenarios=describe(plan.chosen), run_dir=str(run_dir), began=began,
                       deadline=began + args.duration, sim_start_ns=plan.start_ns,
                       sim_end_ns=plan.end_ns)
    demo = DemoRun(ctx=ctx, settings=settings, stop=stop, run_dir=run_dir, status=status,
                   state=LiveState(), plan=plan, broker=broker)
    if broker is not None and broker.process is not None:
        record_pids(run_dir, {"broker": broker.process.pid})
    _provision(demo)
    _start_workers(demo, cleanup)
    return demo


def _stop_broker(broker: EmbeddedBroker, guard: list[subprocess.Popen[bytes]]) -> None:
    """Stop the broker, then its guard (SIGKILL: the guard must not act any more)."""
    try:
        broker.stop()
    finally:
        for proc in guard:
            proc.kill()
            proc.wait(timeout=5)


def _keep_broker_log(broker: EmbeddedBroker, run_dir: Path) -> None:
    """Copy the broker's log into the run directory before its data dir goes."""
    import shutil

    if broker.data_dir is not None and broker.log_path.exists():
        shutil.copyfile(broker.log_path, run_dir / "broker.log")


def _unique_prefix() -> str:
    import secrets

    return f"streamrisk.demo-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(2)}."


def _run_dir(out: str | None) -> Path:
    if out:
        path = Path(out)
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise CliError(f"cannot create the run directory {path}: "
                           f"{exc.strerror or exc}") from None
        return path
    base = Path(f"streamrisk-demo-{time.strftime('%Y%m%d-%H%M%S')}")
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")
        except OSError as exc:
            raise CliError(f"cannot create the run directory {path}: "
                           f"{exc.strerror or exc}") from None


def _provision(demo: DemoRun) -> None:
    from producers.provision import ensure_topics

    report = ensure_topics(demo.settings)
    demo.ctx.out.print(f"topics under {demo.settings.topic_prefix!r}: {len(report.created)} "
                       f"created, {len(report.existing)} already there", markup=False)


def _start_workers(demo: DemoRun, cleanup: ExitStack) -> None:
    """The three workers, the progress poller and the output reader, all stopped by
    `cleanup` in reverse order (reader, poller, workers) before the broker."""
    from consumers.demo.reader import OUTPUT_TOPICS, OutputReader, end_offsets
    from consumers.demo.workers import FED_BY_DEMO, KINDS, WorkerProgress, Workers

    ctx, settings = demo.ctx, demo.settings
    inputs = end_offsets(settings, ("market", "orders"))
    outputs = end_offsets(settings, OUTPUT_TOPICS)
    flags = ["--bootstrap-servers", str(settings.bootstrap_servers),
             "--topic-prefix", settings.topic_prefix]
    if getattr(ctx.args, "config", None):
        flags += ["--config", ctx.args.config]
    if getattr(ctx.args, "profile", None):
        flags += ["--profile", ctx.args.profile]
    workers = Workers(demo.run_dir, settings, flags)
    demo.workers = workers
    cleanup.callback(_stop_workers, demo)
    for kind in KINDS:
        proc = workers.start(kind)
        ctx.out.print(f"{proc.name} started (pid {proc.pid}, log {proc.log_path})",
                      markup=False, soft_wrap=True)
    start: dict[str, dict[int, int]] = {}
    for tp in inputs:
        start.setdefault(tp.topic, {})[tp.partition] = tp.offset
    # The scope worker's input comes from the order workers, not from the demo: the drain
    # waits for the market and order workers, then for the output reader to go quiet.
    demo.progress = WorkerProgress(settings, [p for p in workers.procs
                                              if p.kind in FED_BY_DEMO], start)
    cleanup.callback(demo.progress.close)
    demo.reader = OutputReader(settings, demo.state, outputs)
    demo.reader.start()
    cleanup.callback(demo.reader.stop)


def _stop_workers(demo: DemoRun) -> None:
    if demo.workers is None:
        return
    demo.status.phase = "stopping"
    codes = demo.workers.stop()
    bad = {name: code for name, code in codes.items() if code not in (0, None)}
    if bad and demo.failure is None and not demo.interrupted:
        name, code = next(iter(bad.items()))
        demo.failure = f"the {name} exited with code {code} when stopped (see its log)"


# --- the run -------------------------------------------------------------------------------


def _run(demo: DemoRun, cleanup: ExitStack) -> None:
    """Publish (warm-up, then paced), drain, and stop the workers, under the live view."""
    from consumers.demo.view import PlainCursor

    ctx = demo.ctx
    live_view = ctx.out.is_terminal
    if not live_view:
        demo.plain = PlainCursor()
        ctx.out.print(f"running for about {ctx.args.duration:g} s; a status line every "
                      f"{PLAIN_EVERY_S:g} s (run in a terminal for the live view)",
                      markup=False, soft_wrap=True)
    with _live(demo) if live_view else nullcontext():
        _publish(demo)
        if not demo.interrupted and demo.failure is None:
            _drain(demo)
        if demo.plain is not None:
            demo.tick(force=True)
            demo.print_plain()
    # Stop the children now (reader, poller, workers); the broker goes last, with the stack.
    with _spinner(demo.ctx.out, "stopping the workers and the broker"):
        cleanup.close()


@contextmanager
def _live(demo: DemoRun) -> Iterator[None]:
    from rich.live import Live

    from consumers.demo.view import DemoView

    view = DemoView(demo.status, lambda: demo.state.snapshot(full=False))
    with Live(view, console=demo.ctx.out, refresh_per_second=REFRESH_PER_S,
              redirect_stdout=False, redirect_stderr=False):
        yield


@contextmanager
def _spinner(console: Console, text: str) -> Iterator[None]:
    if console.is_terminal:
        with console.status(text):
            yield
    else:
        console.print(f"{text}...", markup=False)
        yield


def _publish(demo: DemoRun) -> None:
    """The simulation into the input topics and the recording (`consumers.demo.feed`)."""
    from consumers.demo.feed import Feed
    from consumers.demo.plan import hierarchy, warmup_end_ns
    from consumers.demo.workers import KINDS
    from producers.publisher import Publisher
    from producers.simulator import write_labels
    from schemas.control import LimitConfig
    from schemas.recording import RecordedMessage, RecordingWriter

    plan, status = demo.plan, demo.status
    sim = demo.sim = plan.simulation()
    publisher = Publisher(demo.settings)
    publisher.tracker = demo.delivered  # the same accounting, plus offsets for progress
    writer = RecordingWriter(demo.run_dir / RECORDING)

    def publish(topic: str, key: str | None, value: bytes, ts_ms: int) -> None:
        publisher.publish_bytes(topic, key, value, timestamp_ms=ts_ms)
        writer.write(RecordedMessage.from_bytes(topic, key, value, timestamp=ts_ms))

    def lags() -> dict[str, int]:
        """Events published but not yet committed, per worker (as of the last poll)."""
        out = {}
        for name, topic in KINDS.values():
            progress = status.progress.get(name)
            if progress is not None:
                out[name] = status.published_by_topic.get(topic, 0) - progress[0]
        return out

    def idle(seconds: float) -> None:
        publisher.poll(seconds)  # serve delivery reports while waiting

    feed = Feed(publish=publish, mark=demo.state.instrument_mark, lags=lags,
                tick=demo.tick, stopped=lambda: demo.interrupted or demo.failure is not None,
                deadline=status.deadline, status=status, idle=idle)
    demo.feed = feed
    try:
        # desks and a firm over the accounts, for the scope worker (no levels: see hierarchy)
        for cfg in hierarchy([a.id for a in sim.accounts], sim.config.start_ns):
            feed.send(LimitConfig.TOPIC, cfg.scope, cfg)
        feed.run(sim, warm_end_ns=warmup_end_ns(sim), end_ns=plan.end_ns)
    finally:
        writer.close()
        demo.recorded = writer.count
        write_labels(demo.run_dir / "labels.jsonl", sim.labels())
        result = publisher.close()
        status.publish_failed = result.failed
        if not result.ok and demo.failure is None:
            demo.failure = f"delivery failed: {result.summary()}"


def _drain(demo: DemoRun) -> None:
    """Wait until both workers have committed every event of this run, then until the output
    reader has been quiet for a moment (it then has every committed output)."""
    status = demo.status
    status.phase = "draining"
    deadline = time.monotonic() + max(DRAIN_TIMEOUT_S, 0.5 * demo.ctx.args.duration)
    while not demo.interrupted and demo.failure is None and time.monotonic() < deadline:
        demo.tick(force=True)
        progress = status.progress
        if len(progress) == 2 and all(total and done >= total
                                      for done, total in progress.values()):
            demo.drained = True
            break
        demo.sleep(0.2)
    if not demo.drained:
        return
    settle = time.monotonic() + 5.0
    while (not demo.interrupted and demo.reader is not None
           and demo.reader.idle_for() < SETTLE_S and time.monotonic() < settle):
        demo.sleep(0.1)


# --- the end -------------------------------------------------------------------------------


def _finish(demo: DemoRun) -> int:
    from consumers.demo.summary import Evaluation, Files, print_summary, score

    ctx, status = demo.ctx, demo.status
    sim = demo.sim
    assert sim is not None
    snap = demo.state.snapshot()
    labels = sim.labels()
    files = Files(run_dir=demo.run_dir, recording=demo.run_dir / RECORDING,
                  recorded=demo.recorded, labels=demo.run_dir / "labels.jsonl",
                  report_dir=demo.run_dir / "report",
                  worker_logs=[p.log_path for p in demo.workers.procs] if demo.workers else [],
                  broker_log=demo.run_dir / "broker.log" if demo.broker else None)
    scoring = None
    if demo.drained:
        entities = ({i.symbol for i in sim.instruments} | {a.id for a in sim.accounts})
        scoring = score(snap.signals, labels, entities)
    if demo.interrupted:
        evaluation = Evaluation(skipped_because="the run was interrupted")
        outcome = "interrupted"
    elif demo.failure:
        evaluation = Evaluation(skipped_because="the run failed")
        outcome = "failed"
    else:
        evaluation = _evaluate(ctx, demo, files)
        outcome = "completed" if demo.drained else "completed (workers still behind)"
    feed = demo.feed.stats() if demo.feed is not None else None
    _print_wide(ctx.out, lambda: print_summary(ctx.out, status, snap, labels, scoring,
                                               files, evaluation, outcome, feed))
    if demo.failure:
        raise CliError(demo.failure)
    return INTERRUPTED if demo.interrupted else 0


def _print_wide(console: Console, show: Any) -> None:
    """Tables keep their natural width in a pipe or file (no 80-column squeeze)."""
    if console.is_terminal:
        show()
        return
    width = console.width
    console.width = max(width, 160)
    try:
        show()
    finally:
        console.width = width


def _evaluate(ctx: Context, demo: DemoRun, files: Files) -> Evaluation:
    """`streamrisk evaluate` on the recording, in-process, into the report directory."""
    import io

    import orjson
    from rich.console import Console

    from consumers.cli import evaluate
    from consumers.cli.base import OneLineParser
    from consumers.demo.summary import Evaluation
    from schemas.recording import read_recording

    parser = OneLineParser(prog="streamrisk evaluate")
    evaluate.add_arguments(parser)
    args = parser.parse_args([str(files.recording), "--out", str(files.report_dir),
                              "--labels", str(files.labels), "--max-plots", str(REPORT_PLOTS)])
    quiet = Console(file=io.StringIO(), width=200)
    sub = Context(args=args, out=quiet, err=quiet, _settings=demo.settings)
    result = Evaluation()
    try:
        with _spinner(ctx.out, "evaluating the recording in-process (streamrisk evaluate)"):
            evaluate.run(sub)
    except CliError as exc:
        result.notes.append(f"evaluate: {exc}")
    except KeyboardInterrupt:
        result.skipped_because = "interrupted during the evaluation"
        return result
    report_json = files.report_dir / "report.json"
    if not report_json.exists():
        result.skipped_because = result.notes[-1] if result.notes else "no report written"
        return result
    report = orjson.loads(report_json.read_bytes())
    result.report_html = files.report_dir / "report.html"
    result.events_per_s = report.get("events_per_s")
    scoring = report.get("labels")
    if scoring:
        o = scoring["overall"]
        result.labels_detected = (int(o["detected"]), int(o["labels"]))
    accounts = (report.get("orders") or {}).get("scoring", {}).get("any")
    if accounts:
        o = accounts["overall"]
        result.account_labels_detected = (int(o["detected"]), int(o["labels"]))
    result.market_alert_ids, result.decisions = set(), {}
    for m in read_recording(files.report_dir / "outputs.jsonl"):
        v = m.value
        if v is None:
            continue
        if m.topic == "risk.alerts" and v.get("source") == "market-worker":
            result.market_alert_ids.add(str(v["event_id"]))
        elif m.topic == "risk.decisions":
            result.decisions[str(v["event_id"])] = (
                str(v["decision"]), tuple(str(c) for c in v.get("reason_codes") or ()))
    return result

