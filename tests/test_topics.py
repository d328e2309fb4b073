"""Topic provisioning against a real broker: the catalogue is created exactly, idempotently,
and drift is reported (library and `streamrisk topics`)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from confluent_kafka.admin import ConfigResource, NewTopic

from consumers.cli.app import main
from producers.kafka import make_admin
from producers.provision import describe_drift, ensure_topics, list_topics
from schemas.settings import Settings
from schemas.topics import CATALOGUE, all_specs, by_name

pytestmark = pytest.mark.kafka


def test_create_makes_the_catalogue_and_is_idempotent(
        make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    specs = all_specs()
    assert {s.name for s in specs} >= {"market-worker.changelog", "order-worker.changelog"}
    report = ensure_topics(settings)
    assert sorted(report.created) == sorted(settings.topic(s.name) for s in specs)
    assert report.existing == [] and report.drift == []

    admin = make_admin(settings)
    metadata = admin.list_topics(timeout=10)
    for spec in specs:
        assert len(metadata.topics[settings.topic(spec.name)].partitions) == spec.partitions
    resources = [ConfigResource("topic", settings.topic(s.name)) for s in specs]
    by_topic = {s.full_name(settings.topic_prefix): s for s in specs}
    for resource, future in admin.describe_configs(resources).items():
        actual = future.result(timeout=10)
        for key, value in by_topic[resource.name].config.items():
            assert actual[key].value == value, (resource.name, key)

    again = ensure_topics(settings)
    assert again.created == [] and again.drift == []
    assert sorted(again.existing) == sorted(report.created)
    assert list_topics(settings) == {settings.topic(s.name): s.partitions for s in specs}


def test_drift_is_reported_not_altered(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    admin = make_admin(settings)
    market = settings.topic("market")
    future = admin.create_topics([NewTopic(market, 3, 1, config={
        **by_name("market").config, "cleanup.policy": "compact"})])[market]
    future.result(timeout=10)

    report = ensure_topics(settings)
    assert report.existing == [market]
    assert len(report.created) == len(all_specs()) - 1
    [drift] = report.drift
    assert drift.topic == market
    assert drift.problems == ["partitions: 3 on the cluster, 8 in the catalogue",
                              "cleanup.policy: compact on the cluster, delete in the catalogue"]
    # Left alone: still 3 partitions, still reported.
    assert list_topics(settings)[market] == 3
    assert [d.topic for d in describe_drift(settings)] == [market]


def test_missing_topics_are_drift(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings()
    ensure_topics(settings, [by_name("orders")])
    drift = describe_drift(settings, CATALOGUE)
    assert {d.topic for d in drift} == {settings.topic(s.name) for s in CATALOGUE} - {
        settings.topic("orders")}
    assert all(d.problems == ["missing"] for d in drift)


def test_cli_topics_create_list_describe(make_settings: Callable[..., Settings],
                                         capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    assert settings.bootstrap_servers is not None
    flags = ["--bootstrap-servers", settings.bootstrap_servers,
             "--topic-prefix", settings.topic_prefix, "--profile", settings.profile]
    n = len(all_specs())

    assert main(["topics", "describe", *flags]) == 1  # nothing created yet: all missing
    out = capsys.readouterr().out
    assert f"{n} of {n} topics drift" in out
    assert f"drift {settings.topic('market')}: missing" in out

    assert main(["topics", "create", *flags]) == 0
    out = capsys.readouterr().out
    assert f"created {n}, 0 already existed, 0 with drift" in out

    assert main(["topics", *flags, "create"]) == 0  # global options go anywhere
    assert f"created 0, {n} already existed, 0 with drift" in capsys.readouterr().out

    assert main(["topics", "list", *flags]) == 0
    out = capsys.readouterr().out
    rows = {}
    for line in out.splitlines():
        cells = [cell.strip() for cell in line.split("│")]
        if len(cells) == 4:  # │ topic │ partitions │
            rows[cells[1]] = cells[2]
    assert rows == {settings.topic(s.name): str(s.partitions) for s in all_specs()}

    assert main(["topics", "describe", *flags]) == 0
    out = capsys.readouterr().out
    assert f"all {n} topics match the catalogue" in out
    assert "Trade, Quote, Bar, BookTop, InstrumentStatus, NewsSentiment" in out
    assert "latest per key" in out and "2 GiB/partition" in out
