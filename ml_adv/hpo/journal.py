"""The trial journal: an append-only ``trials.jsonl`` that makes a study resumable.

Line 1 is the study header (method, space, seed, budget, objective); every other line
is one finished trial, appended with ``flush`` + ``os.fsync`` before the next trial
starts, so a study killed at any moment (even SIGKILL) loses at most the trial that
was running. A line cut short by a kill mid-write is ignored on reading (and cut off
before the next append), never misread.

Strict JSON only (NaN is written as null), never pickle: a journal is data a user can
read, grep and plot.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from ml_adv.errors import CheckpointError, ConfigError
from ml_adv.rundir import dumps

HEADER_TYPE = "study"
TRIAL_TYPE = "trial"
# Header fields that must match for a journal to be resumed by the same study.
RESUME_KEYS = (
    "method",
    "space",
    "seed",
    "max_trials",
    "batch_size",
    "objective",
    "method_options",
    "stacked",
)


class TrialJournal:
    """Append-only JSON-lines store of a study's header and finished trials."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def exists(self) -> bool:
        return self.path.exists() and self.path.stat().st_size > 0

    def read(self) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        """``(header, trials)``; a truncated last line (a kill mid-write) is dropped."""
        if not self.exists():
            return None, []
        records = self._records()
        if not records or records[0].get("type") != HEADER_TYPE:
            raise CheckpointError(f"trials journal {self.path}: expected a study header on line 1")
        return records[0], [r for r in records[1:] if r.get("type") == TRIAL_TYPE]

    def _records(self) -> list[dict[str, Any]]:
        lines = self.path.read_bytes().split(b"\n")
        records = []
        for i, line in enumerate(lines):
            if not line.strip():
                continue
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError as exc:
                if i == len(lines) - 1:  # only the unterminated last line may be partial
                    break
                raise CheckpointError(
                    f"trials journal {self.path}: line {i + 1} is not valid JSON ({exc})"
                ) from exc
        return records

    def start(self, header: dict[str, Any]) -> list[dict[str, Any]]:
        """Open the journal for ``header``; return the trials already finished (resume).

        Raises ConfigError when the journal belongs to a different study.
        """
        old, trials = self.read()
        if old is None:
            self._write_bytes(_line({"type": HEADER_TYPE, **header}), mode="wb")
            return []
        for key in RESUME_KEYS:
            if _normal(old.get(key)) != _normal(header.get(key)):
                raise ConfigError(
                    f"run_dir: {self.path} holds a different study ({key} was {old.get(key)!r}, "
                    f"got {header.get(key)!r}); use another run directory or start fresh"
                )
        self._drop_partial_tail()
        return trials

    def append(self, trial: dict[str, Any]) -> None:
        """Append one finished trial durably (flush + fsync) before returning."""
        self.append_record(TRIAL_TYPE, trial)

    def append_record(self, kind: str, record: dict[str, Any]) -> None:
        """Append a record of another ``kind`` (e.g. a finished population rung), durably."""
        self._write_bytes(_line({"type": kind, **record}), mode="ab")

    def read_records(self, kind: str) -> list[dict[str, Any]]:
        """Every record of ``kind``, in the order written (a torn last line is dropped)."""
        if not self.exists():
            return []
        return [r for r in self._records() if r.get("type") == kind]

    def _write_bytes(self, data: bytes, *, mode: str) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, mode) as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())

    def _drop_partial_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)
                fh.flush()
                os.fsync(fh.fileno())


def _line(record: dict[str, Any]) -> bytes:
    return (dumps(record) + "\n").encode()


def _normal(value: Any) -> Any:
    """Strict-JSON round trip, so tuples and lists compare equal."""
    return json.loads(dumps(value))
