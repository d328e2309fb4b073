"""Limit book: hierarchy, tightest-of resolution, appetite, overrides, audit rules, files."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from engine.limits import (
    SCALED_METRICS,
    LimitBook,
    LimitsFileError,
    configs_from_mapping,
    diff_configs,
    is_audit_record,
    load_limits_file,
    parse_expiry,
    validate_config,
)
from schemas.control import LimitLevel, LimitOverride
from tests.test_order_risk import S, limit_config


def hierarchy(book: LimitBook) -> None:
    book.apply(limit_config("firm:F", order_notional=(800.0, 1000.0), gross_exposure=(None, 9e6)))
    book.apply(limit_config("desk:D", parent="firm:F", order_notional=(None, 900.0)))
    book.apply(limit_config("account:A", parent="desk:D", order_notional=(300.0, 2000.0)))
    book.apply(limit_config("strategy:A/momo", parent="account:A",
                            order_notional=(None, 700.0)))
    book.apply(limit_config("instrument:AAPL", order_notional=(None, 800.0)))


def test_resolution_takes_the_tightest_level_of_each_kind() -> None:
    book = LimitBook()
    hierarchy(book)
    scopes = book.order_scopes("A", "momo", "AAPL")
    assert scopes.ancestors == ("desk:D", "firm:F")
    assert (scopes.desk, scopes.firm) == ("desk:D", "firm:F")
    lim = book.resolve("order_notional", scopes, ts=0)
    assert (lim.soft, lim.soft_source, lim.hard, lim.hard_source) == \
        (300.0, "account:A", 700.0, "strategy:A/momo")
    other = book.resolve("order_notional", book.order_scopes("A", "other", "MSFT"), ts=0)
    assert (other.hard, other.hard_source) == (900.0, "desk:D")
    # groups consult only their own levels
    assert book.resolve("order_notional", scopes, 0, "instrument").hard == 800.0
    assert book.resolve("order_notional", scopes, 0, "strategy").hard == 700.0
    assert book.resolve("order_notional", scopes, 0, "account").hard == 900.0


def test_defaults_apply_when_nothing_else_names_a_metric() -> None:
    book = LimitBook(defaults={"order_qty": LimitLevel(soft=10.0, hard=50.0)})
    scopes = book.order_scopes("A", "s", "X")
    lim = book.resolve("order_qty", scopes, 0)
    assert (lim.hard, lim.hard_source) == (50.0, "default")
    book.apply(limit_config("account:A", order_qty=(None, 20.0)))
    assert book.resolve("order_qty", scopes, 0).hard == 20.0
    assert book.resolve("order_qty", scopes, 0).soft == 10.0


def test_soft_above_a_tighter_hard_is_lowered_to_it() -> None:
    book = LimitBook()
    book.apply(limit_config("firm:F", order_qty=(None, 10.0)))
    book.apply(limit_config("account:A", parent="firm:F", order_qty=(50.0, 100.0)))
    lim = book.resolve("order_qty", book.order_scopes("A", "s", "X"), 0)
    assert (lim.soft, lim.hard) == (10.0, 10.0)


def test_risk_appetite_scales_account_levels_but_never_the_caps_above() -> None:
    book = LimitBook()
    book.apply(limit_config("firm:F", order_notional=(None, 1000.0)))
    book.apply(limit_config("account:A", parent="firm:F", appetite=2.0,
                            order_notional=(None, 400.0), order_rate=(None, 10.0)))
    scopes = book.order_scopes("A", "s", "X")
    assert scopes.account_factor == 2.0
    assert book.resolve("order_notional", scopes, 0).hard == 800.0
    assert book.resolve("order_rate", scopes, 0).hard == 10.0  # not an appetite metric
    book.apply(limit_config("account:A", parent="firm:F", appetite=5.0,
                            order_notional=(None, 400.0)))
    assert book.resolve("order_notional", book.order_scopes("A", "s", "X"), 0).hard == 1000.0


def test_override_loosens_its_scope_until_expiry_but_not_the_parent() -> None:
    book = LimitBook()
    book.apply(limit_config("desk:D", order_notional=(None, 5000.0)))
    ov = LimitOverride(limits={"order_notional": LimitLevel(hard=9000.0)}, approver="bob",
                       expires_ts=10 * S, reason="rebalance")
    result = book.apply(limit_config("account:A", parent="desk:D", override=ov,
                                     order_notional=(None, 1000.0)))
    assert result.accepted and result.changed
    scopes = book.order_scopes("A", "s", "X")
    assert book.resolve("order_notional", scopes, 9 * S).hard == 5000.0  # desk still caps
    assert book.resolve("order_notional", scopes, 10 * S).hard == 1000.0  # expired
    assert book.validity(9 * S) == (-(2**63), 10 * S)
    assert book.validity(10 * S) == (10 * S, 2**63)


@pytest.mark.parametrize(("kwargs", "reason"), [
    ({"by": "   "}, "changed_by is blank"),
    ({"parent": "account:B"}, "cannot have parent"),
    ({"order_notionall": (None, 1.0)}, "unknown metric"),
])
def test_invalid_changes_are_rejected(kwargs: dict, reason: str) -> None:
    cfg = limit_config("account:A", **kwargs)
    assert reason in (validate_config(cfg) or "")
    book = LimitBook()
    result = book.apply(cfg)
    assert not result.accepted and reason in result.reason and book.get("account:A") is None


def test_override_needs_a_second_person_and_a_future_expiry() -> None:
    own = LimitOverride(limits={"order_qty": LimitLevel(hard=1.0)}, approver="alice",
                        expires_ts=5 * S, reason="x")
    assert "second person" in (validate_config(limit_config("account:A", override=own)) or "")
    stale = LimitOverride(limits={"order_qty": LimitLevel(hard=1.0)}, approver="bob",
                          expires_ts=5 * S, reason="x")
    assert "expired" in (validate_config(limit_config("account:A", ts=6 * S,
                                                      override=stale)) or "")


def test_cycles_are_rejected() -> None:
    book = LimitBook()
    assert book.apply(limit_config("desk:D1", parent="desk:D2")).accepted
    result = book.apply(limit_config("desk:D2", parent="desk:D1"))
    assert not result.accepted and "cycle" in result.reason


def test_repeat_is_not_a_change_and_delete_removes() -> None:
    book = LimitBook()
    first = limit_config("account:A", order_qty=(None, 5.0))
    assert book.apply(first).changed
    version = book.version
    again = limit_config("account:A", by="carol", order_qty=(None, 5.0))
    result = book.apply(again)
    assert result.accepted and not result.changed and book.version == version
    gone = again.model_copy(update={"deleted": True, "event_id": "del"})
    assert book.apply(gone).changed and book.get("account:A") is None
    assert not book.apply(gone).changed


def test_membership_and_fail_safe_firm() -> None:
    book = LimitBook()
    hierarchy(book)
    assert book.in_scope("A", "desk:D") and book.in_scope("A", "firm:F")
    assert not book.in_scope("A", "desk:OTHER") and not book.in_scope("A", "firm:OTHER")
    assert book.in_scope("orphan", "firm:ANY")  # no firm known: every firm kill reaches it
    assert not book.in_scope("orphan", "desk:D")


def test_audit_records_are_recognised() -> None:
    assert is_audit_record("audit/account:A/abc")
    assert not is_audit_record("account:A") and not is_audit_record(None)


# --- files ------------------------------------------------------------------------------------

YAML = """
changed_by: alice
reason: start of day
scopes:
  firm:ACME:
    limits:
      order_notional: {soft: 1000000, hard: 5000000}
  desk:EQ:
    parent: firm:ACME
    limits: {day_loss: {soft: 50000, hard: 100000}}
  account:ACC-1:
    parent: desk:EQ
    risk_appetite: 1.5
    limits: {gross_exposure: {hard: 20000000}}
    override:
      limits: {order_notional: {hard: 8000000}}
      approver: bob
      expires: 2h
      reason: index rebalance
