"""What the demo shows while it runs: a rich live view on a terminal, plain lines elsewhere.

The live view is one screen (it fits the terminal, whatever its size): a header with the
broker, seed, scenarios, phase, market time and elapsed/remaining time; recent alerts
(severity colour, reason code, entity, observed vs threshold, message); recent denied orders
with their reason codes and numbers; limit breaches; trading states per scope with their
causes; and throughput (events in, outputs per topic per second, each worker's progress).
Every panel renders as many rows as its share of the screen holds, newest first.

Without a terminal (CI, pipes) `plain_line` gives one status line per period and
`new_items` the alerts, breaches and halts since the previous line.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.layout import Layout
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from consumers.demo.live import Snapshot

SEVERITY_STYLE = {"critical": "bold white on red", "warning": "bold black on yellow",
                  "info": "black on cyan"}
STATE_STYLE = {"halted": "bold white on red", "reducing": "bold black on yellow",
               "active": "bold green"}
LEVEL_STYLE = {"hard": "bold white on red", "soft": "bold black on yellow"}
PHASE_STYLE = {"starting": "cyan", "warm-up": "magenta", "live": "bold green",
               "draining": "yellow", "stopping": "yellow", "interrupted": "bold red"}
WIDE = 120  # columns from which the view has two columns of panels
MIN_PANEL_LINES = 6
# Output topics in the order the throughput line lists them, with short labels.
THROUGHPUT = (("risk.instruments", "instruments"), ("risk.accounts", "accounts"),
              ("risk.decisions", "decisions"), ("risk.alerts", "alerts"),
              ("risk.breaches", "breaches"), ("risk.states", "states"),
              ("risk.scopes", "desks"),
              ("risk.model-health", "health"), ("dlq", "dead letters"))


@dataclass
class RunStatus:
    """What the orchestrating thread knows about the run; the view reads it."""

    broker: str
    prefix: str
    seed: int
    scenarios: str
    run_dir: str
    began: float
    deadline: float
    sim_start_ns: int
    sim_end_ns: int
    phase: str = "starting"
    speed: float | None = None
    published: int = 0
    published_by_topic: Counter[str] = field(default_factory=Counter)
    publish_failed: int = 0
    in_rate: float = 0.0
    sim_now_ns: int | None = None
    progress: dict[str, tuple[int, int]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def elapsed(self, now: float | None = None) -> float:
        return (time.monotonic() if now is None else now) - self.began

    def remaining(self, now: float | None = None) -> float:
        return max(0.0, self.deadline - (time.monotonic() if now is None else now))

    @property
    def fraction(self) -> float:
        """Share of the simulated span published so far."""
        if self.sim_now_ns is None:
            return 0.0
        span = max(1, self.sim_end_ns - self.sim_start_ns)
        return min(1.0, max(0.0, (self.sim_now_ns - self.sim_start_ns) / span))


def clock(ts_ns: int | None, tenths: bool = False) -> str:
    """Event time of day in UTC: `14:30:05` (or `14:30:05.3`)."""
    if ts_ns is None:
        return "--:--:--"
    dt = datetime.fromtimestamp(ts_ns / 1e9, tz=UTC)
    text = dt.strftime("%H:%M:%S")
    return f"{text}.{dt.microsecond // 100_000}" if tenths else text


def mmss(seconds: float) -> str:
    seconds = max(0, round(seconds))
    return f"{seconds // 60}:{seconds % 60:02d}"


def num(value: Any) -> str:
    """Compact figures for narrow columns: 0.000217, -445, 56.4, 104k, 1.02M.

    >>> [num(v) for v in (0.000217, -445.3, -1234.5, 99100, 104270, 1016533.2, None)]
    ['0.000217', '-445', '-1,234', '99.1k', '104k', '1.02M', '-']
    """
    if not isinstance(value, int | float):
        return "-"
    v = float(value)
    for above, unit, suffix in ((1e9, 1e9, "B"), (1e6, 1e6, "M"), (1e4, 1e3, "k")):
        if abs(v) >= above:
            return f"{v / unit:.3g}{suffix}"
    return f"{v:,.0f}" if abs(v) >= 1000 else f"{v:.3g}"


def alert_entity(alert: dict[str, Any]) -> str:
    """`HALO`, or `HALO (fhs)` for a model alert about `market-worker/fhs/HALO`."""
    entity = str(alert.get("entity", ""))
    if alert.get("entity_kind") == "model" and "/" in entity:
        parts = entity.split("/")
        return f"{parts[-1]} ({parts[-2]})"
    return entity


def badge(text: str, style: str) -> Text:
    return Text(f" {text} ", style=style)


class Fitted:
    """A renderable built at render time for the height it is given (see `panels`)."""

    def __init__(self, build: Callable[[int, int], RenderableType]) -> None:
        self.build = build

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        height = options.height or console.height
        yield self.build(options.max_width, height)


class DemoView:
    """The live view; `get_snapshot` and `status` are read on every refresh."""

    def __init__(self, status: RunStatus, get_snapshot: Callable[[], Snapshot]) -> None:
        self.status = status
        self.get_snapshot = get_snapshot

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        snap = self.get_snapshot()
        width = options.max_width
        height = max(12, (options.height or console.height) - 1)  # the last line: cursor
        header = 4 + (1 if self.status.problems else 0)
        footer = 5
        body_height = height - header - footer
        panels = {
            "alerts": Fitted(lambda w, h: self._alerts(snap, w, h)),
            "decisions": Fitted(lambda w, h: self._denials(snap, w, h)),
            "states": Fitted(lambda w, h: self._states(snap, w, h)),
            "breaches": Fitted(lambda w, h: self._breaches(snap, w, h)),
        }
        layout = Layout()
        layout.split_column(Layout(Fitted(lambda w, h: self._header(w)), size=header),
                            Layout(name="body"),
                            Layout(Fitted(lambda w, h: self._throughput(snap, w, h)),
                                   size=footer))
        if width >= WIDE:
            layout["body"].split_row(Layout(name="left", ratio=3),
                                     Layout(name="right", ratio=2))
            layout["left"].split_column(Layout(panels["alerts"], ratio=3),
                                        Layout(panels["decisions"], ratio=2))
            layout["right"].split_column(Layout(panels["states"], ratio=3),
                                         Layout(panels["breaches"], ratio=2))
        else:  # one column: as many panels as get a few rows each, most important first
            ratios = {"alerts": 3, "decisions": 2, "states": 2, "breaches": 2}
            names = list(ratios)
            keep = names[:1]
            for n in range(len(names), 1, -1):
                shares = [ratios[name] for name in names[:n]]
                if body_height * min(shares) / sum(shares) >= MIN_PANEL_LINES:
                    keep = names[:n]
                    break
            layout["body"].split_column(*(Layout(panels[name], ratio=ratios[name])
                                          for name in keep))
        yield from layout.__rich_console__(console, options.update(height=height))

    # --- panels ------------------------------------------------------------------------

    def _header(self, width: int) -> RenderableType:
        s = self.status
        now = time.monotonic()
        title = Text.assemble(("streamrisk demo", "bold"), "  ", (s.broker, "cyan"),
                              f"  prefix {s.prefix!r}  seed {s.seed}  {s.scenarios}",
                              no_wrap=True, overflow="ellipsis")
        phase = s.phase.upper()
        if s.phase == "live" and s.speed:
            phase += f" x{s.speed:.0f}"
        line = Text.assemble(
            badge(phase, "reverse " + PHASE_STYLE.get(s.phase, "white")), "  market time ",
            (clock(s.sim_now_ns), "bold"), " UTC   elapsed ", (mmss(s.elapsed(now)), "bold"),
            "   remaining ", (mmss(s.remaining(now)), "bold"), "   ", no_wrap=True,
            overflow="ellipsis")
        grid = Table.grid(expand=False)
        grid.add_column(no_wrap=True)
        if width - line.cell_len >= 40:
            grid.add_column(no_wrap=True)
            grid.add_row(line, ProgressBar(total=1.0, completed=s.fraction, width=30))
        else:
            line.append(f"{s.fraction:.0%}", style="bold")
            grid.add_row(line)
        problems = [Text(p, style="bold red", no_wrap=True, overflow="ellipsis")
                    for p in s.problems[-1:]]
        return Panel(Group(title, grid, *problems), box=box.HEAVY, padding=(0, 1),
                     border_style="blue")

    def _alerts(self, snap: Snapshot, width: int, height: int) -> RenderableType:
        shown = snap.alerts[:max(0, height - 4)]
        cells = [(clock(a.get("ts_event"), tenths=True), str(a.get("severity", "info")),
                  str(a.get("reason_code")), alert_entity(a),
                  f"{num(a.get('observed'))} vs {num(a.get('threshold'))}",
                  str(a.get("message", ""))) for a in shown]
        # The explanation takes what the figures leave, or goes when that is too little.
        # time 10, severity badge 6, 2 of padding per column, 4 of panel border and padding.
        fixed = 10 + 6 + max((len(c[2]) + len(c[3]) + max(len(c[4]), 16) for c in cells),
                             default=0) + 2 * 6 + 4
        why = width - fixed >= 16
        table = _table()
        table.add_column("time", no_wrap=True, style="dim")
        table.add_column("sev", no_wrap=True)
        table.add_column("reason", no_wrap=True, style="bold")
        table.add_column("entity", no_wrap=True, style="cyan")
        table.add_column("observed vs thr." if not why else "observed vs threshold",
                         no_wrap=True, justify="right")
        if why:
            table.add_column("why", no_wrap=True, overflow="ellipsis", ratio=1,
                             style="grey70")
        for time_, sev, code, entity, figures, message in cells:
            row: list[RenderableType] = [time_, badge(sev.upper()[:4],
                                                      SEVERITY_STYLE.get(sev, "")),
                                         code, entity, figures]
            table.add_row(*row, *([message] if why else []))
        by_sev = snap.alerts_by_severity
        title = Text.assemble(("Alerts ", "bold"), f"{sum(by_sev.values()):,}  ",
                              (f"{by_sev.get('critical', 0)} critical", "red"), " · ",
                              (f"{by_sev.get('warning', 0)} warning", "yellow"), " · ",
                              f"{by_sev.get('info', 0)} info")
        body: RenderableType = table if snap.alerts else Text(
            "waiting for the first alert: the models are learning the market...",
            style="dim italic")
        return Panel(body, title=title, title_align="left", height=height,
                     border_style="red" if snap.alerts else "grey50")

    def _denials(self, snap: Snapshot, width: int, height: int) -> RenderableType:
        rows = max(0, height - 5)
        table = _table()
        table.add_column("time", no_wrap=True, style="dim")
        table.add_column("account", no_wrap=True, style="cyan")
        table.add_column("order", no_wrap=True)
        table.add_column("denied because", no_wrap=True, overflow="ellipsis", ratio=1)
        for d in snap.denials[:rows]:
            table.add_row(clock(d.get("ts_event"), tenths=True), str(d.get("account")),
                          f"{d.get('symbol', '')} {d.get('cl_ord_id', '')}",
                          _denial_reasons(d))
        total = snap.accepted + snap.denied
        share = f" ({snap.denied / total:.0%})" if total else ""
        title = Text.assemble(("Pre-trade decisions ", "bold"), f"{total:,}  ",
                              (f"{snap.accepted:,} accepted", "green"), " · ",
                              (f"{snap.denied:,} denied{share}", "yellow"))
        chips = Text(no_wrap=True, overflow="ellipsis")
        for code, n in snap.denial_codes.most_common():
            chips.append(f" {code} ", style="black on grey70")
            chips.append(f" {n:,}  ")
        if not snap.denials:
            body: RenderableType = Text("no order denied yet" if total else
                                        "waiting for orders...", style="dim italic")
        else:
            body = Group(chips, table)
        return Panel(body, title=title, title_align="left", height=height,
                     border_style="yellow" if snap.denials else "grey50")

    def _breaches(self, snap: Snapshot, width: int, height: int) -> RenderableType:
        # One line per breach rather than a table: it stays readable in a narrow column.
        lines = []
        for b in snap.breaches[:max(0, height - 2)]:
            level = str(b.get("level"))
            line = Text(no_wrap=True, overflow="ellipsis")
            line.append(clock(b.get("ts_event")) + " ", style="dim")
            line.append(badge(level.upper(), LEVEL_STYLE.get(level, "")))
            line.append(f" {str(b.get('scope', '')).removeprefix('account:')} ", style="cyan")
            line.append(f"{b.get('metric')} ", style="bold")
            line.append(f"{num(b.get('observed'))} over {num(b.get('limit'))}")
            lines.append(line)
        total = sum(snap.breaches_by_metric.values())
        hard = sum(n for key, n in snap.breaches_by_metric.items() if key.endswith("(hard)"))
        title = Text.assemble(("Limit breaches ", "bold"), f"{total:,}",
                              (f" · {hard} hard", "red") if hard else "")
        body: RenderableType = Group(*lines) if lines else Text("no limit breached yet",
                                                                style="dim italic")
        return Panel(body, title=title, title_align="left", height=height,
                     border_style="magenta" if snap.breaches else "grey50")

    def _states(self, snap: Snapshot, width: int, height: int) -> RenderableType:
        rows = max(0, height - 4)
        table = _table()
        table.add_column("scope", no_wrap=True, style="cyan")
        table.add_column("state", no_wrap=True)
        table.add_column("since, why  /  account figures", no_wrap=True, overflow="ellipsis",
                         ratio=1)
        for scope, state, since, cause in _state_rows(snap)[:rows]:
            detail = Text(no_wrap=True, overflow="ellipsis")
            if since and state != "active":
                detail.append(clock(since) + " ", style="dim")
            detail.append(cause)
            table.add_row(scope, badge(state.upper(), STATE_STYLE.get(state, "")), detail)
        moves = sum(snap.transitions_to.values())
        not_active = sum(1 for s in snap.states.values() if s.state != "active")
        title = Text.assemble(("Trading states ", "bold"), f"{moves:,} changes",
                              (f" · {not_active} not active", "yellow") if not_active else "")
        return Panel(table, title=title, title_align="left", height=height,
                     border_style="yellow" if not_active else "green")

    def _throughput(self, snap: Snapshot, width: int, height: int) -> RenderableType:
        s = self.status
        by_topic = s.published_by_topic
        line1 = Text.assemble(
            ("in  ", "bold"), (f"{s.in_rate:,.0f}/s", "bold green"),
            f"  {s.published:,} events published (market {by_topic.get('market', 0):,}, "
            f"orders {by_topic.get('orders', 0):,})",
            (f"  {s.publish_failed} failed", "bold red") if s.publish_failed else "")
        parts: list[str | tuple[str, str]] = [("out ", "bold")]
        for topic, label in THROUGHPUT:
            count = snap.outputs.get(topic, 0)
            if not count and topic == "dlq":
                continue
            parts += [f"{label} ", (f"{snap.rates.get(topic, 0.0):,.0f}/s", "bold green"),
                      (f" {count:,}   ", "dim")]
        workers: list[str | tuple[str, str]] = [("workers ", "bold")]
        for name, (done, total) in sorted(s.progress.items()):
            lag = total - done
            workers += [f"{name} {done:,}/{total:,} ",
                        (f"(lag {lag:,})", "yellow" if lag > 2000 else "dim"), "   "]
        if not s.progress:
            workers.append(("starting...", "dim"))
        lines = [line1, Text.assemble(*parts), Text.assemble(*workers)]
        for line in lines:
            line.no_wrap, line.overflow = True, "ellipsis"
        return Panel(Group(*lines),
                     title=Text("Throughput", style="bold"), title_align="left",
                     height=height, border_style="blue")


def _table() -> Table:
    return Table(box=box.SIMPLE_HEAD, expand=True, padding=(0, 1), show_edge=False,
                 pad_edge=False, header_style="bold grey70")


def _denial_reasons(d: dict[str, Any]) -> str:
    """`RATE_THROTTLE (101 vs 100), TRADING_STATE` from a decision's failed checks."""
    out = []
    checks = {str(c.get("code")): c for c in d.get("checks") or ()}
    for code in d.get("reason_codes") or ():
        c = checks.get(str(code))
        if c and isinstance(c.get("observed"), int | float) and isinstance(
                c.get("limit"), int | float):
            out.append(f"{code} ({num(c['observed'])} vs {num(c['limit'])})")
        else:
            out.append(str(code))
    return ", ".join(out)


