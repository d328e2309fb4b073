"""The command line as users run it: the real entry point in a subprocess. Bad flags, bad
config files and an unreachable broker each give exactly one line on stderr, no traceback and
a non-zero exit, within 15 s; every command has --help; `schemas export` writes valid JSON
Schemas that accept real events."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumers.cli.app import COMMAND_MODULES, build_parser
from schemas.codec import encode
from schemas.registry import EVENT_TYPES
from tests.test_schemas import STRATEGIES

CONTRACT_S = 15  # DESIGN.md section 9: an unreachable broker is reported within 15 s


def streamrisk(*args: str, cwd: Path, env: dict[str, str] | None = None
               ) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMRISK_")}
    return subprocess.run([sys.executable, "-m", "consumers.cli.app", *args], cwd=cwd,
                          env={**clean, **(env or {})}, capture_output=True, text=True,
                          timeout=CONTRACT_S)


def one_line_error(result: subprocess.CompletedProcess[str], exit_code: int | None = None
                   ) -> str:
    assert result.returncode != 0, result.stdout
    if exit_code is not None:
        assert result.returncode == exit_code, result.stderr
    assert "Traceback" not in result.stderr
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("streamrisk")
    return lines[0]


@pytest.mark.parametrize(("args", "fragment"), [
    (["demo", "--no-such-flag"], "unrecognized arguments: --no-such-flag"),
    (["--profile", "fast", "topics", "list"], "invalid choice: 'fast'"),
    (["topics", "drop"], "invalid choice: 'drop'"),
    (["demo", "--duration", "soon"], "'soon' is not a number of seconds"),
])
def test_bad_flags(tmp_path: Path, args: list[str], fragment: str) -> None:
    assert fragment in one_line_error(streamrisk(*args, cwd=tmp_path), exit_code=2)


@pytest.mark.parametrize(("text", "fragment"), [
    (None, "cannot read config file"),
    ("profile = 'test'\nconnect_timeout_s = \n", "is not valid YAML/TOML: Invalid value"),
    ("connect_timeout_s = -3\n", "connect_timeout_s: Input should be greater than 0"),
])
def test_bad_config_file(tmp_path: Path, text: str | None, fragment: str) -> None:
    path = tmp_path / "streamrisk.toml"
    if text is not None:
        path.write_text(text)
    result = streamrisk("topics", "list", "--config", str(path),
                        "--bootstrap-servers", "127.0.0.1:1", cwd=tmp_path)
    line = one_line_error(result, exit_code=2)
    assert fragment in line and str(path) in line


@pytest.mark.parametrize(("kind", "text", "fragment"), [
    ("market", "[market.vol]\nlam = 3\n", "settings [market]: vol.lam: Input should be less"),
    ("orders", "[orders]\nno_such_knob = 1\n", "settings [orders]: no_such_knob: Extra"),
    ("scopes", "[scopes]\nauto_recover = 'maybe'\n", "settings [scopes]: auto_recover:"),
])
def test_bad_worker_section(tmp_path: Path, kind: str, text: str, fragment: str) -> None:
    """Each worker validates its own section of the config file before it connects."""
    path = tmp_path / "streamrisk.toml"
    path.write_text(text)
    result = streamrisk("worker", kind, "--config", str(path),
                        "--bootstrap-servers", "127.0.0.1:1", cwd=tmp_path)
    assert fragment in one_line_error(result, exit_code=1)


def test_worker_sections_reach_the_processors(tmp_path: Path) -> None:
    from consumers.cli.worker import PROCESSORS, build_processor, resolve
    from schemas.settings import load_settings

    path = tmp_path / "streamrisk.yaml"
    path.write_text("market:\n  vol:\n    lam: 0.97\norders:\n  auto_recover: false\n"
                    "scopes:\n  day_offset_ns: 3600000000000\n"
                    "fail_closed_on_missing_reference: false\n")
    settings = load_settings(path)
    built = {kind: build_processor(resolve(kind, None), settings) for kind in PROCESSORS}
    assert built["market"].config.vol.lam == 0.97
    assert built["orders"].config.auto_recover is False
    assert built["orders"].config.fail_closed_on_missing_reference is False
    assert built["scopes"].config.day_offset_ns == 3_600_000_000_000


def test_no_broker_given(tmp_path: Path) -> None:
    line = one_line_error(streamrisk("topics", "describe", cwd=tmp_path), exit_code=1)
    assert "no Kafka broker given" in line and "--bootstrap-servers" in line


@pytest.mark.parametrize("args", [["topics", "list"], ["topics", "create"],
                                  ["topics", "describe"], ["demo", "--duration", "30"]])
def test_unreachable_broker(tmp_path: Path, args: list[str]) -> None:
    # subprocess.run's timeout fails the test if the report takes longer than the contract.
    result = streamrisk(*args, "--bootstrap-servers", "127.0.0.1:1", cwd=tmp_path,
                        env={"STREAMRISK_CONNECT_TIMEOUT_S": "1"})
    line = one_line_error(result, exit_code=1)
    assert "cannot reach Kafka at 127.0.0.1:1 within 1 s" in line


def test_top_level_help(tmp_path: Path) -> None:
    result = streamrisk("--help", cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == ""
    assert "--bootstrap-servers" in result.stdout
    for name in ("demo", "broker", "topics", "schemas"):
        assert name in result.stdout


def _existing_commands() -> list[str]:
    names = []
    for module in COMMAND_MODULES:
        try:
            names.append(importlib.import_module(f"consumers.cli.{module}").NAME)
        except ModuleNotFoundError as exc:
            if exc.name != f"consumers.cli.{module}":
                raise
    return names


COMMANDS = _existing_commands()


def test_foundation_commands_exist() -> None:
    assert {"demo", "broker", "topics", "schemas"} <= set(COMMANDS)


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_has_help(name: str, capsys: pytest.CaptureFixture[str]) -> None:
    parser, _ = build_parser()
    with pytest.raises(SystemExit) as info:
        parser.parse_args([name, "--help"])
    assert info.value.code == 0
    captured = capsys.readouterr()
    assert captured.out.startswith(f"usage: streamrisk {name}")
    assert captured.err == ""


def test_topics_help_documents_the_drift_exit_code(capsys: pytest.CaptureFixture[str]) -> None:
    parser, _ = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["topics", "describe", "--help"])
    assert "Exit code 1 when the cluster drifts" in " ".join(capsys.readouterr().out.split())


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    target = tmp_path_factory.mktemp("schemas") / "out"
    result = streamrisk("schemas", "export", str(target), cwd=target.parent)
    assert result.returncode == 0, result.stderr
    files = sorted(target.iterdir())
    assert [f.name for f in files] == sorted(f"{t}.schema.json" for t in EVENT_TYPES)
    return {f.name.removesuffix(".schema.json"): orjson.loads(f.read_bytes()) for f in files}


def test_exported_schemas_are_valid_json_schema(exported: dict[str, dict[str, object]]
                                                ) -> None:
    for schema in exported.values():
        jsonschema.Draft202012Validator.check_schema(schema)


@pytest.mark.parametrize("type_name", sorted(EVENT_TYPES))
@settings(max_examples=10, deadline=None)
@given(data=st.data())
def test_exported_schema_accepts_real_events(exported: dict[str, dict[str, object]],
                                             type_name: str, data: st.DataObject) -> None:
    validator = jsonschema.Draft202012Validator(exported[type_name])
    event = data.draw(STRATEGIES[type_name])
    validator.validate(orjson.loads(encode(event)))
    # ...and refuses another type's event.
    other = "Quote" if type_name != "Quote" else "Trade"
    assert not validator.is_valid(orjson.loads(encode(data.draw(STRATEGIES[other]))))
