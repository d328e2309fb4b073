"""The embedded Kafka-protocol broker (noida-db) as a child process.

Used by `streamrisk broker`, `streamrisk demo` and the test fixtures: pick a free port (or
take the one given), start `noida-db start --only kafka` on loopback with its own data dir,
wait until it answers metadata, and stop it by PID with SIGTERM (SIGKILL after a grace
period). Its output goes to `<data_dir>/broker.log`.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType

# The binary is built against a newer glibc and says so on every start; it runs fine.
_HARMLESS = ("GLIBC_2.39",)


class BrokerError(RuntimeError):
    """The embedded broker could not start; the message is one readable line."""


def find_binary() -> str:
    """Path of the noida-db executable shipped by the `noida-db` package."""
    spec = importlib.util.find_spec("noida_db")
    if spec and spec.origin:
        candidate = Path(spec.origin).parent / "noida-db"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which("noida-db")
    if found:
        return found
    raise BrokerError("the embedded broker is not installed: pip install noida-db==0.2.3 "
                      "(it comes with `pip install streamrisk`)")


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
    return False


class EmbeddedBroker:
    """A noida-db Kafka broker owned by this process.

    >>> with EmbeddedBroker() as broker:  # doctest: +SKIP
    ...     print(broker.bootstrap)
    127.0.0.1:40123
    """

    def __init__(self, port: int | None = None, data_dir: str | Path | None = None,
                 host: str = "127.0.0.1") -> None:
        self.host = host
        self.port = port
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else None
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def log_path(self) -> Path:
        assert self.data_dir is not None
        return self.data_dir / "broker.log"

    def start(self, ready_timeout_s: float = 30.0) -> EmbeddedBroker:
        binary = find_binary()
        if self.port is None:
            self.port = free_port(self.host)
        elif port_in_use(self.port, self.host):
            raise BrokerError(f"port {self.port} on {self.host} is already in use "
                              "(choose another with --port)")
        if self.data_dir is None:
            self.data_dir = Path(tempfile.mkdtemp(prefix="streamrisk-broker-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        cmd = [binary, "start", "--only", "kafka", "--kafka-port", str(self.port),
               "--host", self.host, "--data-dir", str(self.data_dir)]
        with open(self.log_path, "ab") as log:
            # A new session: the broker is not hit by the terminal's Ctrl-C before we stop it.
            self.process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)
        self._wait_ready(ready_timeout_s)
        return self

    def _wait_ready(self, timeout_s: float) -> None:
        assert self.process is not None and self.port is not None
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                message = f"the embedded broker exited at start: {self._last_words()}"
                self.stop()  # removes a temporary data dir a failed start would leak
                raise BrokerError(message)
            if self._answers_metadata():
                return
            time.sleep(0.1)
        message = (f"the embedded broker did not answer within {timeout_s:g} s "
                   f"({self._last_words()})")
        self.stop()
        raise BrokerError(message)

    def _answers_metadata(self) -> bool:
        from confluent_kafka.admin import AdminClient

        try:
            with socket.create_connection((self.host, self.port or 0), timeout=0.2):
                pass
        except OSError:
            return False
        admin = AdminClient({"bootstrap.servers": self.bootstrap, "log_level": 0})
        try:
            admin.list_topics(timeout=1.0)
            return True
        except Exception:  # noqa: BLE001 - not ready yet, whatever the reason
            return False

    def _last_words(self) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "no log"
        useful = [ln.strip() for ln in lines if ln.strip() and not any(h in ln for h in _HARMLESS)]
        return useful[-1] if useful else "no output"

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self, grace_s: float = 10.0) -> None:
        """SIGTERM by PID, then SIGKILL if it has not exited after `grace_s`."""
        proc, self.process = self.process, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(grace_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._own_dir and self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def kill(self) -> None:
        """SIGKILL: the crash case (its in-memory log tail is lost)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)

    def __enter__(self) -> EmbeddedBroker:
        return self.start() if self.process is None else self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
