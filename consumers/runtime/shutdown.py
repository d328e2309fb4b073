"""Graceful shutdown on SIGTERM and SIGINT.

The first signal asks the worker to stop (final checkpoint, leave the group, exit 0); a
second one exits at once with 128 + the signal number, for when the broker is gone and the
final checkpoint cannot finish. Handlers can only be installed from the main thread.
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def install(stop: Callable[[], None]) -> Callable[[], None]:
    """Route SIGTERM/SIGINT to `stop`; returns a function that puts the old handlers back."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    seen: list[int] = []

    def handler(signum: int, frame: FrameType | None) -> None:
        if seen:
            os._exit(128 + signum)
        seen.append(signum)
        stop()

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}

    def restore() -> None:
        for sig, old in previous.items():
            signal.signal(sig, old)

    return restore