def _state_rows(snap: Snapshot) -> list[tuple[str, str, int | None, str]]:
    """Not-active scopes first (halted, then reducing), then every account, then the rest of
    the scopes that moved; newest first within each group."""
    rank = {"halted": 0, "reducing": 1, "active": 2}
    rows: list[tuple[str, str, int | None, str]] = []
    seen = set()
    for st in sorted(snap.states.values(), key=lambda s: (rank.get(s.state, 3), -s.since)):
        if st.state != "active":
            cause = st.cause if st.transitions < 3 else f"{st.cause} ({st.transitions} changes)"
            rows.append((st.scope, st.state, st.since, cause))
            seen.add(st.scope)
    for account in sorted(snap.accounts):
        scope = f"account:{account}"
        if scope in seen:
            continue
        a = snap.accounts[account]
        seen.add(scope)
        rows.append((scope, str(a.get("trading_state") or "active"),
                     snap.states[scope].since if scope in snap.states else None,
                     f"PnL {num(a.get('day_pnl'))} · gross {num(a.get('gross_exposure'))} · "
                     f"{a.get('positions', 0)} pos"))
    for st in sorted(snap.states.values(), key=lambda s: -s.since):
        if st.scope not in seen:
            rows.append((st.scope, st.state, st.since,
                         f"{st.cause} ({st.transitions} changes)"))
    return rows


