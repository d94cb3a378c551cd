"""MNIST / Fashion-MNIST by name: the IDX reader, the five views, where files are looked for,
and the downloader against a real HTTP server on localhost (tiny IDX fixtures, no network)."""

from __future__ import annotations

import hashlib
import http.server
import os
import threading
from pathlib import Path

import numpy as np
import pytest

from ml_adv.data import download as D
from ml_adv.data import load_dataset
from ml_adv.data.idx import read_idx, write_idx
from ml_adv.data.mnist import IDX_DATASETS, load_mnist, to_patches
from ml_adv.errors import DataError

N_TRAIN, N_TEST = 24, 12


def _fixture_files(folder: Path, seed: int = 0) -> dict[str, np.ndarray]:
    """Write the four IDX files of a tiny MNIST into ``folder``; return the arrays."""
    rng = np.random.default_rng(seed)
    arrays = {
        "train_images": rng.integers(0, 256, (N_TRAIN, 28, 28), dtype=np.uint8),
        "train_labels": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "test_images": rng.integers(0, 256, (N_TEST, 28, 28), dtype=np.uint8),
        "test_labels": (np.arange(N_TEST) % 10).astype(np.uint8),
    }
    folder.mkdir(parents=True, exist_ok=True)
    for key, remote in IDX_DATASETS["mnist"].files.items():
        write_idx(folder / remote.filename, arrays[key])
    return arrays


