"""Tests for ml_adv.data.tfds_loader with ``tfds.testing.mock_data`` (this machine has no
internet)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from ml_adv.data import byte_detokenize, byte_tokenize, load_dataset, load_tfds, tfds_loader
from ml_adv.errors import ConfigError, DataError

tfds = pytest.importorskip("tensorflow_datasets")


def test_mnist_images():
    with tfds.testing.mock_data(num_examples=12):
        ds = load_tfds("mnist", split="train")
    assert ds.x.shape == (12, 28, 28, 1) and ds.x.dtype == np.float32
    assert ds.x.min() >= 0.0 and ds.x.max() <= 1.0 and ds.x.max() > 0.5
    assert ds.y.dtype == np.int32 and ds.y.min() >= 0 and ds.y.max() < 10
    assert ds.num_classes == 10  # from the ClassLabel feature, not max(y) + 1
    assert ds.input_kind == "image" and ds.name == "mnist"
    assert ds.info["label_names"] == [str(i) for i in range(10)]
    assert "tensorflow" not in sys.modules


def test_chunked_reads_match_the_source(monkeypatch):
    monkeypatch.setattr(tfds_loader, "READ_CHUNK", 4)
    with tfds.testing.mock_data(num_examples=10):
        ds = load_tfds("mnist", split="test")
        source = tfds.data_source("mnist", split="test")
        expected = [source[i] for i in range(10)]
    np.testing.assert_array_equal(ds.x, np.stack([e["image"] for e in expected]) / np.float32(255))
    np.testing.assert_array_equal(ds.y, [int(e["label"]) for e in expected])


@pytest.mark.parametrize("max_examples, expected", [(5, 5), (12, 12), (50, 12)])
def test_max_examples(max_examples, expected):
    with tfds.testing.mock_data(num_examples=12):
        ds = load_tfds("mnist", max_examples=max_examples)
    assert len(ds) == expected


def test_imdb_text_tokens():
    with tfds.testing.mock_data(num_examples=6):
        ds = load_tfds("imdb_reviews", split="train", max_length=24)
        texts = [tfds.data_source("imdb_reviews", split="train")[i]["text"] for i in range(6)]
    assert ds.x.shape == (6, 24) and ds.x.dtype == np.int32
    assert ds.input_kind == "tokens" and ds.num_classes == 2
    assert ds.y.min() >= 0 and ds.y.max() < 2
    assert np.all(ds.x[:, 0] == 1) and ds.x.min() >= 0 and ds.x.max() < 260
    assert ds.info["vocab_size"] == 260 and ds.info["max_length"] == 24
    assert ds.info["special_tokens"] == {"PAD": 0, "CLS": 1, "SEP": 2, "MASK": 3}
    as_str = [t.decode() if isinstance(t, bytes) else str(t) for t in texts]
    assert byte_detokenize(ds.x) == [t[:23] for t in as_str]
    assert "tensorflow" not in sys.modules


def test_load_dataset_routes_other_names_to_tfds():
    with tfds.testing.mock_data(num_examples=3):
        ds = load_dataset("kmnist", split="test", max_examples=2)
    assert len(ds) == 2 and ds.info["tfds_name"] == "kmnist"


def test_byte_tokenizer_known_string():
    ids = byte_tokenize(["Hi é", b"ab", ""], max_length=8)
    assert ids.dtype == np.int32
    # 'H'=72, 'i'=105, ' '=32, 'é'=0xC3 0xA9 in UTF-8; id = 4 + byte; [CLS]=1 first, [PAD]=0 after
    assert ids.tolist() == [
        [1, 76, 109, 36, 199, 173, 0, 0],
        [1, 101, 102, 0, 0, 0, 0, 0],
        [1, 0, 0, 0, 0, 0, 0, 0],
    ]
    assert byte_tokenize(["abcdef"], max_length=4).tolist() == [[1, 101, 102, 103]]
    assert byte_detokenize(byte_tokenize(["Hi é"], max_length=8)) == ["Hi é"]
    with pytest.raises(ConfigError, match="^max_length:"):
        byte_tokenize(["a"], max_length=0)


def test_dataset_not_prepared_and_download_off_is_a_clear_data_error(tmp_path):
    with pytest.raises(DataError) as info:
        load_tfds("mnist", data_dir=str(tmp_path), download=False)
    message = str(info.value)
    assert "'mnist'" in message and "not prepared" in message and str(tmp_path) in message
    assert "downloading is off" in message and "tfds build mnist" in message
    assert "array_record" in message and "\n" not in message
    assert not any(tmp_path.iterdir())  # nothing was downloaded or written


class _TinyBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """A TFDS dataset that 'downloads' by generating 18 examples: the download path without a
    network."""

    VERSION = tfds.core.Version("1.0.0")
    fail = False

    def _info(self):
        return tfds.core.DatasetInfo(
            builder=self,
            features=tfds.features.FeaturesDict(
                {
                    "image": tfds.features.Tensor(shape=(8, 8, 1), dtype=np.uint8),
                    "label": tfds.features.ClassLabel(num_classes=3),
                }
            ),
        )

    def _split_generators(self, dl_manager):
        if self.fail:
            (dl_manager.download_dir / "half-written.tmp").write_text("partial")
            raise ConnectionError("simulated: Name or service not known")
        return {"train": self._generate_examples(12), "test": self._generate_examples(6)}

    def _generate_examples(self, n):
        rng = np.random.default_rng(n)
        for i in range(n):
            yield i, {"image": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8), "label": i % 3}


class MlAdvTinyImages(_TinyBuilder):
    pass


class MlAdvUnreachableImages(_TinyBuilder):
    fail = True


def test_missing_dataset_is_downloaded_and_prepared_as_array_record(tmp_path):
    ds = load_tfds("ml_adv_tiny_images", split="test", data_dir=str(tmp_path))
    assert len(ds) == 6 and ds.x.shape == (6, 8, 8, 1) and ds.num_classes == 3
    files = [p.name for p in (tmp_path / "ml_adv_tiny_images" / "1.0.0").iterdir()]
    assert any("array_record" in f for f in files)
    assert (
        len(load_tfds("ml_adv_tiny_images", split="train", data_dir=str(tmp_path), download=False))
        == 12
    )


def test_failed_download_leaves_nothing_and_says_so_in_one_line(tmp_path):
    (tmp_path / "mine.txt").write_text("the user's own file")
    with pytest.raises(DataError) as info:
        load_tfds("ml_adv_unreachable_images", data_dir=str(tmp_path))
    message = str(info.value)
    assert "downloading it failed" in message and "Name or service not known" in message
    assert "\n" not in message and "tfds build ml_adv_unreachable_images" in message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.txt"]


def test_unknown_name():
    with pytest.raises(ConfigError, match="^name: unknown dataset 'mnistt'.*'mnist'"):
        load_tfds("mnistt")
    with pytest.raises(ConfigError, match="^name:.*'no_such_dataset'.*'digits'"):
        load_dataset("no_such_dataset")


@pytest.mark.parametrize(
    "kwargs, argument",
    [
        (dict(label_key="digit"), "label_key"),
        (dict(image_key="img", text_key="txt"), "image_key/text_key"),
        (dict(max_examples=0), "max_examples"),
        (dict(max_length=-3), "max_length"),
        (dict(split=""), "split"),
    ],
)
def test_bad_arguments(kwargs, argument):
    with tfds.testing.mock_data(num_examples=3):
        with pytest.raises(ConfigError, match=f"^{argument}:"):
            load_tfds("mnist", **kwargs)


def test_importing_ml_adv_does_not_import_tfds_or_tensorflow():
    code = (
        "import sys, ml_adv, ml_adv.data; "
        "bad = [m for m in ('tensorflow_datasets', 'tensorflow') if m in sys.modules]; "
        "sys.exit(str(bad) if bad else 0)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
