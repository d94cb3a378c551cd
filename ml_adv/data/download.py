"""Fetch a named file once: local folders first, then checksummed, atomic downloads.

``locate_or_download`` answers "where is ``train-images-idx3-ubyte.gz`` of MNIST?" in a
fixed order, the one tfds, torchvision and keras users expect:

1. ``data_dir=`` (the caller's argument; the files sit in ``<data_dir>/<name>/``);
2. ``$ML_ADV_DATA_DIR/<name>/``;
3. the user cache, ``$XDG_CACHE_HOME/ml_adv/datasets/<name>/`` (``~/.cache/...``).

A file found in any of them is used as it is: a user's own copy may be re-compressed
(ours are), so local files are checked for their structure by the reader, not for the
download's checksum. A missing file is downloaded into the first writable folder of
that list (``data_dir`` if given, else the cache), from each mirror in turn:

* the bytes stream into ``<file>.part-<random>`` in the same folder, with a tqdm bar on
  a terminal; the file gets its final name (``os.replace``, atomic on one file system)
  only after its size and sha256 match the published figures;
* a 404, a refused connection, a truncated transfer or a checksum mismatch deletes the
  partial file and moves on to the next mirror; when every mirror failed the error says,
  in one line, what happened at each and where the files can be put by hand.

Nothing here is specific to a dataset: ``mnist.py`` holds the file table.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from ml_adv.errors import DataError

DATA_DIR_ENV = "ML_ADV_DATA_DIR"
CHUNK = 1 << 16
TIMEOUT_SECONDS = 60


@dataclasses.dataclass(frozen=True)
class RemoteFile:
    """One file of a dataset as it is published: name, size in bytes and sha256."""

    filename: str
    size: int
    sha256: str


def cache_root() -> Path:
    """``$XDG_CACHE_HOME/ml_adv/datasets`` (``~/.cache/ml_adv/datasets`` by default)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "ml_adv" / "datasets"


def search_dirs(name: str, data_dir: str | os.PathLike | None = None) -> list[Path]:
    """The folders searched for dataset ``name``, in order (see the module docstring)."""
    dirs = []
    if data_dir is not None:
        dirs.append(Path(data_dir).expanduser() / name)
    env = os.environ.get(DATA_DIR_ENV)
    if env:
        dirs.append(Path(env).expanduser() / name)
    dirs.append(cache_root() / name)
    return dirs


def find_local(name: str, files: Sequence[RemoteFile], data_dir=None) -> Path | None:
    """The first folder of ``search_dirs`` that holds every one of ``files``, else None."""
    for folder in search_dirs(name, data_dir):
        if all((folder / f.filename).is_file() for f in files):
            return folder
    return None


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _progress(total: int, desc: str, enabled: bool | None):
    from ml_adv.rundir import tqdm_class

    tqdm = tqdm_class()

    # disable=None: quiet when stderr is not a terminal (CI, logs), like the training bars.
    disable = None if enabled is None else not enabled
    return tqdm(total=total, unit="B", unit_scale=True, desc=desc, disable=disable, leave=False)


def download_file(
    url: str, dest: Path, expected: RemoteFile, *, progress: bool | None = None
) -> Path:
    """Download ``url`` to ``dest`` atomically, checking size and sha256; returns ``dest``.

    Raises ``DataError`` (one line: the URL and what went wrong) and leaves nothing at
    ``dest`` or beside it when the transfer fails, is truncated or does not match.
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    handle, part = tempfile.mkstemp(prefix=f"{dest.name}.part-", dir=dest.parent)
    try:
        digest, received = hashlib.sha256(), 0
        with (
            os.fdopen(handle, "wb") as out,
            urllib.request.urlopen(url, timeout=TIMEOUT_SECONDS) as response,
        ):
            with _progress(expected.size, dest.name, progress) as bar:
                for block in iter(lambda: response.read(CHUNK), b""):
                    out.write(block)
                    digest.update(block)
                    received += len(block)
                    bar.update(len(block))
            out.flush()
            os.fsync(out.fileno())
        if received != expected.size:
            raise DataError(
                f"{url}: truncated or wrong size, expected {expected.size} bytes, got {received}"
            )
        if digest.hexdigest() != expected.sha256:
            raise DataError(
                f"{url}: checksum mismatch, expected sha256 {expected.sha256}, "
                f"got {digest.hexdigest()}"
            )
        os.replace(part, dest)
        return dest
    except urllib.error.HTTPError as exc:
        raise DataError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        raise DataError(f"{url}: download failed ({reason})") from None
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(part)


def locate_or_download(
    name: str,
    files: Sequence[RemoteFile],
    mirrors: Sequence[str],
    *,
    data_dir=None,
    download: bool = True,
    progress: bool | None = None,
) -> Path:
    """The folder holding every file of dataset ``name``, downloading what is missing.

    Args:
        name: the dataset's folder name (``"mnist"``).
        files: the files it consists of, with their published size and sha256.
        mirrors: base URLs tried in order; ``mirror + filename`` is each file's URL.
        data_dir: a folder whose ``<name>/`` subfolder is searched first (and downloaded into).
        download: fetch missing files; False raises instead.
        progress: a progress bar per file (default: only on a terminal).

    Raises:
        DataError: one line saying where it looked, what each mirror answered and how to
            provide the files by hand.
    """
    found = find_local(name, files, data_dir)
    if found is not None:
        return found
    looked = ", ".join(str(d) for d in search_dirs(name, data_dir))
    wanted = " ".join(f.filename for f in files)
    how = (
        f"put {wanted} in one of them (set {DATA_DIR_ENV} or pass data_dir=) "
        f"or download them from {mirrors[0] if mirrors else 'the publisher'}"
    )
    if not download:
        raise DataError(
            f"name: dataset {name!r} not found (looked in {looked}); downloading is off; {how}"
        )
    target = search_dirs(name, data_dir)[0] if data_dir is not None else cache_root() / name
    for f in files:
        dest = target / f.filename
        if dest.is_file():
            continue
        failures = []
        for mirror in mirrors:
            try:
                download_file(mirror.rstrip("/") + "/" + f.filename, dest, f, progress=progress)
                break
            except DataError as exc:
                failures.append(str(exc))
        else:
            raise DataError(
                f"name: dataset {name!r} not found locally (looked in {looked}) and every download "
                f"failed: {'; '.join(failures)}; {how}"
            )
    return target