@pytest.fixture
def isolated(tmp_path, monkeypatch):
    """No ML_ADV_DATA_DIR, and the user cache inside tmp_path."""
    monkeypatch.delenv(D.DATA_DIR_ENV, raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_idx_round_trip_and_errors(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for name in ("a.idx", "a.idx.gz"):
        assert np.array_equal(read_idx(write_idx(tmp_path / name, a), ndim=3), a)
    with pytest.raises(DataError, match="3 dimensions, got 1"):
        read_idx(write_idx(tmp_path / "l.gz", np.zeros(3, np.uint8)), ndim=3)
    cut = tmp_path / "cut.idx"
    cut.write_bytes((tmp_path / "a.idx").read_bytes()[:-5])
    with pytest.raises(DataError, match="holds 19 bytes"):
        read_idx(cut)
    (tmp_path / "junk").write_bytes(b"hello world")
    with pytest.raises(DataError, match="expected an IDX file"):
        read_idx(tmp_path / "junk")


def test_views_from_data_dir(isolated):
    arrays = _fixture_files(isolated / "data" / "mnist")
    kw = {"data_dir": isolated / "data", "download": False}
    image = load_mnist("mnist", split="train", **kw)
    assert image.x.dtype == np.uint8 and image.x.shape == (N_TRAIN, 28, 28, 1)  # uint8 on the host
    assert np.array_equal(image.x[..., 0], arrays["train_images"]) and image.num_classes == 10
    flat = load_mnist("mnist", view="flat", split="test", **kw)
    assert flat.x.shape == (N_TEST, 784) and flat.input_kind == "features"
    seq = load_mnist("mnist", view="sequence", **kw)
    assert seq.x.shape == (N_TRAIN, 28, 28) and seq.input_kind == "sequence"
    patches = load_mnist("mnist", view="patches", **kw)
    assert patches.x.shape == (N_TRAIN, 49, 16)
    # patch 8 is row 1, column 1 of the 7x7 grid: pixels [4:8, 4:8]
    assert np.array_equal(patches.x[3, 8], arrays["train_images"][3, 4:8, 4:8].ravel())
    tokens = load_mnist("mnist", view="tokens", **kw)
    assert tokens.x.shape == (N_TRAIN, 50) and tokens.x[:, 0].tolist() == [1] * N_TRAIN
    assert tokens.x[:, 1:].min() >= 4 and tokens.x.max() < tokens.info["vocab_size"] == 260
    both = load_mnist("mnist", split="all", **kw)
    assert (
        len(both) == N_TRAIN + N_TEST
        and both.y[N_TRAIN:].tolist() == arrays["test_labels"].tolist()
    )
    assert len(load_mnist("mnist", max_examples=5, **kw)) == 5
    # by name, with the same views
    assert load_dataset("mnist_sequence", split="test", **kw).x.shape == (N_TEST, 28, 28)
    with pytest.raises(Exception, match="accepts"):
        load_dataset("mnist", seed=3, **kw)


def test_search_order_and_offline_message(isolated, monkeypatch):
    _fixture_files(isolated / "env" / "mnist", seed=1)
    _fixture_files(isolated / "arg" / "mnist", seed=2)
    monkeypatch.setenv(D.DATA_DIR_ENV, str(isolated / "env"))
    from_env = load_mnist("mnist", download=False)
    from_arg = load_mnist("mnist", data_dir=isolated / "arg", download=False)
    assert from_env.info["source"].startswith(str(isolated / "env"))
    assert from_arg.info["source"].startswith(str(isolated / "arg"))
    monkeypatch.delenv(D.DATA_DIR_ENV)
    with pytest.raises(DataError) as info:
        load_mnist("mnist", download=False)
    message = str(info.value)
    assert (
        "\n" not in message
        and str(D.cache_root() / "mnist") in message
        and "ML_ADV_DATA_DIR" in message
    )


class _Server:
    """``http.server`` in a thread, serving ``files`` ({path: bytes}); ``truncate`` cuts one
    short."""

    def __init__(self, files: dict[str, bytes]):
        self.files, self.requests, self.truncate = files, [], set()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                outer.requests.append(self.path)
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: len(body) // 2] if self.path in outer.truncate else body)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/mnist/"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(isolated, monkeypatch):
    """A localhost mirror of a tiny MNIST whose checksums the loader is told."""
    source = isolated / "source"
    _fixture_files(source)
    files, table = {}, {}
    for key, remote in IDX_DATASETS["mnist"].files.items():
        body = (source / remote.filename).read_bytes()
        files[f"/mnist/{remote.filename}"] = body
        table[key] = D.RemoteFile(remote.filename, len(body), hashlib.sha256(body).hexdigest())
    server = _Server(files)
    entry = IDX_DATASETS["mnist"]
    patched = type(entry)(entry.name, (server.url,), table, entry.label_names, entry.licence)
    monkeypatch.setitem(IDX_DATASETS, "mnist", patched)
    yield server, patched
    server.close()


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob("*") if ".part" in p.name) if folder.exists() else []


def test_download_success_then_nothing_more(served, isolated):
    server, entry = served
    ds = load_mnist("mnist", split="test")
    assert len(ds) == N_TEST and len(server.requests) == 4
    target = D.cache_root() / "mnist"
    assert sorted(os.listdir(target)) == sorted(f.filename for f in entry.files.values())
    load_mnist("mnist", split="train")
    assert len(server.requests) == 4  # the second call downloads nothing


def test_wrong_checksum_leaves_nothing(served, isolated, monkeypatch):
    server, entry = served
    bad = dict(entry.files)
    bad["train_labels"] = D.RemoteFile(
        bad["train_labels"].filename, bad["train_labels"].size, "0" * 64
    )
    monkeypatch.setitem(
        IDX_DATASETS, "mnist", type(entry)("mnist", entry.mirrors, bad, entry.label_names, "")
    )
    with pytest.raises(DataError, match="checksum mismatch") as info:
        load_mnist("mnist")
    assert "\n" not in str(info.value)
    target = D.cache_root() / "mnist"
    assert bad["train_labels"].filename not in os.listdir(target) and _leftovers(target) == []


def test_truncated_transfer_and_404_leave_nothing(served, isolated):
    server, entry = served
    name = entry.files["test_images"].filename
    server.truncate.add(f"/mnist/{name}")
    with pytest.raises(DataError, match="download failed|truncated"):
        load_mnist("mnist")
    target = D.cache_root() / "mnist"
    assert name not in os.listdir(target) and _leftovers(target) == []
    del server.files[f"/mnist/{name}"]
    with pytest.raises(DataError, match="HTTP 404"):
        load_mnist("mnist")
    assert name not in os.listdir(target) and _leftovers(target) == []


@pytest.mark.slow
@pytest.mark.skipif(
    not (Path(__file__).parents[2] / "shared" / "data" / "mnist").is_dir(),
    reason="the real MNIST files are not on this machine",
)
def test_real_mnist_files(monkeypatch):
    monkeypatch.setenv(D.DATA_DIR_ENV, str(Path(__file__).parents[2] / "shared" / "data"))
    train, test = load_dataset("mnist", split="train"), load_dataset("mnist", split="test")
    assert (len(train), len(test)) == (60000, 10000) and train.x.nbytes == 47_040_000
    assert train.y[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    assert np.bincount(test.y).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert abs(float(train.x.mean()) - 33.318) < 1e-3
    assert to_patches(train.x[:2, ..., 0]).shape == (2, 49, 16)
