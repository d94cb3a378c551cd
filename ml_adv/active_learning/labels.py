"""The label store: labelled set, unlabelled pool and a journal that never loses a label.

Everything a user hands over (data, budget settings, selections, labels) and every model
the loop finishes is one line of ``run_dir/journal.jsonl``, appended with flush + fsync
*before* the call returns and, for labels, before any training starts. Arrays go to
``run_dir/data/*.npy`` (numeric, ``allow_pickle=False``), written to a temporary file,
fsync'd and renamed into place, and the journal line that refers to them is written
after the rename, so a crash leaves at most an unreferenced file. Replaying the journal
rebuilds the labelled set, the pool, the pending selection, the budget and the learning
curve; the model itself is an orbax checkpoint named by the last ``model`` line.

A restarted script that adds the same data again is recognised: the k-th ``add_*`` call
of a new process is compared (SHA-256 of the array bytes) with the k-th journaled one
and skipped when equal, so re-running the same script continues the loop. Different
data raises ``DataError``: a run directory holds one experiment.

A process killed while writing a journal line leaves a torn last line; it belonged to a
call that never returned, and it is cut off when the journal is opened.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from ml_adv.errors import CheckpointError, DataError, NotFittedError, describe

JOURNAL = "journal.jsonl"


def _fsync_dir(path: Path) -> None:
    # The rename/creation of a file is durable only once its directory entry is.
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def array_digest(*arrays: np.ndarray) -> str:
    """SHA-256 over the dtype, shape and bytes of ``arrays``."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()


class Journal:
    """Append-only, fsync'd JSONL file plus atomically written ``.npy`` arrays."""

    def __init__(self, run_dir: str | os.PathLike):
        self.root = Path(run_dir)
        (self.root / "data").mkdir(parents=True, exist_ok=True)
        self.path = self.root / JOURNAL
        self.records = self._read_and_repair()

    def _read_and_repair(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        raw = self.path.read_bytes()
        lines = raw.split(b"\n")
        good_bytes, records = 0, []
        for i, line in enumerate(lines):
            complete = i < len(lines) - 1  # the text after the last newline is unfinished
            if not line:
                good_bytes += len(line) + complete
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                if complete:
                    raise CheckpointError(
                        f"run_dir: {self.path} line {i + 1} is not valid JSON; the journal is "
                        "damaged"
                    ) from None
                break
            if not complete:
                break  # a whole JSON object without its newline: the write was cut short
            records.append(record)
            good_bytes += len(line) + 1
        if good_bytes < len(raw):
            with open(self.path, "r+b") as fh:
                fh.truncate(good_bytes)
                fh.flush()
                os.fsync(fh.fileno())
        return records

    def append(self, record: dict[str, Any]) -> None:
        """Write one record and fsync it before returning."""
        line = json.dumps(record, separators=(",", ":")) + "\n"
        new = not self.path.exists()
        with open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())
        if new:
            _fsync_dir(self.root)
        self.records.append(record)

    def save_array(self, name: str, array: np.ndarray) -> str:
        """Write ``data/<name>.npy`` atomically and durably; returns its path relative to
        the run directory.
        """
        rel = f"data/{name}.npy"
        final = self.root / rel
        tmp = final.with_suffix(".npy.tmp")
        with open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(array), allow_pickle=False)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        return rel

    def load_array(self, rel: str) -> np.ndarray:
        try:
            return np.load(self.root / rel, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"run_dir: cannot read {rel} referenced by the journal: {exc}"
            ) from exc


