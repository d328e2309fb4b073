"""Offline evaluation of the market risk engine: VaR backtest tables per method, and alerts
scored against labelled scenario windows (recall, precision, detection delay).

Pure functions over processor state and outputs, used by `streamrisk evaluate`.

Scoring rules (what "detected" means):

* an alert counts when its severity is at least `min_severity` (warning by default: FEED_
  RESUMED, calm-again regime changes and other info alerts are not detections);
* a label (scenario, instrument, start, end) is detected by the first counted alert on that
  instrument with start <= ts_event <= end + grace; its delay is that alert's ts - start;
* precision is the share of counted alerts on labelled instruments' universe that fall in
  some label window (+ grace) of their own instrument; every other counted alert is a false
  alarm. Labels about entities that have no market data (accounts) are left out.

>>> from collections import namedtuple
>>> L = namedtuple("L", "scenario entity start_ts end_ts")  # anything with these attributes
>>> alerts = [{"entity": "X", "ts_event": 15, "severity": "critical", "reason_code": "PRICE_JUMP"},
...           {"entity": "Y", "ts_event": 50, "severity": "warning", "reason_code": "VOL_SPIKE"}]
>>> r = score_labels(alerts, [L("flash-crash", "X", 10, 20)], entities={"X", "Y"}, grace_ns=0)
>>> r["scenarios"]["flash-crash"]["recall"], r["overall"]["precision"], r["labels"][0]["delay_s"]
(1.0, 0.5, 5e-09)
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from engine.market_risk import MarketRiskProcessor

_RANK = {"info": 0, "warning": 1, "critical": 2}
NS = 1_000_000_000


class LabelLike(Protocol):
    @property
    def scenario(self) -> str: ...
    @property
    def entity(self) -> str: ...
    @property
    def start_ts(self) -> int: ...
    @property
    def end_ts(self) -> int: ...


def _alert_entity(alert: Mapping[str, Any]) -> str:
    """The instrument of an alert (model alerts name `worker/method/SYMBOL`)."""
    entity = str(alert["entity"])
    if alert.get("entity_kind") == "model":
        return entity.rsplit("/", 1)[-1]
    return entity


def score_labels(alerts: Iterable[Mapping[str, Any]], labels: Iterable[LabelLike], *,
                 entities: set[str], grace_ns: int = 10 * NS, min_severity: str = "warning",
                 hours: float | None = None) -> dict[str, Any]:
    """Recall and delay per scenario, precision and false alarms overall (see module doc)."""
    floor = _RANK[min_severity]
    counted = sorted((a for a in alerts if _RANK.get(str(a["severity"]), 0) >= floor),
                     key=lambda a: int(a["ts_event"]))
    by_entity: dict[str, list[Mapping[str, Any]]] = {}
    for a in counted:
        by_entity.setdefault(_alert_entity(a), []).append(a)
    relevant = [lb for lb in labels if lb.entity in entities]
    results: list[dict[str, Any]] = []
    in_window: set[int] = set()
    for lb in relevant:
        hits = [a for a in by_entity.get(lb.entity, [])
                if lb.start_ts <= int(a["ts_event"]) <= lb.end_ts + grace_ns]
        in_window.update(id(a) for a in hits)
        first = hits[0] if hits else None
        results.append({
            "scenario": lb.scenario, "entity": lb.entity, "start_ts": lb.start_ts,
            "end_ts": lb.end_ts, "detected": first is not None,
            "delay_s": (int(first["ts_event"]) - lb.start_ts) / NS if first else None,
            "first_reason": first["reason_code"] if first else None,
            "alerts": len(hits),
            "reasons": dict(Counter(str(a["reason_code"]) for a in hits)),
        })
    scenarios: dict[str, dict[str, Any]] = {}
    for name in sorted({r["scenario"] for r in results}):
        rows = [r for r in results if r["scenario"] == name]
        delays = [r["delay_s"] for r in rows if r["delay_s"] is not None]
        scenarios[name] = {
            "labels": len(rows), "detected": sum(r["detected"] for r in rows),
            "recall": sum(r["detected"] for r in rows) / len(rows),
            "median_delay_s": statistics.median(delays) if delays else None,
            "max_delay_s": max(delays) if delays else None,
            "alerts_in_windows": sum(r["alerts"] for r in rows),
        }
    false_alarms = [a for a in counted if id(a) not in in_window]
    overall = {
        "labels": len(results), "detected": sum(r["detected"] for r in results),
        "recall": (sum(r["detected"] for r in results) / len(results)) if results else None,
        "alerts": len(counted), "alerts_in_windows": len(counted) - len(false_alarms),
        "precision": ((len(counted) - len(false_alarms)) / len(counted)) if counted else None,
        "false_alarms": len(false_alarms),
        "false_alarms_by_reason": dict(Counter(str(a["reason_code"]) for a in false_alarms)),
        "grace_s": grace_ns / NS, "min_severity": min_severity,
    }
    if hours:
        overall["false_alarms_per_instrument_hour"] = len(false_alarms) / hours / max(
            1, len(entities))
    return {"labels": results, "scenarios": scenarios, "overall": overall}


def backtest_table(proc: MarketRiskProcessor) -> dict[str, dict[str, dict[str, Any]]]:
    """symbol -> method -> {"rolling": stats, "since_start": stats, "var95": ...}."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for symbol in proc.symbols():
        st = proc.state(symbol)
        if st is None:
            continue
        out[symbol] = {}
        for method, h in st.health.items():
            out[symbol][method] = {
                "rolling": h.tracker.rolling().model_dump(mode="json"),
                "since_start": h.tracker.since_start().model_dump(mode="json"),
                "var95": {"observations": h.n95, "exceedances": h.hits95},
                "primary": method == proc.config.var.primary,
                "fallback_switches": st.fallback_switches,
            }
    return out


def method_summary(table: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> dict[str, Any]:
    """Per method, pooled over instruments: observations, exceedances, rate, and how many
    instruments end in each since-start zone."""
    out: dict[str, dict[str, Any]] = {}
    for per_method in table.values():
        for method, row in per_method.items():
            s = row["since_start"]
            agg = out.setdefault(method, {"instruments": 0, "observations": 0,
                                          "exceedances": 0, "zones": Counter(),
                                          "kupiec_rejected_5pct": 0, "cc_rejected_5pct": 0})
            agg["instruments"] += 1
            agg["observations"] += s["observations"]
            agg["exceedances"] += s["exceedances"]
            agg["zones"][s["zone"]] += 1
            agg["kupiec_rejected_5pct"] += s["kupiec_p"] < 0.05
            agg["cc_rejected_5pct"] += s["christoffersen_cc_p"] < 0.05
    for agg in out.values():
        agg["rate"] = agg["exceedances"] / agg["observations"] if agg["observations"] else None
        agg["zones"] = dict(agg["zones"])
    return out