"""

TOML = """
changed_by = "alice"

[[scopes]]
scope = "firm:ACME"
limits.order_notional = { soft = 1000000, hard = 5000000 }

[[scopes]]
scope = "desk:EQ"
parent = "firm:ACME"
limits.day_loss = { soft = 50000, hard = 100000 }
"""


def test_yaml_file_loads_into_limit_configs(tmp_path: Path) -> None:
    path = tmp_path / "limits.yaml"
    path.write_text(YAML)
    configs = load_limits_file(path, ts_event=1000)
    assert [c.scope for c in configs] == ["firm:ACME", "desk:EQ", "account:ACC-1"]
    acc = configs[2]
    assert acc.parent == "desk:EQ" and acc.risk_appetite == 1.5 and acc.changed_by == "alice"
    assert acc.override is not None and acc.override.approver == "bob"
    assert acc.override.expires_ts == 1000 + 2 * 3600 * S
    assert acc.reason == "start of day"
    again = load_limits_file(path, ts_event=1000)
    assert [c.event_id for c in again] == [c.event_id for c in configs]  # content ids
    book = LimitBook()
    assert all(book.apply(c).accepted for c in configs)


def test_toml_file_and_by_flag(tmp_path: Path) -> None:
    path = tmp_path / "limits.toml"
    path.write_text(TOML)
    configs = load_limits_file(path, ts_event=0, changed_by="carol")
    assert [(c.scope, c.changed_by) for c in configs] == [("firm:ACME", "carol"),
                                                         ("desk:EQ", "carol")]
    assert configs[0].limits["order_notional"].hard == 5_000_000


@pytest.mark.parametrize(("text", "message"), [
    ("scopes: [1, 2]", "'scopes' must be"),
    ("changed_by: a\nscopes: {'account:A': {limits: {order_qty: {soft: 5, hard: 1}}}}",
     "soft level 5.0 is above hard level 1.0"),
    ("scopes: {'account:A': {limits: {}}}", "no changed_by"),
    ("changed_by: a\nscopes: {'bogus:A': {}}", "scope must look like"),
    ("changed_by: a\nscopes: {'account:A': {override: {approver: b, reason: r, limits: {}}}}",
     "override needs 'expires'"),
    ("changed_by: a\nscopes: [{scope: 'account:A'}, {scope: 'account:A'}]", "listed twice"),
    (": : :", "not valid YAML/TOML"),
])
def test_bad_files_give_one_readable_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(LimitsFileError) as info:
        load_limits_file(path, ts_event=0)
    assert message in str(info.value) and "\n" not in str(info.value)


def test_missing_file() -> None:
    with pytest.raises(LimitsFileError, match="cannot read"):
        load_limits_file("/nonexistent/limits.yaml", ts_event=0)


def test_expiry_formats() -> None:
    assert parse_expiry("30m", 5) == 5 + 30 * 60 * S
    assert parse_expiry("1d", 0) == 86_400 * S
    assert parse_expiry("2024-01-02T00:00:00+00:00", 0) == 1_704_153_600 * S
    with pytest.raises(ValueError, match="neither"):
        parse_expiry("soon", 0)


def test_diff_reports_what_would_change() -> None:
    current = {c.scope: c for c in configs_from_mapping(
        {"changed_by": "a", "scopes": {"firm:F": {"limits": {"order_qty": {"hard": 5}}},
                                       "desk:D": {"parent": "firm:F"}}}, ts_event=0)}
    wanted = configs_from_mapping(
        {"changed_by": "a", "scopes": {"firm:F": {"limits": {"order_qty": {"hard": 6}}},
                                       "account:A": {"parent": "desk:D"}}}, ts_event=0)
    diffs = {(d.scope, d.field) for d in diff_configs(current, wanted)}
    assert diffs == {("firm:F", "limits.order_qty"), ("desk:D", "*"), ("account:A", "*")}
    assert diff_configs(current, list(current.values())) == []


# --- property: resolution is never looser than an applicable hard level -----------------------

_hard = st.one_of(st.none(), st.floats(0.0, 1e6))


@settings(max_examples=200, deadline=None)
@given(st.lists(_hard, min_size=6, max_size=6), st.lists(st.floats(0.1, 10.0), min_size=3,
                                                          max_size=3),
       st.sampled_from([*sorted(SCALED_METRICS), "order_rate", "throttle_hits"]),
       st.booleans(), st.integers(0, 20))
def test_resolution_never_looser_than_any_applicable_hard_level(
        hards: list[float | None], appetites: list[float], metric: str, with_override: bool,
        at: int) -> None:
    book = LimitBook(defaults={} if hards[5] is None else {metric: LimitLevel(hard=hards[5])})
    chain = [("firm:F", None), ("desk:D", "firm:F"), ("account:A", "desk:D"),
             ("strategy:A/s", "account:A"), ("instrument:X", None)]
    for (scope, parent), hard, appetite in zip(chain, hards, [*appetites, 1.0, 1.0],
                                               strict=False):
        override = None
        if with_override and scope == "account:A":
            override = LimitOverride(limits={metric: LimitLevel(hard=1e7)}, approver="bob",
                                     expires_ts=10 * S, reason="r")
        book.apply(limit_config(scope, parent=parent, appetite=appetite, override=override,
                                levels_map={metric: (None, hard)} if hard is not None else {}))
    scopes = book.order_scopes("A", "s", "X")
    ts = at * S
    lim = book.resolve(metric, scopes, ts)
    factor = {"account:A": scopes.account_factor, "strategy:A/s": scopes.strategy_factor}
    applicable = []
    for scope, _ in chain:
        level = book.levels(scope, ts).get(metric)
        if level is None or level.hard is None:
            continue
        scaled = metric in SCALED_METRICS and scope in factor
        applicable.append(level.hard * (factor[scope] if scaled else 1.0))
        if not scaled:  # absolute caps: the raw configured level binds
            assert lim.hard is not None and lim.hard <= level.hard
    if hards[5] is not None:
        applicable.append(hards[5])
    if applicable:
        assert lim.hard == min(applicable)
    else:
        assert lim.hard is None
    if lim.soft is not None and lim.hard is not None:
        assert lim.soft <= lim.hard


def test_effective_limits_per_scope_kind() -> None:
    book = LimitBook(defaults={"order_notional": LimitLevel(soft=50.0, hard=5000.0)})
    hierarchy(book)
    assert book.effective("firm:F", "order_notional", 0).hard == 1000.0
    desk = book.effective("desk:D", "order_notional", 0)
    assert (desk.soft, desk.hard, desk.hard_source) == (50.0, 900.0, "desk:D")
    acc = book.effective("account:A", "order_notional", 0)
    assert (acc.hard, acc.hard_source) == (900.0, "desk:D")
    strat = book.effective("strategy:A/momo", "order_notional", 0)
    assert (strat.hard, strat.hard_source) == (700.0, "strategy:A/momo")
    inst = book.effective("instrument:AAPL", "order_notional", 0)
    assert (inst.soft, inst.hard) == (None, 800.0)
    assert book.effective("instrument:MSFT", "order_notional", 0).empty
