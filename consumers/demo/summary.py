"""The end of a demo run: detections scored against the scenario labels, and the summary.

Detection uses `engine.evaluation.score_labels`, the scoring `streamrisk evaluate` uses,
over everything the two workers did about an entity (see `consumers.demo.live.Signal`):
alerts, denied orders, limit breaches and moves to REDUCING or HALTED. A labelled scenario
(scenario, entity, window) is detected by the first such signal of severity warning or
worse on its entity between the window's start and its end plus a grace period (10 s of
market time); its delay is that signal's event time minus the window's start. Market
scenarios are mostly caught by alerts, order-flow scenarios by denials, breaches and halts.
Alert precision is scored separately, over alerts only: the share of warning-or-worse
alerts that fall inside some scenario window of their own entity.

>>> from consumers.demo.live import Signal
>>> from producers.simulator import Label
>>> signals = [Signal("denial", "ACC-1", 12, "warning", "DUPLICATE_ORDER")]
>>> result = score(signals, [Label("duplicate-orders", "ACC-1", 10, 20)], {"ACC-1"}, 0)
>>> row = result.labels[0]
>>> row["detected"], row["first_reason"], row["delay_s"]
(True, 'denial DUPLICATE_ORDER', 2e-09)
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from consumers.demo.live import Signal, Snapshot
from consumers.demo.view import SEVERITY_STYLE, RunStatus, clock, mmss
from engine.evaluation import NS, score_labels
from producers.simulator import Label

GRACE_S = 10.0


@dataclass
class Scoring:
    labels: list[dict[str, Any]]
    overall: dict[str, Any]
    alert_overall: dict[str, Any]

    @property
    def detected(self) -> int:
        return sum(1 for row in self.labels if row["detected"])


def score(signals: Sequence[Signal], labels: Iterable[Label], entities: set[str],
          grace_ns: int = round(GRACE_S * NS)) -> Scoring:
    """Labels scored against every signal; precision of alerts alone alongside."""
    labels = list(labels)
    everything = score_labels([s.as_alert() for s in signals], labels, entities=entities,
                              grace_ns=grace_ns)
    alerts_only = score_labels([s.as_alert() for s in signals if s.kind == "alert"], labels,
                               entities=entities, grace_ns=grace_ns)
    return Scoring(everything["labels"], everything["overall"], alerts_only["overall"])


@dataclass
class Files:
    run_dir: Path
    recording: Path
    recorded: int
    labels: Path
    report_dir: Path
    worker_logs: list[Path]
    broker_log: Path | None = None


@dataclass
class Evaluation:
    """What `streamrisk evaluate` made of the recording (None fields: it did not run)."""

    report_html: Path | None = None
    market_alert_ids: set[str] | None = None
    decisions: dict[str, tuple[str, tuple[str, ...]]] | None = None
    labels_detected: tuple[int, int] | None = None
    account_labels_detected: tuple[int, int] | None = None
    events_per_s: float | None = None
    skipped_because: str | None = None
    notes: list[str] = field(default_factory=list)


def _kv(table: Table, key: str, value: Text | str) -> None:
    table.add_row(Text(key, style="bold"), value)


def shown(path: Path) -> str:
    """A path as the user can paste it: `./dir/file` when relative."""
    return str(path) if path.is_absolute() else f"./{path}"


def _scope_line(scope: str, risk: dict[str, Any]) -> str:
    """One desk's or firm's latest aggregate (ScopeRisk from the scope worker)."""
    held = [f"{risk.get(k) or 0} {k.split('_')[1]}" for k in ("accounts_reducing",
                                                          "accounts_halted") if risk.get(k)]
    return (f"{scope} {str(risk.get('trading_state', '?')).upper()}: "
            f"{risk.get('accounts', 0)} accounts" + (f" ({', '.join(held)})" if held else "")
            + f", day PnL {float(risk.get('day_pnl') or 0):,.0f}, gross "
            f"{float(risk.get('gross_exposure') or 0):,.0f}, VaR95 (summed) "
            f"{float(risk.get('var_95') or 0):,.0f}")


def print_summary(console: Console, status: RunStatus, snap: Snapshot, labels: list[Label],
                  scoring: Scoring | None, files: Files, evaluation: Evaluation,
                  outcome: str, feed: dict[str, Any] | None = None) -> None:
    """The summary: figures, alerts by reason, detections, replay check, files."""
    console.rule(Text("streamrisk demo: summary", style="bold"), style="blue")
    facts = Table.grid(padding=(0, 2))
    facts.add_column(no_wrap=True)
    facts.add_column()
    span_s = ((status.sim_now_ns or status.sim_start_ns) - status.sim_start_ns) / NS
    _kv(facts, "run", f"{outcome}: {mmss(status.elapsed())} of wall time, "
        f"{mmss(span_s)} of market time ({clock(status.sim_start_ns)} to "
        f"{clock(status.sim_now_ns)} UTC), seed {status.seed}, {status.scenarios}")
    by_topic = status.published_by_topic
    _kv(facts, "events", f"{status.published:,} published (market {by_topic.get('market', 0):,}"
        f", orders {by_topic.get('orders', 0):,})"
        + (f", {status.publish_failed:,} NOT delivered" if status.publish_failed else
           ", all delivered"))
    outputs = ", ".join(f"{topic} {n:,}" for topic, n in sorted(
        snap.outputs.items(), key=lambda kv: -kv[1]))
    _kv(facts, "outputs", outputs or "none")
    for name, (done, total) in sorted(status.progress.items()):
        if done < total:
            _kv(facts, "", Text(f"the {name} was {total - done:,} events behind when the run "
                                "ended", style="yellow"))
    total = snap.accepted + snap.denied
    codes = ", ".join(f"{c} {n:,}" for c, n in snap.denial_codes.most_common(5))
    _kv(facts, "decisions", f"{total:,}: {snap.accepted:,} accepted, {snap.denied:,} denied"
        + (f" ({codes})" if codes else ""))
    breaches = ", ".join(f"{m} {n}" for m, n in snap.breaches_by_metric.most_common(6))
    _kv(facts, "breaches", f"{sum(snap.breaches_by_metric.values()):,}"
        + (f": {breaches}" if breaches else ""))
    moves = snap.transitions_to
    held = [s for s in snap.states.values() if s.state != "active"]
    states = (f"{sum(moves.values()):,} changes ({moves.get('reducing', 0):,} to reducing, "
              f"{moves.get('halted', 0):,} to halted, {moves.get('active', 0):,} back to "
              "active)")
    if held:
        states += "; at the end " + "; ".join(f"{s.scope} {s.state.upper()} ({s.cause})"
                                              for s in held[:4])
    _kv(facts, "states", states)
    for i, (scope, risk) in enumerate(sorted(snap.scopes.items())):
        _kv(facts, "" if i else "desks, firms", _scope_line(scope, risk))
    for i, (kind, n) in enumerate(snap.dead_letters.most_common()):
        _kv(facts, "" if i else "dead letters",
            Text(f"{n:,} {kind}, the first: {snap.dead_letter_reasons.get(kind, '?')}",
                 style="yellow"))
    if feed:
        held = feed["orders_aligned"] + feed["orders_by_timeout"]
        text = (f"{held:,} order-flow events held until their instrument's risk was out "
                f"(at most {feed['max_held']:,} at once; {feed['orders_by_timeout']:,} "
                "released after a quiet spell)")
        if feed["paused_s"] >= 1:
            text += f"; publishing paused {feed['paused_s']:.0f} s for the workers"
        _kv(facts, "alignment", text)
    console.print(facts)
    console.print()
    console.print(_alerts_table(snap.signals))
    if scoring is not None and labels:
        console.print(_detections_table(scoring, status.sim_start_ns))
        o, a = scoring.overall, scoring.alert_overall
        line = Text.assemble(
            (f"{scoring.detected} of {len(scoring.labels)} injected scenarios detected",
             "bold green" if scoring.detected == len(scoring.labels) else "bold yellow"),
            f" (first alert, denial, breach or halt on the entity within the window + "
            f"{GRACE_S:g} s)")
        if a["alerts"]:
            line.append(f"; {a['alerts_in_windows']} of {a['alerts']} warning-or-worse alerts "
                        f"fell inside a scenario window (precision {a['precision']:.2f})")
        del o
        console.print(line)
    elif labels:
        why = {"interrupted": "the run was interrupted", "failed": "the run failed"}.get(
            outcome, "the workers had not caught up")
        console.print(Text(f"detections not scored: {why}", style="yellow"))
    console.print()
    _print_replay(console, snap, evaluation)
    console.print()
    _print_files(console, files, evaluation)


def _alerts_table(signals: Sequence[Signal]) -> Table | Text:
    alerts = [s for s in signals if s.kind == "alert"]
    if not alerts:
        return Text("no alerts were raised", style="yellow")
    table = Table(title="Alerts by reason code", title_justify="left", box=box.SIMPLE_HEAVY,
                  title_style="bold")
    table.add_column("reason code", no_wrap=True, style="bold")
    table.add_column("alerts", justify="right")
    for sev in ("critical", "warning", "info"):
        table.add_column(sev, justify="right", header_style=SEVERITY_STYLE[sev])
    table.add_column("entities")
    by_code: dict[str, Counter[str]] = {}
    entities: dict[str, Counter[str]] = {}
    for s in alerts:
        by_code.setdefault(s.code, Counter())[s.severity] += 1
        entities.setdefault(s.code, Counter())[s.entity] += 1
    for code, counts in sorted(by_code.items(), key=lambda kv: -sum(kv[1].values())):
        names = entities[code]
        shown = ", ".join(e for e, _n in names.most_common(5))
        if len(names) > 5:
            shown += f" +{len(names) - 5}"
        table.add_row(code, f"{sum(counts.values()):,}", *(str(counts.get(k, 0) or "")
                      for k in ("critical", "warning", "info")), shown)
    return table


def _detections_table(scoring: Scoring, start_ns: int) -> Table:
    table = Table(title="Detections against the scenario labels", title_justify="left",
                  box=box.SIMPLE_HEAVY, title_style="bold")
    table.add_column("scenario", no_wrap=True, style="bold")
    table.add_column("entity", no_wrap=True, style="cyan")
    table.add_column("window (market time)", no_wrap=True)
    table.add_column("detected", no_wrap=True)
    table.add_column("delay", justify="right", no_wrap=True)
    table.add_column("first signal", no_wrap=True)
    table.add_column("signals", justify="right")
    for row in sorted(scoring.labels, key=lambda r: r["start_ts"]):
        length = (row["end_ts"] - row["start_ts"]) / NS
        window = f"{clock(row['start_ts'])} +{length:.0f} s"
        if row["detected"]:
            detected = Text(" yes ", style="bold black on green")
            delay = f"{row['delay_s']:.1f} s"
        else:
            detected = Text(" no ", style="bold white on red")
            delay = "-"
        table.add_row(row["scenario"], row["entity"], window, detected, delay,
                      row["first_reason"] or "-", f"{row['alerts']:,}")
    return table


def _print_replay(console: Console, snap: Snapshot, evaluation: Evaluation) -> None:
    """The live outputs against `streamrisk evaluate`'s in-process run of the recording."""
    ids = evaluation.market_alert_ids
    if ids is None:
        return
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column()
    live = snap.market_alert_ids
    if ids == live:
        text = Text.assemble(("identical: ", "bold green"),
                             f"the recording run in-process (streamrisk evaluate) gives the "
                             f"same {len(ids):,} market alerts, event id for event id, as the "
                             "market worker did live")
    else:
        text = Text.assemble(("differs: ", "bold red"),
                             f"{len(live - ids):,} market alerts only live, "
                             f"{len(ids - live):,} only in the in-process run of the "
                             "recording (see the worker logs)")
    grid.add_row("replay check", text)
    replay = evaluation.decisions
    if replay:
        same = sum(1 for key, outcome in snap.decisions.items() if replay.get(key) == outcome)
        total = max(len(replay), len(snap.decisions))
        text = Text(f"{same:,} of {total:,} pre-trade decisions identical to the in-process "
                    "run")
        if same < total:
            text.append(" (a live run can differ where an order was released by the join's "
                        "time limit, or a limit or command met the order in another order "
                        "than event time; order-worker.log counts the releases)",
                        style="yellow")
        grid.add_row("", text)
    console.print(grid)


