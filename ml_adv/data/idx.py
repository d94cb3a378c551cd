"""The IDX file format of MNIST and Fashion-MNIST: read (gzipped or not) and write.

Layout (big-endian): two zero bytes, a type code (``0x08`` = unsigned byte), the number
of dimensions ``d``, ``d`` uint32 sizes, then the data in C order. Images are
``0x00000803, n, rows, cols`` then ``n * rows * cols`` bytes; labels ``0x00000801, n``
then ``n`` bytes.

``read_idx`` returns the uint8 array without a copy beyond decompression (one
``np.frombuffer`` over the file's bytes), which is why a 60,000-image file loads in a
fraction of a second. ``write_idx`` is the inverse, used by tests to build tiny fixtures.
"""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

from ml_adv.errors import DataError

UNSIGNED_BYTE = 0x08


def _open(path: Path):
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if gzipped else open(path, "rb")


def read_idx(path: str | Path, *, ndim: int | None = None) -> np.ndarray:
    """The uint8 array stored in an IDX file (``.gz`` or raw).

    Args:
        path: the file.
        ndim: the number of dimensions expected (3 for images, 1 for labels); checked.

    Raises:
        DataError: the file is not an unsigned-byte IDX file of that rank, or is truncated.
    """
    path = Path(path)
    try:
        with _open(path) as handle:
            raw = handle.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path}: could not read an IDX file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(
            f"{path}: expected an IDX file (magic 0x0000080N), got first bytes {raw[:4].hex()}"
        )
    kind, dims = raw[2], raw[3]
    if kind != UNSIGNED_BYTE:
        raise DataError(
            f"{path}: expected unsigned-byte IDX data (type 0x08), got type 0x{kind:02x}"
        )
    if ndim is not None and dims != ndim:
        raise DataError(f"{path}: expected an IDX file with {ndim} dimensions, got {dims}")
    header = 4 + 4 * dims
    if len(raw) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = struct.unpack(f">{dims}I", raw[4:header])
    count = int(np.prod(shape))
    if len(raw) - header != count:
        raise DataError(
            f"{path}: IDX header says shape {shape} ({count} bytes), the file holds "
            f"{len(raw) - header} bytes of data"
        )
    return np.frombuffer(raw, np.uint8, count=count, offset=header).reshape(shape)


def write_idx(path: str | Path, array: np.ndarray, *, compress: bool | None = None) -> Path:
    """Write a uint8 array as IDX (gzipped when ``compress`` or the name ends in ``.gz``)."""
    path = Path(path)
    array = np.ascontiguousarray(array, dtype=np.uint8)
    header = bytes([0, 0, UNSIGNED_BYTE, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    compress = path.suffix == ".gz" if compress is None else compress
    opener = gzip.open if compress else open
    with opener(path, "wb") as handle:
        handle.write(header + array.tobytes())
    return path
