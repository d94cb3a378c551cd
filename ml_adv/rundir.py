"""``RunDirectory``: the one owner of ``runs/<name>/`` and of what ``--fresh`` may delete.

Every workflow writes its run files through a ``RunDirectory``: ``config.json``,
``metrics.jsonl``, ``report.json``, ``plots/*.png``, ``checkpoints/``, ``model/``
and any other artifact (``path_for``). Each path is recorded in a marker file,
``.ml_adv_run.json``, *before* it is written, so that a run killed mid-write can
still be cleaned.

``RunDirectory.clean(path)`` (what ``ml-adv ... --fresh`` calls) removes exactly the
recorded artifacts, the folders the run directory itself created once they are
empty, and the marker; a file the user put anywhere in the folder, even inside
``plots/`` or ``checkpoints/``, survives. It refuses a folder without the marker
(it was not made by ml_adv) and, like the constructor, refuses the current
directory, the home directory, ``/`` and any of their ancestors: a mistyped
``--run-dir .`` must never be able to wipe a working tree.

Why a marker with an explicit list rather than "delete the folder": the run
directory is a place users also open, annotate and copy files into, and the design
promises that nothing the user supplied is lost by ml_adv.

Whole trees owned by ml_adv (orbax writes files we do not name one by one) are
recorded as *trees*: ``checkpoints/latest`` and ``checkpoints/best`` (the two
``RunCheckpointer`` managers) and ``model/`` (``TrainedModel.save``). ``clean``
removes a tree wholesale; everything beside it stays.

Example:
    >>> rd = RunDirectory("runs/demo")
    >>> _ = rd.write_config({"lr": 1e-3}); _ = rd.append_metrics({"epoch": 1, "loss": 0.5})
    >>> sorted(RunDirectory.clean("runs/demo"))     # removes only what ml_adv wrote
    ['config.json', 'metrics.jsonl']
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any

from ml_adv.errors import ConfigError, describe

MARKER = ".ml_adv_run.json"
FORMAT = "ml_adv.run/1"
# Sub-folders of checkpoint_dir that RunCheckpointer's two orbax managers own outright.
CHECKPOINT_TREES = ("latest", "best")

_LOCK = (
    threading.Lock()
)  # serialises marker updates from several RunDirectory objects in one process


def tqdm_class():
    """tqdm's class for this front end (``tqdm.auto``: widgets in Jupyter, text elsewhere).

    In a Jupyter kernel without ipywidgets, ``tqdm.auto`` falls back to text bars but warns
    ("IProgress not found") at import, once per notebook; the fallback is what we want, so
    the warning is not shown.
    """
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="IProgress not found")
        from tqdm.auto import tqdm
    return tqdm


@contextlib.contextmanager
def _locked(folder: Path):
    """Marker read-modify-write under a thread lock and an advisory lock on the folder itself.

    The folder's own file descriptor is locked (``flock`` works on directories on Linux and
    macOS), so processes sharing a run directory (HPO workers) serialise without a lock file.
    """
    with _LOCK:
        try:
            import fcntl

            fd = os.open(folder, os.O_RDONLY)
        except (
            ImportError,
            OSError,
        ):  # no fcntl (Windows) or no access: the thread lock still holds
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


# ---------------------------------------------------------------- strict JSON
def json_safe(obj: Any) -> Any:
    """``obj`` with NaN/inf -> None, NumPy/JAX scalars and arrays -> Python, paths -> str.

    Strict JSON parsers reject bare ``NaN``; ml_adv writes ``null`` for a missing figure.
    """
    if obj is None or isinstance(obj, (bool, str)):
        return obj
    if isinstance(obj, int):
        return obj
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_safe(v) for v in obj]
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    if hasattr(obj, "tolist") and hasattr(obj, "dtype"):  # numpy / jax scalars and arrays
        return json_safe(obj.tolist())
    if hasattr(obj, "item") and callable(obj.item):
        return json_safe(obj.item())
    return getattr(obj, "__name__", None) or str(obj)


def dumps(obj: Any, **kwargs: Any) -> str:
    """Strict JSON text (``allow_nan=False``) of ``json_safe(obj)``."""
    return json.dumps(json_safe(obj), allow_nan=False, **kwargs)


def _atomic_write(path: Path, text: str) -> None:
    # Write-then-rename: a crash leaves the old file or the new one, never half of either.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


# ---------------------------------------------------------------- guard rails
def _protected(path: Path) -> str | None:
    """Why ``path`` (resolved) must never be a run directory, or None."""
    cwd = Path.cwd().resolve()
    home = Path.home().resolve()
    if path == Path(path.anchor):
        return "the file-system root"
    if path == cwd:
        return "the current directory"
    if path in cwd.parents:
        return "an ancestor of the current directory"
    if path == home:
        return "the home directory"
    if path in home.parents:
        return "an ancestor of the home directory"
    return None


def check_location(path: str | os.PathLike, argument: str = "run_dir") -> Path:
    """``path`` resolved, or ConfigError if it is a protected location or a file (see the module
    docstring)."""
    if isinstance(path, bool) or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ConfigError(
            f"{argument}: expected a folder path such as 'runs/<name>', got {describe(path)}"
        )
    resolved = Path(path).expanduser().resolve()
    why = _protected(resolved)
    if why is not None:
        raise ConfigError(
            f"{argument}: expected a dedicated folder for the run (e.g. runs/<name>), "
            f"got {os.fspath(path)!r}, "
            f"which is {why}"
        )
    if resolved.exists() and not resolved.is_dir():
        raise ConfigError(f"{argument}: expected a folder, got the file {os.fspath(path)!r}")
    return resolved


def _relative(name: str | os.PathLike) -> str:
    """Normalised relative POSIX path of an artifact; refuses absolute paths and '..'."""
    text = os.fspath(name)
    rel = PurePosixPath(text.replace(os.sep, "/"))
    if (
        not text
        or rel.is_absolute()
        or ".." in rel.parts
        or rel.parts in ((), (".",))
        or rel.name == MARKER
    ):
        raise ConfigError(f"name: expected a relative path inside the run directory, got {text!r}")
    return rel.as_posix()


class RunDirectory:
    """A run's folder, with a record of every artifact ml_adv writes there.

    Args:
        path: the folder (created with its parents if missing). An existing folder
            without a marker is adopted: only what is written through this object from
            now on is recorded (and ever removed by ``clean``).

    Raises:
        ConfigError: ``path`` is ``.``, the home directory, ``/`` or an ancestor of
            either, or an existing file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = check_location(path, "run_dir")
        created = [p for p in (self.path, *self.path.parents) if not p.exists()]
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"run_dir: cannot create {os.fspath(path)!r}: {exc}") from exc
        self.marker_path = self.path / MARKER
        with _locked(self.path):
            marker = self._read_marker() or {
                "format": FORMAT,
                "created_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "created_root": self.path in created,
                "files": [],
                "trees": [],
                "dirs": [],
            }
            try:
                self._write_marker(marker)
            except OSError as exc:
                raise ConfigError(f"run_dir: cannot write in {os.fspath(path)!r}: {exc}") from exc

    def __fspath__(self) -> str:
        return str(self.path)

    def __repr__(self) -> str:
        return f"RunDirectory({str(self.path)!r})"

    # ------------------------------------------------------------ marker
    def _read_marker(self) -> dict[str, Any] | None:
        return _load_marker(self.marker_path)

    def _write_marker(self, marker: dict[str, Any]) -> None:
        _atomic_write(self.marker_path, json.dumps(marker, indent=1, allow_nan=False))

    def _record(self, rel: str, kind: str) -> Path:
        """Record ``rel`` as a file or tree (creating and recording its parent folders)."""
        target = self.path / rel
        with _locked(self.path):
            marker = self._read_marker() or {
                "format": FORMAT,
                "created_root": False,
                "files": [],
                "trees": [],
                "dirs": [],
            }
            changed = False
            for parent in reversed(PurePosixPath(rel).parents[:-1]):
                folder = self.path / parent
                if not folder.exists():
                    folder.mkdir()
                    if parent.as_posix() not in marker["dirs"]:
                        marker["dirs"].append(parent.as_posix())
                        changed = True
            if rel not in marker[kind]:
                marker[kind].append(rel)
                changed = True
            if changed or not self.marker_path.exists():
                self._write_marker(marker)
        return target

    def recorded(self) -> dict[str, list[str]]:
        """``{'files': [...], 'trees': [...], 'dirs': [...]}`` recorded so far (relative paths)."""
        marker = self._read_marker() or {}
        return {k: list(marker.get(k, [])) for k in ("files", "trees", "dirs")}

    # ------------------------------------------------------------ paths
    def path_for(self, name: str | os.PathLike) -> Path:
        """Path of an artifact file ``name`` (e.g. ``"trials.jsonl"``), recorded for ``clean``."""
        return self._record(_relative(name), "files")

    def tree_for(self, name: str | os.PathLike) -> Path:
        """Path of a folder ml_adv fills entirely (removed wholesale by ``clean``); not created."""
        return self._record(_relative(name), "trees")

    def plot_path(self, name: str) -> Path:
        """``plots/<name>.png`` (recorded; ``plots/`` is created)."""
        stem = _relative(name)
        return self.path_for(f"plots/{stem if stem.endswith('.png') else stem + '.png'}")

    @property
    def checkpoint_dir(self) -> Path:
        """``checkpoints/`` for ``RunCheckpointer``; its ``latest/`` and ``best/`` trees are
        recorded."""
        for tree in CHECKPOINT_TREES:
            self._record(f"checkpoints/{tree}", "trees")
        return self.path / "checkpoints"

    @property
    def model_dir(self) -> Path:
        """``model/`` for ``TrainedModel.save`` (recorded as a tree; not created)."""
        return self.tree_for("model")

    def remove(self, name: str | os.PathLike) -> bool:
        """Delete one recorded artifact (file or tree) so it can be rewritten; False if absent.

        Raises ConfigError for a path that was not recorded: ml_adv only deletes its own files.
        """
        rel = _relative(name)
        recorded = self.recorded()
        if rel not in recorded["files"] and rel not in recorded["trees"]:
            raise ConfigError(
                f"name: {rel!r} was not written by ml_adv in {self.path}; refusing to delete it"
            )
        return _remove(self.path, rel)

    # ------------------------------------------------------------ writers
    def write_json(self, name: str, obj: Any) -> Path:
        """Write ``obj`` as strict JSON (NaN -> null) to ``name``, atomically."""
        path = self.path_for(name)
        _atomic_write(path, dumps(obj, indent=2) + "\n")
        return path

    def append_jsonl(self, name: str, record: Any) -> Path:
        """Append one strict-JSON line to ``name``."""
        path = self.path_for(name)
        line = dumps(record) + "\n"
        with open(path, "a") as fh:
            fh.write(line)
            fh.flush()
        return path

    def rewrite_jsonl(self, name: str, records: list[Any]) -> Path:
        """Replace ``name`` with one strict-JSON line per record, atomically."""
        path = self.path_for(name)
        _atomic_write(path, "".join(dumps(r) + "\n" for r in records))
        return path

    def read_jsonl(self, name: str) -> list[Any]:
        """The records of a JSON-lines artifact ([] if it does not exist); a torn last line is
        skipped."""
        path = self.path / _relative(name)
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue  # a process killed mid-append leaves a partial last line
        return out

    def write_config(self, config: dict[str, Any]) -> Path:
        return self.write_json("config.json", config)

    def append_metrics(self, record: dict[str, Any]) -> Path:
        return self.append_jsonl("metrics.jsonl", record)

    def rewrite_metrics(self, records: list[dict[str, Any]]) -> Path:
        return self.rewrite_jsonl("metrics.jsonl", records)

    def write_report(self, report: dict[str, Any]) -> Path:
        return self.write_json("report.json", report)

    @classmethod
    def of(cls, folder: RunDirectory | str | os.PathLike) -> RunDirectory:
        """``folder`` as a ``RunDirectory``: the one the caller opened, or the path opened now
        (the one conversion, at a public entry point that takes either)."""
        return folder if isinstance(folder, RunDirectory) else cls(folder)

    # ------------------------------------------------------------ cleaning
    @staticmethod
    def is_run_directory(path: str | os.PathLike) -> bool:
        """Whether ``path`` holds an ml_adv run marker."""
        return _load_marker(Path(path) / MARKER) is not None

    @classmethod
    def clean(cls, path: str | os.PathLike) -> list[str]:
        """Remove what ml_adv recorded in run directory ``path`` (and nested run directories).

        Returns the removed relative paths. A missing ``path`` is a no-op.

        Raises:
            ConfigError: ``path`` has no ml_adv marker, is a protected location
                (``.``, home, ``/`` or an ancestor of them) or is a file.
        """
        root = check_location(path, "run_dir")
        if not root.exists():
            return []
        if not cls.is_run_directory(root):
            raise ConfigError(
                f"run_dir: {os.fspath(path)!r} is not an ml_adv run directory "
                f"(no {MARKER} marker); refusing to delete anything in it. "
                "Choose another run directory or remove it yourself"
            )
        return _clean(root)


