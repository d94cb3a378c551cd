"""A user's own data from a file, for the command line: ``ml-adv train --data my.npz``.

* ``.npz``: arrays ``x`` and ``y`` (and optionally ``x_test`` and ``y_test``), as
  ``np.savez("my.npz", x=x, y=y)`` writes them. Arrays are kept as saved: integer
  features stay integers, and the trainer reads them as its architecture's input kind
  (numbers for an MLP, token ids for a Transformer).
* ``.csv``: a header line, then one example per row of numbers; the label is the column
  named by ``label_column`` (default: the last one). Integer-valued columns load as
  int64, so integer tabular data stays integer.

Loading a pickled object array is refused (``allow_pickle=False``): a data file never
runs code.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ml_adv.errors import DataError

SUFFIXES = (".npz", ".csv")


def is_data_file(name: str) -> bool:
    """True when ``name`` names a data file this module reads (by its suffix)."""
    return isinstance(name, str) and Path(name).suffix.lower() in SUFFIXES


def load_arrays(path: str | Path, *, label_column: str | None = None) -> dict[str, np.ndarray]:
    """``{"x", "y"[, "x_test", "y_test"]}`` from a ``.npz`` or ``.csv`` file (module docstring).

    Raises:
        DataError: the file is missing, unreadable or lacks the arrays/column named.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"data: expected a data file, {path} does not exist")
    if path.suffix.lower() == ".npz":
        return _npz(path)
    if path.suffix.lower() == ".csv":
        return _csv(path, label_column)
    raise DataError(f"data: expected a file ending in {list(SUFFIXES)}, got {path}")


def _npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            arrays = {k: archive[k] for k in archive.files}
    except (OSError, ValueError) as exc:
        raise DataError(f"data: could not read {path} as .npz ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"data: expected arrays 'x' and 'y' in {path}, got {sorted(arrays)}")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise DataError(
            f"data: expected both 'x_test' and 'y_test' in {path} or neither, got {sorted(arrays)}"
        )
    return {k: arrays[k] for k in ("x", "y", "x_test", "y_test") if k in arrays}


def _csv(path: Path, label_column: str | None) -> dict[str, np.ndarray]:
    with open(path, encoding="utf-8") as handle:
        header = [h.strip() for h in handle.readline().strip().split(",")]
    if len(header) < 2:
        raise DataError(
            f"data: expected a header line with a label and at least one feature column in {path}, "
            f"got {header}"
        )
    label = label_column if label_column is not None else header[-1]
    if label not in header:
        raise DataError(
            f"label_column: expected one of the columns of {path} {header}, got {label!r}"
        )
    try:
        table = np.loadtxt(path, delimiter=",", skiprows=1, ndmin=2)
    except ValueError as exc:
        raise DataError(f"data: expected numbers in every row of {path} ({exc})") from None
    if table.shape[1] != len(header):
        raise DataError(
            f"data: the header of {path} names {len(header)} columns, "
            f"the rows have {table.shape[1]}"
        )
    if np.all(np.isfinite(table)) and np.all(table == np.round(table)):
        table = table.astype(np.int64)  # integer tabular data stays integer
    j = header.index(label)
    return {"x": np.delete(table, j, axis=1), "y": table[:, j]}
