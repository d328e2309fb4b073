"""Plots and the self-contained HTML page of `streamrisk evaluate`.

Three PNGs per plotted instrument: returns with each method's VaR 99 band (the forecast made
before each return; exceedances marked), anomaly scores with the labelled scenario windows
shaded and alerts marked, and volatility per step with stressed regimes shaded. The HTML
page embeds them (base64), so it is one file that opens anywhere.
"""

from __future__ import annotations

import base64
import html
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from engine.evaluation import LabelLike
from engine.market_risk import ReturnTrace

METHOD_COLOURS = {"parametric": "#1f77b4", "fhs": "#d62728", "quantile": "#2ca02c"}


@dataclass
class InstrumentSeries:
    """What the plots need of one instrument's InstrumentRisk stream and alerts."""

    ts: list[int] = field(default_factory=list)
    anomaly: list[float] = field(default_factory=list)
    vol: list[float] = field(default_factory=list)
    stressed: list[bool] = field(default_factory=list)
    alerts: list[tuple[int, str, str]] = field(default_factory=list)  # ts, reason, severity

    def add_risk(self, value: Mapping[str, Any]) -> None:
        self.ts.append(int(value["ts_event"]))
        self.anomaly.append(float(value["anomaly_score"]))
        self.vol.append(float(value["vol"]))
        self.stressed.append(value["regime"] == "stressed")


def _times(ts: Sequence[int]) -> list[datetime]:
    return [datetime.fromtimestamp(t / 1e9, UTC) for t in ts]


def _figure(title: str) -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(11, 3.6), dpi=90)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    return fig, ax


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.autofmt_xdate()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_var_bands(symbol: str, traces: Sequence[ReturnTrace], path: Path) -> Path:
    fig, ax = _figure(f"{symbol}: returns per step and VaR 99 of each method "
                      "(forecast before the return)")
    x = _times([t.ts for t in traces])
    ax.plot(x, [t.ret for t in traces], lw=0.5, color="#555555", label="return")
    methods = list(traces[0].forecasts) if traces else []
    for m in methods:
        colour = METHOD_COLOURS.get(m)
        band = [math.log1p(-min(t.forecasts[m].var_99, 0.999999)) for t in traces]
        ax.plot(x, band, lw=0.9, color=colour, label=f"-VaR 99 {m}")
        hits = [(xi, t.ret) for xi, t in zip(x, traces, strict=True) if t.hits.get(m)]
        if hits:
            ax.scatter([h[0] for h in hits], [h[1] for h in hits], s=9, color=colour,
                       zorder=3)
    ax.legend(loc="lower left", fontsize=7, ncol=4)
    return _save(fig, path)


def _shade_labels(ax: Any, labels: Iterable[LabelLike]) -> None:
    for i, lb in enumerate(labels):
        ax.axvspan(*_times([lb.start_ts, lb.end_ts]), color="orange", alpha=0.25,
                   label="labelled window" if i == 0 else None)
        ax.annotate(lb.scenario, (_times([lb.start_ts])[0], 0.9), fontsize=7,
                    xycoords=("data", "axes fraction"))


def plot_anomaly(symbol: str, series: InstrumentSeries, labels: Sequence[LabelLike],
                 path: Path, threshold: float = 0.99999) -> Path:
    """Scores near 1 differ in their number of nines, so the plot shows -log10(1 - score):
    5 is a score of 0.99999."""
    fig, ax = _figure(f"{symbol}: anomaly score as -log10(1 - score), labelled windows, "
                      "alerts")
    surprise = [-math.log10(max(1.0 - a, 1e-12)) for a in series.anomaly]
    ax.plot(_times(series.ts), surprise, lw=0.6, color="#1f77b4", label="anomaly")
    ax.axhline(-math.log10(1.0 - threshold), color="grey", ls="--", lw=0.8,
               label="alert threshold")
    _shade_labels(ax, labels)
    marks = [t for t, _, sev in series.alerts if sev != "info"]
    if marks:
        ax.scatter(_times(marks), [12.5] * len(marks), marker="v", s=18, color="#d62728",
                   label="alert (any reason)", zorder=3)
    ax.set_ylim(-0.2, 13)
    ax.legend(loc="upper left", fontsize=7, ncol=4)
    return _save(fig, path)