def _load_marker(path: Path) -> dict[str, Any] | None:
    try:
        marker = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or marker.get("format") != FORMAT:
        return None
    for key in ("files", "trees", "dirs"):
        if not isinstance(marker.get(key), list):
            marker[key] = []
    return marker


def _inside(root: Path, rel: str) -> bool:
    # A recorded path must stay inside the run directory even through symlinked parents
    # (a hand-edited or hostile marker must not delete anything outside it).
    try:
        _relative(rel)
        return (root / rel).parent.resolve().is_relative_to(root)
    except (ConfigError, OSError, TypeError):
        return False


def _remove(root: Path, rel: str) -> bool:
    target = root / rel
    if not _inside(root, rel):
        return False
    if target.is_symlink() or target.is_file():
        target.unlink()
        return True
    if target.is_dir():
        shutil.rmtree(target)
        return True
    return False


def _clean(root: Path) -> list[str]:
    marker = _load_marker(root / MARKER) or {}
    removed = []
    # Nested run directories (e.g. one per trial or member) first, by their own records.
    for dirpath, dirnames, filenames in os.walk(root):
        here = Path(dirpath)
        if here != root and MARKER in filenames:
            removed += [f"{here.relative_to(root).as_posix()}/{r}" for r in _clean(here)]
            dirnames[:] = []
    for rel in [*marker.get("files", []), *marker.get("trees", [])]:
        if isinstance(rel, str) and _remove(root, rel):
            removed.append(rel)
    # Folders the run directory created, deepest first, only once empty (user files keep them).
    for rel in sorted(
        (d for d in marker.get("dirs", []) if isinstance(d, str)), key=lambda d: -d.count("/")
    ):
        folder = root / rel
        if (
            _inside(root, rel)
            and folder.is_dir()
            and not folder.is_symlink()
            and not any(folder.iterdir())
        ):
            folder.rmdir()
    (root / MARKER).unlink(missing_ok=True)
    if marker.get("created_root") and not any(root.iterdir()):
        root.rmdir()
    return removed


