"""A runtime Worker running in a thread of the test process (no signal handlers there); its
error, if it dies, is re-raised in the test."""

from __future__ import annotations

import threading

from consumers.runtime import Worker


class Background:
    """A worker running in a thread (no signal handlers there)."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.worker.run()
        except BaseException as exc:  # noqa: BLE001 - re-raised in alive() and stop()
            self.error = exc

    def alive(self) -> bool:
        """True while running; a worker that died raises its error here."""
        if not self.thread.is_alive() and self.error is not None:
            raise self.error
        return self.thread.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        self.worker.stop()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "worker did not stop"
        if self.error is not None:
            raise self.error