def plot_vol_regime(symbol: str, series: InstrumentSeries, path: Path) -> Path:
    fig, ax = _figure(f"{symbol}: EWMA volatility per step; stressed regime shaded")
    x = _times(series.ts)
    ax.plot(x, series.vol, lw=0.8, color="#9467bd", label="vol per step")
    start = None
    for xi, s in zip(x, series.stressed, strict=True):
        if s and start is None:
            start = xi
        elif not s and start is not None:
            ax.axvspan(start, xi, color="red", alpha=0.15)
            start = None
    if start is not None and x:
        ax.axvspan(start, x[-1], color="red", alpha=0.15)
    ax.legend(loc="upper left", fontsize=7)
    return _save(fig, path)


# --- HTML --------------------------------------------------------------------------------

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th{background:#f3f3f3} td.l,th.l{text-align:left}
.green{background:#d9f2d9}.yellow{background:#fff3c4}.red{background:#f8d0d0}
img{max-width:100%;display:block;margin:0.5em 0}
"""


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return html.escape(str(value))


def _table(headers: Sequence[str], rows: Iterable[Sequence[Any]], *,
           classes: Sequence[str | None] | None = None) -> str:
    head = "".join(f"<th class='{'l' if i == 0 else ''}'>{html.escape(h)}</th>"
                   for i, h in enumerate(headers))
    body = []
    for row in rows:
        cells = []
        for i, v in enumerate(row):
            cls = ("l " if i == 0 else "") + ((classes[i] or "") if classes else "")
            if isinstance(v, str) and v in ("green", "yellow", "red"):
                cls += f" {v}"
            cells.append(f"<td class='{cls.strip()}'>{_fmt(v)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def write_html(report: Mapping[str, Any], plots: Mapping[str, Sequence[Path]],
               path: Path) -> Path:
    """The whole report as one HTML file with the plots embedded."""
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>streamrisk evaluate"
             f"</title><style>{_CSS}</style></head><body>",
             "<h1>streamrisk evaluate</h1>",
             f"<p>input <code>{html.escape(str(report['input']))}</code>: "
             f"{report['events']} events, {report['outputs']} outputs, "
             f"{report['events_per_s']:,.0f} events/s in-process; primary VaR method "
             f"<b>{html.escape(report['primary'])}</b>.</p>"]
    summary = report["methods"]
    parts.append("<h2>VaR 99 backtest per method (pooled over instruments)</h2>")
    parts.append(_table(
        ["method", "instruments", "observations", "exceedances", "rate", "green", "yellow",
         "red", "Kupiec rejects (5%)", "cond. coverage rejects (5%)"],
        [[m, s["instruments"], s["observations"], s["exceedances"], s["rate"],
          s["zones"].get("green", 0), s["zones"].get("yellow", 0), s["zones"].get("red", 0),
          s["kupiec_rejected_5pct"], s["cc_rejected_5pct"]] for m, s in summary.items()]))
    parts.append("<h2>Per instrument and method</h2>")
    rows = []
    for symbol, per_method in report["backtest"].items():
        for method, row in per_method.items():
            s, r = row["since_start"], row["rolling"]
            rows.append([f"{symbol} {method}" + (" (primary)" if row["primary"] else ""),
                         s["observations"], s["exceedances"],
                         s["exceedances"] / s["observations"] if s["observations"] else None,
                         s["kupiec_lr"], s["kupiec_p"], s["christoffersen_ind_lr"],
                         s["christoffersen_ind_p"], s["christoffersen_cc_lr"],
                         s["christoffersen_cc_p"], s["zone"], r["observations"],
                         r["exceedances"], r["zone"]])
    parts.append(_table(
        ["instrument / method", "obs", "exceed.", "rate", "Kupiec LR", "Kupiec p",
         "Christoffersen ind LR", "ind p", "cond. cov. LR", "cc p", "zone",
         "rolling obs", "rolling exceed.", "rolling zone"], rows))
    parts.append("<h2>Alerts by reason</h2>")
    parts.append(_table(["reason", "alerts"], sorted(report["alerts_by_reason"].items())))
    scoring = report.get("labels")
    if scoring:
        o = scoring["overall"]
        parts.append("<h2>Alerts against labelled scenarios</h2>")
        parts.append(f"<p>{o['detected']} of {o['labels']} labelled windows detected; "
                     f"precision {_fmt(o['precision'])} ({o['alerts_in_windows']} of "
                     f"{o['alerts']} alerts of severity {o['min_severity']}+ inside a window, "
                     f"grace {o['grace_s']:g} s); {o['false_alarms']} false alarms.</p>")
        parts.append(_table(
            ["scenario", "labels", "detected", "recall", "median delay s", "max delay s",
             "alerts in windows"],
            [[n, s["labels"], s["detected"], s["recall"], s["median_delay_s"],
              s["max_delay_s"], s["alerts_in_windows"]]
             for n, s in scoring["scenarios"].items()]))
        parts.append(_table(
            ["scenario", "instrument", "detected", "delay s", "first alert", "alerts"],
            [[r["scenario"], r["entity"], "yes" if r["detected"] else "NO", r["delay_s"],
              r["first_reason"], r["alerts"]] for r in scoring["labels"]]))
    if report.get("orders"):
        parts += order_sections(report["orders"])
    parts.append("<h2>Plots</h2>")
    for symbol, files in plots.items():
        parts.append(f"<h3>{html.escape(symbol)}</h3>")
        for file in files:
            data = base64.b64encode(file.read_bytes()).decode()
            parts.append(f"<img alt='{html.escape(file.stem)}' "
                         f"src='data:image/png;base64,{data}'>")
    parts.append("</body></html>")
    path.write_text("\n".join(parts), encoding="utf-8")
    return path


def order_sections(orders: Mapping[str, Any]) -> list[str]:
    """The order stage's part of the page: counts, then each signal kind (denials, breaches,
    state changes, any) against the account scenario labels."""
    parts = ["<h2>Orders: decisions, breaches, state changes</h2>",
             _table(["decision", "orders"], sorted(orders["decisions"].items())),
             _table(["denial reason", "orders"], list(orders["deny_reasons"].items())),
             _table(["breach (metric:level)", "breaches"], list(orders["breaches"].items())),
             _table(["state change (scope kind:to)", "changes"],
                    list(orders["state_changes"].items()))]
    scoring = orders.get("scoring")
    if not scoring:
        return parts
    parts.append("<h2>Orders against labelled account scenarios</h2>")
    for kind, result in scoring.items():
        o = result["overall"]
        parts.append(f"<h3>{html.escape(kind)}</h3><p>{o['detected']} of {o['labels']} "
                     f"labelled windows detected; precision {_fmt(o['precision'])} "
                     f"({o['alerts_in_windows']} of {o['alerts']} signals inside a window, "
                     f"grace {o['grace_s']:g} s).</p>")
        parts.append(_table(
            ["scenario", "labels", "detected", "recall", "median delay s", "max delay s",
             "signals in windows"],
            [[n, s["labels"], s["detected"], s["recall"], s["median_delay_s"],
              s["max_delay_s"], s["alerts_in_windows"]]
             for n, s in result["scenarios"].items()]))
        parts.append(_table(
            ["scenario", "account", "detected", "delay s", "first signal", "signals"],
            [[r["scenario"], r["entity"], "yes" if r["detected"] else "NO", r["delay_s"],
              r["first_reason"], r["alerts"]] for r in result["labels"]]))
    return parts