@dataclasses.dataclass(frozen=True)
class Run:
    """How a training run uses its folder: ``fit(run=...)``, ``fit_stacked(run=...)``.

    The entry point (a command, a facade, a user's script) opens the folder once, as a
    ``RunDirectory``, and passes this down; nothing below it joins paths or opens it again.

    Attributes:
        directory: the run's folder, or None (nothing written, nothing resumed).
        resume: go on from the folder's latest checkpoint when it has one.
        overwrite: delete the folder's checkpoints first and start afresh.
        meta: extra entries for ``config.json`` (what the caller records with the run).
        progress: show a progress bar (None: only on a terminal).
        keep: how many of the latest checkpoints to keep.

    Example:
        >>> run = Run.at("runs/demo", progress=False)
        >>> run.directory.path.name
        'demo'
    """

    directory: RunDirectory | None = None
    resume: bool = True
    overwrite: bool = False
    meta: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    progress: bool | None = None
    keep: int = 2

    def __post_init__(self):
        if self.directory is not None and not isinstance(self.directory, RunDirectory):
            raise ConfigError(
                f"directory: expected a RunDirectory or None, got {describe(self.directory)}"
            )
        for name in ("resume", "overwrite"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"{name}: expected True or False, got {describe(getattr(self, name))}"
                )
        if self.progress is not None and not isinstance(self.progress, bool):
            raise ConfigError(
                f"progress: expected True, False or None, got {describe(self.progress)}"
            )
        if not isinstance(self.meta, Mapping):
            raise ConfigError(f"meta: expected a dict, got {describe(self.meta)}")
        if isinstance(self.keep, bool) or not isinstance(self.keep, int) or self.keep < 1:
            raise ConfigError(f"keep: expected a positive integer, got {describe(self.keep)}")

    @classmethod
    def at(cls, path: RunDirectory | str | os.PathLike | None, **options: Any) -> Run:
        """A run in the folder ``path``: a ``RunDirectory`` the caller opened, or a path opened
        now; None: no folder."""
        return cls(None if path is None else RunDirectory.of(path), **options)

    @classmethod
    def of(cls, run: Run | RunDirectory | str | os.PathLike | None) -> Run:
        """What ``fit(run=...)`` accepts, as a ``Run``: None, a folder (path or
        ``RunDirectory``) with the default options, or a ``Run``. The one conversion, at the
        public entry point."""
        if isinstance(run, Run):
            return run
        if run is None or isinstance(run, (str, os.PathLike)):
            return cls.at(run)
        raise ConfigError(
            f"run: expected a Run, a RunDirectory, a folder path or None, got {describe(run)}"
        )

    def nested(self, name: str, **options: Any) -> Run:
        """A run in the sub-folder ``name`` of this one (recorded as a tree, so ``--fresh``
        removes it), or a folder-less run like this one."""
        fields = {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, **options}
        if self.directory is not None:
            fields["directory"] = RunDirectory(self.directory.tree_for(name))
        return Run(**fields)


NO_RUN = Run()  # no folder; a progress bar on a terminal
QUIET = Run(progress=False)  # no folder, no progress bar: a library's inner runs
