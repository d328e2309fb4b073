"""`streamrisk worker`: bad invocations are one readable line and a non-zero exit."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from consumers.cli.app import main

ROOT = Path(__file__).resolve().parents[1]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["worker", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    return code, err


def test_a_worker_kind_is_required(capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(capsys, "--bootstrap-servers", "127.0.0.1:1")
    assert code == 2 and len(err) == 1 and "streamrisk worker market|orders" in err[0]


def test_a_missing_broker_is_one_line(capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("STREAMRISK_BOOTSTRAP_SERVERS", raising=False)
    code, err = run(capsys, "market")
    assert code == 1 and len(err) == 1 and "no Kafka broker given" in err[0]


@pytest.mark.parametrize(("spec", "words"), [
    ("no_such_module_xyz:Processor", "not available"),
    ("tests.processors:NoSuchProcessor", "has no processor class"),
    ("tests.processors:SymbolState", "does not implement the processor protocol"),
    ("just-a-module", "MODULE:CLASS"),
])
def test_a_bad_processor_is_one_line(capsys: pytest.CaptureFixture[str], spec: str,
                                     words: str) -> None:
    code, err = run(capsys, "--processor", spec, "--bootstrap-servers", "127.0.0.1:1")
    assert code != 0 and len(err) == 1 and words in err[0], err


@pytest.mark.kafka
def test_missing_topics_are_one_line(capsys: pytest.CaptureFixture[str], kafka_bootstrap: str,
                                     topic_prefix: str) -> None:
    code, err = run(capsys, "--processor", "tests.processors:CountingProcessor",
                    "--bootstrap-servers", kafka_bootstrap, "--topic-prefix", topic_prefix,
                    "--profile", "test")
    lines = [line for line in err if "error" in line]
    assert code == 1 and len(lines) == 1 and "missing topics" in lines[0], err


def test_python_m_consumers_runtime_is_the_worker_command() -> None:
    result = subprocess.run([sys.executable, "-m", "consumers.runtime", "--help"], cwd=ROOT,
                            capture_output=True, text=True, timeout=60,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert result.returncode == 0
    assert "--guarantee" in result.stdout and "--commit-interval" in result.stdout
