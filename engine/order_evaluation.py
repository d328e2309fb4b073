"""Offline evaluation of the order risk stage: decisions, breaches and trading-state changes
scored against the simulator's account scenario labels (fat-finger, runaway-algo, ...).

Pure functions over the outputs of `engine.pipeline.Pipeline`, used by `streamrisk evaluate`.
Each output of interest becomes a *signal* on an account, and the signals of each kind are
scored with `engine.evaluation.score_labels` (recall and delay per scenario, precision
overall, the same rules as for market alerts):

* `denials`: a RiskDecision `deny`, unless its only reason is TRADING_STATE (the consequence
  of a state already counted under `states`, or of an instrument-wide state);
* `breaches`: a LimitBreach (soft: warning, hard: critical);
* `states`: an account or strategy TradingStateChanged to REDUCING or HALTED;
* `any`: all of the above together, with ORDER_UNUSUAL alerts on accounts.

>>> from collections import namedtuple
>>> L = namedtuple("L", "scenario entity start_ts end_ts")
>>> outputs = [("risk.decisions", {"type": "RiskDecision", "account": "A", "ts_event": 12,
...             "decision": "deny", "reason_codes": ["PERSONAL_THRESHOLD"]}),
...            ("risk.decisions", {"type": "RiskDecision", "account": "B", "ts_event": 13,
...             "decision": "accept", "reason_codes": []})]
>>> report = evaluate_orders(outputs, [L("fat-finger", "A", 10, 20)], grace_ns=0)
>>> report["scoring"]["denials"]["scenarios"]["fat-finger"]["recall"]
1.0
>>> report["decisions"]
{'accept': 1, 'deny': 1}
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Any

from engine.evaluation import NS, LabelLike, score_labels

KINDS = ("denials", "breaches", "states", "any")
_STATE_SEVERITY = {"reducing": "warning", "halted": "critical"}


def _account_of_scope(scope: str) -> str | None:
    kind, _, ident = scope.partition(":")
    if kind == "account":
        return ident
    if kind == "strategy":
        return ident.split("/", 1)[0]
    return None


def order_signals(outputs: Iterable[tuple[str, Mapping[str, Any]]]
                  ) -> dict[str, list[dict[str, Any]]]:
    """Signals per kind (see the module docstring), as alert-like dicts for score_labels."""
    signals: dict[str, list[dict[str, Any]]] = {kind: [] for kind in KINDS}

    def add(kind: str, entity: str, ts: int, severity: str, reason: str) -> None:
        signal = {"entity": entity, "ts_event": ts, "severity": severity,
                  "reason_code": reason}
        signals[kind].append(signal)
        signals["any"].append(signal)

    for _topic, value in outputs:
        kind = value.get("type")
        ts = int(value.get("ts_event", 0))
        if kind == "RiskDecision":
            codes = [c for c in value.get("reason_codes", []) if c != "TRADING_STATE"]
            if value.get("decision") == "deny" and codes:
                add("denials", str(value["account"]), ts, "warning", "+".join(codes))
        elif kind == "LimitBreach":
            level = str(value.get("level"))
            add("breaches", str(value["account"]), ts,
                "critical" if level == "hard" else "warning", f"{value['metric']}:{level}")
        elif kind == "TradingStateChanged":
            account = _account_of_scope(str(value.get("scope", "")))
            to_state = str(value.get("to_state"))
            if account is not None and to_state in _STATE_SEVERITY:
                add("states", account, ts, _STATE_SEVERITY[to_state],
                    f"{to_state}:{value.get('metric') or 'command'}")
        elif kind == "RiskAlert" and value.get("entity_kind") == "account":
            signal = {"entity": str(value["entity"]), "ts_event": ts,
                      "severity": str(value.get("severity")),
                      "reason_code": str(value.get("reason_code"))}
            signals["any"].append(signal)
    signals["any"].sort(key=lambda s: s["ts_event"])
    return signals


def evaluate_orders(outputs: Iterable[tuple[str, Mapping[str, Any]]],
                    labels: Iterable[LabelLike], *, accounts: set[str] | None = None,
                    grace_ns: int = 10 * NS, hours: float | None = None) -> dict[str, Any]:
    """Counts of decisions, denial reasons, breaches and state changes, and (with account
    labels) every signal kind scored against them.

    `accounts` is the universe of accounts (default: every account with a decision)."""
    items = list(outputs)
    decisions: Counter[str] = Counter()
    reasons: Counter[str] = Counter()
    breaches: Counter[str] = Counter()
    states: Counter[str] = Counter()
    seen: set[str] = set()
    for _topic, value in items:
        kind = value.get("type")
        if kind == "RiskDecision":
            decisions[str(value["decision"])] += 1
            seen.add(str(value["account"]))
            reasons.update(str(c) for c in value.get("reason_codes", []))
        elif kind == "LimitBreach":
            breaches[f"{value['metric']}:{value['level']}"] += 1
        elif kind == "TradingStateChanged":
            scope_kind = str(value.get("scope", "")).partition(":")[0]
            states[f"{scope_kind}:{value.get('to_state')}"] += 1
    universe = accounts if accounts is not None else seen
    report: dict[str, Any] = {
        "decisions": dict(sorted(decisions.items())),
        "deny_reasons": dict(reasons.most_common()),
        "breaches": dict(breaches.most_common()),
        "state_changes": dict(states.most_common()),
        "accounts": len(universe),
    }
    account_labels = [lb for lb in labels if lb.entity in universe]
    if account_labels:
        signals = order_signals(items)
        report["scoring"] = {
            kind: score_labels(signals[kind], account_labels, entities=universe,
                               grace_ns=grace_ns, hours=hours)
            for kind in KINDS}
    return report
