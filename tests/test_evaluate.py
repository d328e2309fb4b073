"""`streamrisk evaluate`: a recording or a CSV through the market engine in-process, with the
report files, the labels scored, the outputs equal to the driver's, and bad input reported
as one line."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from consumers.cli.app import main
from engine.driver import by_key, run_recording
from engine.market_risk import MarketRiskProcessor
from schemas.recording import read_recording

SP500 = Path(__file__).parent / "data" / "sp500"
BAR_COLUMNS = "ts=date,open=open,high=high,low=low,close=close,volume=volume"


@pytest.fixture(scope="module")
def recording(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("sim")
    rec, labels = d / "sim.jsonl.zst", d / "labels.jsonl"
    assert main(["simulate", "--duration", "240", "--seed", "3", "--instruments", "3",
                 "--accounts", "0", "--scenario", "flash-crash", "--scenario",
                 "crossed-quotes", "--out", str(rec), "--labels", str(labels)]) == 0
    return rec, labels


def test_evaluate_recording_with_labels(recording: tuple[Path, Path], tmp_path: Path) -> None:
    rec, labels = recording
    out = tmp_path / "report"
    assert main(["evaluate", str(rec), "--out", str(out), "--labels", str(labels),
                 "--max-plots", "2"]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    messages = list(read_recording(rec))
    assert report["events"] == len(messages) and report["bad_lines"] == 0
    assert report["processed"] == len(messages)  # a market-only recording
    outputs = (out / "outputs.jsonl").read_bytes().splitlines()
    assert len(outputs) == report["outputs"] > len(messages)
    # Every instrument has all three methods backtested, since start and rolling.
    assert set(report["backtest"]) == {m.key for m in messages}
    for per_method in report["backtest"].values():
        assert set(per_method) == {"parametric", "fhs", "quantile"}
        for row in per_method.values():
            assert row["since_start"]["observations"] > 100
            assert row["since_start"]["zone"] in ("green", "yellow", "red")
    assert report["methods"]["fhs"]["observations"] > 300
    scoring = report["labels"]
    assert scoring["overall"]["labels"] == 2
    for name in ("flash-crash", "crossed-quotes"):
        assert scoring["scenarios"][name]["recall"] == 1.0
        assert 0 <= scoring["scenarios"][name]["median_delay_s"] < 10
    assert 0 < scoring["overall"]["precision"] <= 1
    # Plots: the labelled instruments first, three PNGs each, embedded in the page.
    plotted = report["plots"]
    assert len(plotted) == 2
    assert set(plotted) == {lb["entity"] for lb in scoring["labels"]}
    for files in plotted.values():
        assert len(files) == 3
        for f in files:
            assert (out / f).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (out / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 6
    for needle in ("Kupiec", "Christoffersen", "flash-crash", "precision"):
        assert needle in page


def test_evaluate_outputs_are_the_drivers(recording: tuple[Path, Path], tmp_path: Path) -> None:
    rec, _ = recording
    assert main(["evaluate", str(rec), "--out", str(tmp_path / "a"), "--max-plots", "0"]) == 0
    run_recording(MarketRiskProcessor(), rec, tmp_path / "reference.jsonl")

    def grouped(path: Path) -> dict[tuple[str, str | None], list[object]]:
        return by_key((m.topic, m.key, m.value or {}) for m in read_recording(path))

    assert grouped(tmp_path / "a" / "outputs.jsonl") == grouped(tmp_path / "reference.jsonl")


def test_evaluate_csv_daily_bars(tmp_path: Path) -> None:
    out = tmp_path / "aapl"
    assert main(["evaluate", str(SP500 / "AAPL.csv"), "--out", str(out), "--kind", "bar",
                 "--symbol", "AAPL", "--columns", BAR_COLUMNS, "--max-plots", "1"]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["events"] == 1257 and report["format"] == "csv"
    fhs = report["backtest"]["AAPL"]["fhs"]
    assert fhs["primary"] and fhs["since_start"]["zone"] != "red"
    assert report["plots"]["AAPL"] == ["plots/AAPL_var.png", "plots/AAPL_anomaly.png",
                                       "plots/AAPL_vol_regime.png"]


def test_evaluate_with_a_model_variant(tmp_path: Path) -> None:
    config = tmp_path / "market.yaml"
    config.write_text("var:\n  primary: quantile\n  methods: [quantile, fhs]\n")
    out = tmp_path / "variant"
    assert main(["evaluate", str(SP500 / "KO.csv"), "--out", str(out), "--kind", "bar",
                 "--symbol", "KO", "--columns", BAR_COLUMNS, "--market-config", str(config),
                 "--max-plots", "0"]) == 0
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["primary"] == "quantile" and set(report["methods"]) == {"quantile", "fhs"}


def test_bad_lines_are_reported_and_the_rest_evaluated(
        recording: tuple[Path, Path], tmp_path: Path) -> None:
    rec, _ = recording
    messages = list(read_recording(rec))[:300]
    lines = [m.to_json() for m in messages]
    lines.insert(10, b"{not json")
    bad = tmp_path / "partly_bad.jsonl"
    bad.write_bytes(b"\n".join(lines) + b"\n")
    out = tmp_path / "bad"
    assert main(["evaluate", str(bad), "--out", str(out), "--max-plots", "0"]) == 1
    report = orjson.loads((out / "report.json").read_bytes())
    assert report["bad_lines"] == 1 and report["events"] == 300


@pytest.mark.parametrize(("args", "fragment"), [
    (["evaluate", "missing.jsonl", "--out", "o"], "no such file: missing.jsonl"),
    (["evaluate", str(SP500 / "AAPL.csv"), "--out", "o"], "CSV input needs --kind and --columns"),
    (["evaluate", str(SP500 / "AAPL.csv"), "--out", "o", "--kind", "bar", "--symbol", "AAPL",
      "--columns", BAR_COLUMNS.replace("ts=date", "ts=day")], "column 'day'"),
    (["evaluate", str(SP500 / "AAPL.csv"), "--out", "o", "--kind", "bar", "--symbol", "AAPL",
      "--columns", BAR_COLUMNS, "--market-config", "cfg.yaml"], "var.primary"),
])
def test_bad_input_is_one_line(tmp_path: Path, args: list[str], fragment: str,
                               capsys: pytest.CaptureFixture[str],
                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cfg.yaml").write_text("var:\n  primary: magic\n")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = err.splitlines()
    assert len(lines) == 1 and fragment in lines[0], err
    assert not (tmp_path / "o" / "report.json").exists()
