"""Ground truth of injected scenarios: one JSONL object per injection, so detection can be
scored against it.

>>> label = Label("flash-crash", "ACME", 10, 20)
>>> Label.from_json(label.to_json()) == label
True
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import orjson


@dataclass(frozen=True)
class Label:
    """`scenario` acted on `entity` (instrument or account id) from `start_ts` to `end_ts`
    (ns, event time, both inclusive)."""

    scenario: str
    entity: str
    start_ts: int
    end_ts: int

    def contains(self, ts: int) -> bool:
        return self.start_ts <= ts <= self.end_ts

    def to_json(self) -> bytes:
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, line: bytes | str) -> Label:
        obj = orjson.loads(line)
        return cls(str(obj["scenario"]), str(obj["entity"]), int(obj["start_ts"]),
                   int(obj["end_ts"]))


def write_labels(path: str | Path, labels: Iterable[Label]) -> int:
    """Write labels as JSONL; returns how many were written."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(path, "wb") as fh:
        for label in labels:
            fh.write(label.to_json() + b"\n")
            count += 1
    return count


def read_labels(path: str | Path) -> list[Label]:
    with open(path, "rb") as fh:
        return [Label.from_json(line) for line in fh if line.strip()]