# --- plain output for pipes -------------------------------------------------------------


def plain_line(status: RunStatus, snap: Snapshot) -> str:
    """One status line: elapsed, phase, events in, alerts, decisions, breaches, states."""
    s = status
    phase = s.phase + (f" x{s.speed:.0f}" if s.phase == "live" and s.speed else "")
    lags = ", ".join(f"{name} {total - done:,}" for name, (done, total)
                     in sorted(s.progress.items()))
    alerts = sum(snap.alerts_by_reason.values())
    return (f"[{mmss(s.elapsed())}] {phase:<9} | market time {clock(s.sim_now_ns)} | "
            f"in {s.published:,} ({s.in_rate:,.0f}/s) | alerts {alerts:,}"
            f" | decisions {snap.accepted + snap.denied:,} ({snap.denied:,} denied) | "
            f"breaches {sum(snap.breaches_by_metric.values()):,} | state changes "
            f"{sum(snap.transitions_to.values()):,}" + (f" | lag {lags}" if lags else ""))


@dataclass
class PlainCursor:
    """Remembers what `new_items` already printed."""

    alerts: int = 0
    breaches: int = 0
    halts: int = 0


def new_items(snap: Snapshot, cursor: PlainCursor, limit: int = 6) -> Iterable[str]:
    """Alerts, breaches and halts that arrived since the previous call (at most `limit`
    of each, then a count of the rest)."""
    alerts = sum(snap.alerts_by_reason.values())
    fresh = list(reversed(snap.alerts[:max(0, alerts - cursor.alerts)]))
    for a in fresh[:limit]:
        yield (f"    alert   {str(a.get('severity')).upper():<8} {a.get('reason_code')} "
               f"{a.get('entity')}: {a.get('message')} (observed {num(a.get('observed'))}, "
               f"threshold {num(a.get('threshold'))})")
    if len(fresh) > limit:
        yield f"    ... and {len(fresh) - limit} more alerts"
    cursor.alerts = alerts
    breaches = sum(snap.breaches_by_metric.values())
    fresh = list(reversed(snap.breaches[:max(0, breaches - cursor.breaches)]))
    for b in fresh[:limit]:
        yield (f"    breach  {str(b.get('level')).upper():<8} {b.get('scope')} {b.get('metric')}"
               f" {num(b.get('observed'))} over {num(b.get('limit'))}")
    cursor.breaches = breaches
    halts = [t for t in snap.transitions if t.get("to_state") == "halted"]
    count = snap.transitions_to.get("halted", 0)
    for t in reversed(halts[:max(0, count - cursor.halts)][:limit]):
        yield f"    state   HALTED   {t.get('scope')}: {t.get('cause')}"
    cursor.halts = count