def _print_files(console: Console, files: Files, evaluation: Evaluation) -> None:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True, style="bold")
    grid.add_column()
    grid.add_row("run directory", shown(files.run_dir))
    grid.add_row("recording", f"{shown(files.recording)} ({files.recorded:,} messages: the "
                 "published input stream, recording format)")
    grid.add_row("labels", shown(files.labels))
    if evaluation.report_html is not None:
        found = []
        for kind, pair in (("market", evaluation.labels_detected),
                           ("account", evaluation.account_labels_detected)):
            if pair:
                found.append(f"{pair[0]} of {pair[1]} {kind} scenarios")
        extra = f" ({' and '.join(found)} detected in-process)" if found else ""
        grid.add_row("evaluation", f"{shown(evaluation.report_html)}{extra}")
    else:
        grid.add_row("evaluation", Text(f"not run: {evaluation.skipped_because}; run "
                                        f"streamrisk evaluate {shown(files.recording)} "
                                        f"--labels {shown(files.labels)} --out "
                                        f"{shown(files.report_dir)}", style="yellow"))
    for note in evaluation.notes:
        grid.add_row("", Text(note, style="yellow"))
    logs = [p.name for p in files.worker_logs]
    if files.broker_log is not None:
        logs.append(files.broker_log.name)
    grid.add_row("logs", f"{', '.join(logs)} (in the run directory)")
    grid.add_row("next", f"streamrisk replay {shown(files.recording)} --bootstrap-servers "
                 "HOST:PORT   (the same stream again, on any cluster)")
    console.print(grid)
