"""The embedded broker: starts on a free port, answers metadata, stops by PID leaving no
process; a taken port or a missing binary is one readable line."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient

import producers.broker as broker_mod
from consumers.cli.app import main
from producers.broker import BrokerError, EmbeddedBroker


def noida_alive(pid: int) -> bool:
    """True while `pid` is a live noida-db process (robust to the pid being reused)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return b"noida-db" in cmdline and state != "Z"


@pytest.fixture
def taken_port() -> Iterator[int]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield int(sock.getsockname()[1])


@pytest.mark.kafka
def test_starts_on_a_free_port_answers_metadata_and_stops_by_pid() -> None:
    broker = EmbeddedBroker().start()
    assert broker.process is not None and broker.data_dir is not None
    pid, data_dir = broker.process.pid, broker.data_dir
    try:
        assert broker.port is not None and broker.port > 0 and noida_alive(pid)
        metadata = AdminClient({"bootstrap.servers": broker.bootstrap}).list_topics(timeout=10)
        assert len(metadata.brokers) == 1
    finally:
        broker.stop()
    assert not noida_alive(pid)
    assert not data_dir.exists()  # a temporary data dir goes with the broker
    broker.stop()  # stopping twice is harmless


@pytest.mark.kafka
def test_given_data_dir_is_kept_and_holds_the_log(tmp_path: Path) -> None:
    with EmbeddedBroker(data_dir=tmp_path / "d") as broker:
        assert broker.is_running()
    assert not broker.is_running()
    assert (tmp_path / "d" / "broker.log").is_file()


def test_taken_port_is_one_line(taken_port: int) -> None:
    with pytest.raises(BrokerError) as info:
        EmbeddedBroker(port=taken_port).start()
    message = str(info.value)
    assert f"port {taken_port}" in message and "already in use" in message
    assert "\n" not in message


def test_missing_binary_is_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(broker_mod.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(broker_mod.shutil, "which", lambda name: None)
    broker = EmbeddedBroker()
    with pytest.raises(BrokerError, match=r"not installed: pip install noida-db==0\.2\.3"):
        broker.start()
    assert broker.process is None


def test_cli_missing_binary_and_taken_port(monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str],
                                           taken_port: int) -> None:
    assert main(["broker", "--port", str(taken_port)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"port {taken_port}" in err
    monkeypatch.setattr(broker_mod.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(broker_mod.shutil, "which", lambda name: None)
    assert main(["broker", "--port", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("streamrisk broker: error: the embedded broker is not installed")
    assert err.count("\n") == 1


@pytest.mark.kafka
def test_cli_broker_runs_in_foreground_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "consumers.cli.app", "broker", "--port", "0",
         "--data-dir", str(tmp_path / "data")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "COLUMNS": "200"})
    try:
        assert proc.stdout is not None
        ready = proc.stdout.readline()  # blocks until the broker answers (or the CLI fails)
        assert ready.startswith("broker ready at 127.0.0.1:"), ready
        bootstrap = ready.split()[3]
        pid = int(ready.split("(pid ")[1].split(",")[0])
        assert "--bootstrap-servers " + bootstrap in proc.stdout.readline()
        assert noida_alive(pid)
        assert AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10) is not None
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "broker stopped" in out and "Traceback" not in err
    assert not noida_alive(pid)
    assert (tmp_path / "data" / "broker.log").is_file()
