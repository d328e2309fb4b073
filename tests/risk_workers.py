"""Risk workers as child processes for broker tests, and waiting on what they publish."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from schemas.settings import Settings
from tests.processors import read_committed
from tests.worker_harness import group_of, wait_members

ROOT = Path(__file__).resolve().parents[1]
WORKER_NAMES = {"market": "market-worker", "orders": "order-worker", "scopes": "scope-worker"}
"""`streamrisk worker` kind -> processor name (its default group and changelog)."""


class Pair:
    """A market worker and an order worker (child processes) on one topic prefix."""

    def __init__(self, settings: Settings, logs: Path) -> None:
        self.settings = settings
        self.logs = logs
        self.children: list[subprocess.Popen[bytes]] = []
        env = {**os.environ, "PYTHONPATH": str(ROOT), "COLUMNS": "400",
               # generous: no order may be released before its instrument risk has caught
               # up, however slow the market worker is on a loaded machine (a market worker
               # that stalls for the idle time, in a rebalance say, looks like the end of
               # the replay)
               "STREAMRISK_WORKER__TABLE_MAX_WAIT_MS": "120000",
               "STREAMRISK_WORKER__TABLE_IDLE_MS": "6000"}
        self.env = env
        self.kinds: list[str] = []
        for kind in ("market", "orders"):
            self.start(kind)

    def start(self, kind: str) -> None:
        assert self.settings.bootstrap_servers is not None
        cmd = [sys.executable, "-m", "consumers.runtime", kind,
               "--bootstrap-servers", self.settings.bootstrap_servers,
               "--topic-prefix", self.settings.topic_prefix, "--profile",
               self.settings.profile, "--commit-interval", "200"]
        name = f"{kind}-{len(self.kinds)}"
        with open(self.logs / f"{name}.log", "ab") as log:
            self.children.append(subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=log,
                                                  stderr=subprocess.STDOUT))
        self.kinds.append(name)

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Until each worker's group is stable with every child of that kind in it, each
        holding partitions."""
        for kind, processor in WORKER_NAMES.items():
            count = sum(name.startswith(f"{kind}-") for name in self.kinds)
            if count:
                wait_members(self.settings, group_of(self.settings, processor), count,
                             timeout_s, alive=self.alive)

    def events(self) -> str:
        """The workers' rebalances, warnings and errors so far: what to look at when two
        runs differ."""
        marks = (" assigned ", " revoked ", " lost ", "WARNING", "ERROR")
        lines = [f"{name}: {line}" for name in self.kinds
                 for line in (self.logs / f"{name}.log").read_text().splitlines()
                 if any(mark in line for mark in marks)]
        return "\n".join(lines[-40:])

    def alive(self) -> bool:
        for child, name in zip(self.children, self.kinds, strict=True):
            if child.poll() is not None:
                raise AssertionError(f"{name} worker exited with {child.returncode}: "
                                     f"{(self.logs / f'{name}.log').read_text()[-2000:]}")
        return True

    def close(self) -> None:
        for child in self.children:
            if child.poll() is None:
                child.terminate()
        for child in self.children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait(10)


def wait_for_record(settings: Settings, topic: str, found: Callable[[dict[str, Any]], bool],
                    alive: Callable[[], bool], timeout_s: float = 30) -> dict[str, Any]:
    """The first committed record on `topic` that `found` accepts."""
    deadline = time.monotonic() + timeout_s
    while True:
        for _, _, value in read_committed(settings, (topic,)):
            obj = orjson.loads(value)
            if found(obj):
                return obj
        alive()
        if time.monotonic() > deadline:
            raise TimeoutError(f"nothing expected on {topic}")
        time.sleep(0.2)
