"""`streamrisk demo`: end to end on the embedded broker it starts itself, and on a given
cluster; it always cleans up after itself."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from consumers.cli import demo
from consumers.cli.app import main
from schemas.settings import Settings
from tests.test_broker import noida_alive

pytestmark = pytest.mark.kafka

EXPECTED = len(demo.demo_events(1))


def test_demo_starts_and_stops_its_own_broker(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRISK_")}
    result = subprocess.run([sys.executable, "-m", "consumers.cli.app", "demo",
                             "--duration", "5", "--seed", "1"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    started = re.search(r"embedded broker at 127\.0\.0\.1:\d+ \(pid (\d+)\)", result.stdout)
    assert started, result.stdout
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith(f"demo: published {EXPECTED} events (")
    assert f"consumed {EXPECTED} back read_committed" in summary
    assert summary.endswith("embedded broker stopped")
    assert not noida_alive(int(started.group(1)))


def test_demo_on_a_given_cluster_reads_back_only_its_own_run(
        make_settings: Callable[..., Settings], capsys: pytest.CaptureFixture[str]) -> None:
    settings = make_settings()
    assert settings.bootstrap_servers is not None
    args = ["demo", "--duration", "20", "--seed", "3", "--bootstrap-servers",
            settings.bootstrap_servers, "--topic-prefix", settings.topic_prefix]
    outputs = []
    for _ in range(2):  # the second run finds the first run's events already in the topics
        assert main(args) == 0
        outputs.append(capsys.readouterr().out)
    for out in outputs:
        assert f"using the cluster at {settings.bootstrap_servers}" in out
        assert f"consumed {EXPECTED} back read_committed" in out
    assert "14 created" in outputs[0] and "0 created" in outputs[1]
    # Same seed, same events: the rows differ only in their offsets.
    rows = [[re.sub(r"│\s+\d+\s+│\s+\d+\s+│", "│", line) for line in out.splitlines()
             if "demo-3-" in line or " Trade " in line] for out in outputs]
    assert rows[0] == rows[1] and len(rows[0]) > 0


def test_unknown_scenario_is_refused_before_anything_starts(
        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--scenario", "no-such-scenario"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.strip() == ("streamrisk demo: error: unknown scenario "
                                    "'no-such-scenario' (known scenarios: "
                                    f"{', '.join(demo.SCENARIOS) or 'none yet'})")
