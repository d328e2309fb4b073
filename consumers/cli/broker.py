"""`streamrisk broker`: the embedded Kafka-protocol broker (noida-db) in the foreground.

It runs until Ctrl-C or SIGTERM, then stops the broker child by PID and exits 0. The broker
runs in its own session, so a terminal Ctrl-C reaches only this process, which then stops
the child itself (no orphaned broker). Also home of `stop_signals`, the shutdown helper the
other long-running commands (demo, workers) share.
"""

from __future__ import annotations

import argparse
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

from consumers.cli.base import CliError, Context

NAME = "broker"
HELP = "run the embedded Kafka-protocol broker (noida-db) in the foreground"
DEFAULT_PORT = 9092


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, metavar="P",
                        help=f"Kafka port (default {DEFAULT_PORT}; 0 picks a free port)")
    parser.add_argument("--data-dir", metavar="D",
                        help="where the broker keeps its files and broker.log (default: a "
                             "temporary directory removed on exit; a given one is kept)")
    parser.add_argument("--host", default="127.0.0.1", metavar="H",
                        help="address to listen on (default 127.0.0.1, loopback only)")


@contextmanager
def stop_signals() -> Iterator[threading.Event]:
    """Turn SIGINT and SIGTERM into an event the caller polls, so it can stop its child
    processes by PID and exit 0 instead of dying mid-shutdown. Main thread only."""
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run(ctx: Context) -> int:
    from producers.broker import BrokerError, EmbeddedBroker

    port = ctx.args.port
    if not 0 <= port <= 65535:
        raise CliError(f"--port must be between 0 and 65535, got {port}", exit_code=2)
    broker = EmbeddedBroker(port=port or None, data_dir=ctx.args.data_dir, host=ctx.args.host)
    with stop_signals() as stop:
        try:
            broker.start()
        except BrokerError as exc:
            raise CliError(str(exc)) from None
        except OSError as exc:  # an unusable --data-dir (a file, no permission...)
            raise CliError(f"cannot use data dir {ctx.args.data_dir}: "
                           f"{exc.strerror or exc}") from None
        try:
            assert broker.process is not None and broker.data_dir is not None
            ctx.out.print(f"broker ready at {broker.bootstrap} (pid {broker.process.pid}, "
                          f"data dir {broker.data_dir}, log {broker.log_path})",
                          markup=False, soft_wrap=True)
            ctx.out.print(f"point other commands at it with --bootstrap-servers "
                          f"{broker.bootstrap} or: export STREAMRISK_BOOTSTRAP_SERVERS="
                          f"{broker.bootstrap}", markup=False, soft_wrap=True)
            ctx.out.print("press Ctrl-C (or send SIGTERM) to stop", markup=False)
            ctx.out.file.flush()  # a supervisor reading our pipe must see the address now
            while not stop.wait(0.2):
                if not broker.is_running():
                    raise CliError(f"the embedded broker exited unexpectedly: "
                                   f"{broker._last_words()} (log {broker.log_path})")
        finally:
            broker.stop()
    ctx.out.print("broker stopped", markup=False)
    return 0