class LabelStore:
    """Labelled set, pool, pending selection and curve; journaled when ``run_dir`` is given.

    Pool indices are positions in the concatenation of every ``add_unlabeled`` call.
    """

    def __init__(self, run_dir: str | os.PathLike | None = None):
        self.journal = Journal(run_dir) if run_dir is not None else None
        self._labelled_x: list[np.ndarray] = []
        self._labelled_y: list[np.ndarray] = []
        self._pool_parts: list[np.ndarray] = []
        self._pool_cache: np.ndarray | None = None
        self._train_x: np.ndarray | None = None  # training_pool's x, rebuilt after an add
        self.pool_labels = np.zeros((0,), np.int32)  # -1: not labelled yet
        self.label_order: list[int] = []  # pool indices in the order they were labelled
        self.pending: np.ndarray | None = None
        self.pending_strategy: str | None = None
        self.rounds = 0  # label events recorded
        self.version = 0  # add_labeled + label events: what a model saw
        self.curve: list[dict[str, Any]] = []  # one entry per finished model
        self.settings: dict[str, Any] = {}  # latest value of each journaled setting
        self.model_path: str | None = None
        self._adds: list[dict[str, Any]] = []  # journaled add events, in order
        self._add_calls = 0  # add_* calls made by this process
        self.last_strategy: str | None = None  # strategy that chose the latest labels
        self._restored = bool(self.journal and self.journal.records)
        if self.journal is not None:
            for record in self.journal.records:
                self._apply(record, replay=True)

    # ------------------------------------------------------------------ views
    @property
    def restored(self) -> bool:
        """Whether the store was rebuilt from an existing journal."""
        return self._restored

    @property
    def next_add_is_replay(self) -> bool:
        """Whether the next ``add_*`` call will be matched against a journaled one (a restart)."""
        return self._add_calls < len(self._adds)

    @property
    def pool_x(self) -> np.ndarray:
        if self._pool_cache is None:
            if not self._pool_parts:
                raise NotFittedError("pool: no unlabelled data yet; call add_unlabeled_data first")
            self._pool_cache = (
                np.concatenate(self._pool_parts)
                if len(self._pool_parts) > 1
                else self._pool_parts[0]
            )
        return self._pool_cache

    @property
    def example_shape(self) -> tuple[int, ...] | None:
        """Shape of one example of the data added so far (None before any)."""
        parts = self._pool_parts + self._labelled_x
        return tuple(parts[0].shape[1:]) if parts else None

    @property
    def pool_size(self) -> int:
        return int(self.pool_labels.shape[0])

    @property
    def available(self) -> np.ndarray:
        """``[N]`` bool: pool rows that are neither labelled nor awaiting labels."""
        mask = self.pool_labels < 0
        if self.pending is not None:
            mask = mask.copy()
            mask[self.pending] = False
        return mask

    @property
    def num_labelled(self) -> int:
        return sum(len(y) for y in self._labelled_y) + len(self.label_order)

    def labelled(self) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of every label: the initial labelled data, then pool labels in
        recording order.
        """
        xs, ys = list(self._labelled_x), list(self._labelled_y)
        if self.label_order:
            order = np.asarray(self.label_order, np.int64)
            xs.append(self.pool_x[order])
            ys.append(self.pool_labels[order])
        if not xs:
            raise NotFittedError("labelled data: none yet; call add_labeled_data first")
        return np.concatenate(xs), np.concatenate(ys).astype(np.int32)

    def training_pool(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(x, y, mask)`` over a fixed-capacity pool: initial labelled rows, then every pool row.

        Rows without a label get the placeholder class 0 and ``mask`` False, so the arrays
        keep their shape while labels arrive (only ``add_*`` calls change it).
        """
        if self._train_x is None:
            parts = list(self._labelled_x) + ([self.pool_x] if self._pool_parts else [])
            if not parts:
                raise NotFittedError("labelled data: none yet; call add_labeled_data first")
            self._train_x = np.concatenate(parts) if len(parts) > 1 else parts[0]
        initial = [np.asarray(y, np.int32) for y in self._labelled_y]
        y = np.concatenate([*initial, np.maximum(self.pool_labels, 0)]).astype(np.int32)
        mask = np.concatenate([np.ones(sum(len(v) for v in initial), bool), self.pool_labels >= 0])
        if not mask.any():
            raise NotFittedError("labelled data: none yet; call add_labeled_data first")
        return self._train_x, y, mask

    def initial_labelled(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self._labelled_x:
            return None
        return np.concatenate(self._labelled_x), np.concatenate(self._labelled_y).astype(np.int32)

    # ---------------------------------------------------------------- events
    def add_labeled(self, x: np.ndarray, y: np.ndarray) -> bool:
        """Add labelled data; False when a restarted process re-adds journaled data (a no-op)."""
        return self._add("add_labeled", {"x": x, "y": y})

    def add_unlabeled(self, x: np.ndarray) -> bool:
        """Add pool data; False when a restarted process re-adds journaled data (a no-op)."""
        return self._add("add_unlabeled", {"x": x})

    def _add(self, op: str, arrays: dict[str, np.ndarray]) -> bool:
        digest = array_digest(*arrays.values())
        k = self._add_calls
        if k < len(self._adds):
            seen = self._adds[k]
            if seen["op"] != op or seen["sha256"] != digest:
                raise DataError(
                    f"{op}: the run directory already holds different data at this step "
                    f"({seen['op']} of {seen['n']} samples); use a new run_dir for a new experiment"
                )
            self._add_calls += 1
            return False
        record: dict[str, Any] = {
            "op": op,
            "n": int(len(next(iter(arrays.values())))),
            "sha256": digest,
        }
        if self.journal is not None:
            for key, value in arrays.items():
                record[key] = self.journal.save_array(f"{op}_{k}_{key}", value)
        self._commit(record, arrays)
        self._add_calls += 1
        return True

    def set_setting(
        self, name: str, value: dict[str, Any], arrays: dict[str, np.ndarray] | None = None
    ) -> None:
        """Journal a setting (budget, threshold, adaptive rule) with optional array fields."""
        record = {"op": "setting", "name": name, "value": value, "arrays": {}}
        arrays = arrays or {}
        if self.journal is not None:
            for key, arr in arrays.items():
                record["arrays"][key] = self.journal.save_array(
                    f"setting_{name}_{len(self.journal.records)}_{key}", arr
                )
        self._commit(record, {"setting_arrays": arrays})

    def begin_selection(self, indices: np.ndarray, strategy: str) -> None:
        """Journal a selection: these pool rows now await labels, in this order."""
        record = {
            "op": "select",
            "round": self.rounds,
            "indices": [int(i) for i in indices],
            "strategy": strategy,
        }
        self._commit(record)

    def check_labels(self, labels, num_classes: int | None, indices=None) -> np.ndarray:
        """Validate labels for the pending selection (count, range, order); records nothing."""
        if self.pending is None:
            raise NotFittedError("update_model: no pending selection; call select_samples first")
        if isinstance(labels, dict):
            by_index = {int(k): v for k, v in labels.items()}
            expected = [int(i) for i in self.pending]
            if set(by_index) != set(expected) or len(by_index) != len(labels):
                extra = sorted(set(by_index) - set(expected))[:5]
                raise DataError(
                    "new_labels: expected labels for exactly the selected pool indices "
                    f"{expected[:10]}, "
                    f"got {len(labels)} keys" + (f" including unselected {extra}" if extra else "")
                )
            labels = [by_index[i] for i in expected]
        if indices is not None:
            given = np.asarray(indices, dtype=np.int64).reshape(-1)
            if given.shape != self.pending.shape or not np.array_equal(given, self.pending):
                raise DataError(
                    f"indices: expected the selected pool indices {self.pending[:10].tolist()} in "
                    f"order, got {given[:10].tolist()}"
                )
        arr = np.asarray(labels)
        if arr.ndim != 1 or arr.shape[0] != self.pending.shape[0]:
            raise DataError(
                f"new_labels: expected {self.pending.shape[0]} labels (one per selected sample, in "
                f"order), got {describe(arr)}"
            )
        if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
            arr = arr.astype(np.int64)
        if arr.dtype.kind not in "iu":
            raise DataError(f"new_labels: expected integer class ids, got dtype {arr.dtype}")
        if arr.size and (arr.min() < 0 or (num_classes is not None and arr.max() >= num_classes)):
            raise DataError(
                f"new_labels: expected class ids in [0, {num_classes}), got range "
                f"[{int(arr.min())}, {int(arr.max())}]"
            )
        already = self.pool_labels[self.pending] >= 0
        if already.any():
            raise DataError(
                f"new_labels: pool indices {self.pending[already].tolist()} are already labelled"
            )
        return arr.astype(np.int32)

    def record_labels(self, labels: np.ndarray) -> np.ndarray:
        """Journal (fsync) validated labels for the pending selection; returns their pool
        indices.
        """
        indices = self.pending
        record = {
            "op": "label",
            "round": self.rounds,
            "indices": [int(i) for i in indices],
            "labels": [int(v) for v in labels],
            "strategy": self.pending_strategy,
        }
        self._commit(record)
        return indices

    def record_model(self, entry: dict[str, Any]) -> None:
        """Journal a finished model: its checkpoint path and learning-curve point."""
        self._commit({"op": "model", **entry})

    # ----------------------------------------------------------------- replay
    def _commit(self, record: dict[str, Any], arrays: dict[str, Any] | None = None) -> None:
        if self.journal is not None:
            self.journal.append(record)
        self._apply(record, arrays=arrays)

    def _apply(
        self, record: dict[str, Any], *, replay: bool = False, arrays: dict[str, Any] | None = None
    ) -> None:
        op = record.get("op")
        load = self.journal.load_array if replay else None
        if op in ("add_labeled", "add_unlabeled"):
            self._adds.append(record)
            x = load(record["x"]) if replay else arrays["x"]
            self._train_x = None
            if op == "add_labeled":
                self.version += 1
                self._labelled_x.append(x)
                self._labelled_y.append(load(record["y"]) if replay else arrays["y"])
            else:
                self._pool_parts.append(x)
                self._pool_cache = None
                self.pool_labels = np.concatenate([self.pool_labels, np.full(len(x), -1, np.int32)])
        elif op == "setting":
            value = dict(record["value"])
            if replay:
                value.update({k: load(v) for k, v in record["arrays"].items()})
            else:
                value.update(arrays["setting_arrays"])
            self.settings[record["name"]] = value
        elif op == "select":
            self.pending = np.asarray(record["indices"], np.int64)
            self.pending_strategy = record["strategy"]
        elif op == "label":
            idx = np.asarray(record["indices"], np.int64)
            self.pool_labels[idx] = np.asarray(record["labels"], np.int32)
            self.label_order.extend(int(i) for i in idx)
            self.last_strategy = record.get("strategy")
            self.pending, self.pending_strategy = None, None
            self.rounds += 1
            self.version += 1
        elif op == "model":
            self.curve.append({k: v for k, v in record.items() if k not in ("op", "path")})
            self.model_path = record.get("path")
        else:
            raise CheckpointError(
                f"run_dir: unknown journal record {op!r}; written by a newer ml_adv?"
            )

    @property
    def model_is_current(self) -> bool:
        """Whether the last finished model saw every label recorded so far."""
        return bool(self.curve) and self.curve[-1]["version"] == self.version


def check_same_shape(name: str, x: np.ndarray, example_shape: tuple[int, ...] | None) -> None:
    if example_shape is not None and tuple(x.shape[1:]) != tuple(example_shape):
        raise DataError(
            f"{name}: expected examples of shape {tuple(example_shape)} like the data added "
            f"before, got {describe(x)}"
        )
