"""experiments/da_mnist.py: the quick protocol end to end on tiny IDX fixtures, then its summary."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from experiments import da_mnist, da_parts
from experiments.common import load_results
from ml_adv.data import download as D
from ml_adv.data.idx import write_idx
from ml_adv.data.mnist import IDX_DATASETS

N_TRAIN, N_TEST = 80, 40


def _tiny_mnist(folder):
    """Four IDX files of a tiny MNIST: a bright square whose place depends on the label."""
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        images = rng.integers(0, 40, (n, 28, 28), dtype=np.uint8)
        for i, c in enumerate(labels):
            images[i, 4 + 2 * c : 10 + 2 * c, 6:20] = 255
        arrays[f"{split}_images"], arrays[f"{split}_labels"] = images, labels
    folder.mkdir(parents=True)
    for key, remote in IDX_DATASETS["mnist"].files.items():
        write_idx(folder / remote.filename, arrays[key])


@pytest.fixture
def tiny_data(tmp_path, monkeypatch):
    _tiny_mnist(tmp_path / "data" / "mnist")
    monkeypatch.setenv(D.DATA_DIR_ENV, str(tmp_path / "data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path


def test_quick_run_then_summary(tiny_data):
    out = tiny_data / "results"
    assert da_mnist.main(["--quick", "--out", str(out), "--seeds", "0"]) == 0
    files = sorted(p.name for p in (out / da_mnist.EXPERIMENT).glob("*.json"))
    # the diagnosis setting runs only when asked for (four more DANN trainings)
    assert files == [f"{s}-seed0.json" for s in sorted(da_mnist.MAIN_SETTINGS)]
    records = [json.loads((out / da_mnist.EXPERIMENT / f).read_text()) for f in files]
    assert load_results(da_mnist.EXPERIMENT, out) == []  # quick records never mix with real ones
    for r in records:
        assert r["quick"] and r["protocol"]["protocol"] == "quick"
        for m in da_mnist.METHODS[r["setting"]]:
            assert 0.0 <= r["results"][m] <= 1.0, (r["setting"], m)

    figures = tiny_data / "figures"
    body, summary = da_mnist.summarize(records, figures)
    assert set(summary) == {"mnist_to_mnistm", "mnist_to_digits"}
    assert set(summary["mnist_to_mnistm"]) == {"source_only", "dann", "target_only"}
    assert set(summary["mnist_to_digits"]) == {
        "source_only",
        "dann",
        "fine_tuning",
        "transfer",
        "target_only",
    }
    by = {r["setting"]: r["results"] for r in records}
    for setting, methods in summary.items():
        for method, values in methods.items():
            assert values == [by[setting][method]]  # per-seed lists, straight from the records
    assert "0.7666" in body and "Differences from the paper" in body
    png = figures / "da_mnist_accuracy.png"
    assert png.is_file() and (figures / "da_mnist_moons.png").is_file()
    assert "experiments/results/figures/da_mnist_accuracy.png" in body

    # The figures follow the records: another DANN accuracy, another picture.
    before = png.read_bytes()
    changed = copy.deepcopy(records)
    for r in changed:
        if r["setting"] == "mnist_to_mnistm":
            r["results"]["dann"] = (
                1.0 - r["results"]["dann"] if r["results"]["dann"] != 0.5 else 0.9
            )
    _, summary2 = da_mnist.summarize(changed, figures)
    assert png.read_bytes() != before
    assert summary2["mnist_to_mnistm"]["dann"] != summary["mnist_to_mnistm"]["dann"]

    # The diagnosis table, from a made-up record (its four DANN runs are not trained here): a
    # variant as accurate as train-on-target closes the whole gap, one at source-only none.
    mnistm = by["mnist_to_mnistm"]
    variants = list(da_mnist.DANN_VARIANTS)
    accuracy = {v: mnistm["target_only"] for v in variants} | {"batch_32": mnistm["source_only"]}
    diagnosis = {
        "setting": "mnistm_dann_diagnosis",
        "seed": 0,
        "quick": True,
        "protocol": records[0]["protocol"],
        "results": {
            "steps": {v: 7 for v in variants},
            "domain_accuracy_last_epoch": {v: 0.625 for v in variants},
            **accuracy,
        },
    }
    body3, _ = da_mnist.summarize([*records, diagnosis], figures)
    table = body3[body3.index("Why DANN closes less") :]
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "|" in line}
    assert set(variants) <= set(rows) and "main protocol" in rows
    if mnistm["target_only"] > mnistm["source_only"]:
        assert "| 1.00 |" in rows["domain_weight_2"] and "| 0.00 |" in rows["batch_32"]
    assert "0.625" in rows["epochs_10"]


def test_summary_without_records_has_the_shape():
    body, summary = da_mnist.summarize(
        [], __import__("pathlib").Path(__import__("tempfile").mkdtemp())
    )
    assert summary == {
        "mnist_to_mnistm": {"source_only": [], "dann": [], "target_only": []},
        "mnist_to_digits": {
            "source_only": [],
            "dann": [],
            "fine_tuning": [],
            "transfer": [],
            "target_only": [],
        },
    }
    assert "No results yet" in body


def test_digits_in_mnist_frame():
    d = da_parts.digits_as_mnist("test")
    assert d.x.shape[1:] == (28, 28, 3) and d.x.dtype == np.uint8  # RGB like the MNIST-M source
    assert np.array_equal(d.x[..., 0], d.x[..., 2])
    assert d.x[:, :4].max() == 0 and d.x[:, -4:].max() == 0  # MNIST's 4-pixel margin
    assert d.x.max() == 255


def test_photo_sets_and_the_rebuilt_target(tiny_data):
    """The photo-diversity study's backgrounds: 1 photo, and 6 x 4 mirrorings x 6 channel orders
    of the main set, all distinct; its MNIST-M keeps the digits, labels and blend."""
    from ml_adv.data.mnist_m import sample_photos

    main = sample_photos()
    one, many = da_mnist.photo_set("one_photo"), da_mnist.photo_set("photos_x24")
    assert len(one) == 1 and np.array_equal(one[0], main[0])
    assert len(many) == 24 * len(main)
    assert len({p.tobytes() for p in many}) == len(many)  # no transform repeats another
    assert np.array_equal(many[5][..., 0], main[0][..., 2])  # channel order (2, 1, 0)
    assert np.array_equal(many[6], main[0][:, ::-1])  # mirrored left-right
    p = da_mnist.PROTOCOLS["quick"]
    target, target_test = da_mnist.mnistm_with_photos(p, one, seed=0)
    source = da_mnist.mnistm_source("train").subset(np.arange(p.train_examples))
    assert target.x.shape == source.x.shape and len(target_test) == p.test_examples
    assert np.array_equal(target.y, source.y) and set(np.unique(target.domain)) == {1}
    # A black digit pixel leaves the crop as it is; a white one inverts it (|patch - digit|).
    assert target.x.dtype == np.uint8 and not np.array_equal(target.x, source.x)


def test_tf_dann_recipe_data_and_initialisation(tiny_data):
    """tf-dann's recipe (experiments/da_tf_dann.py): binarised digits in both domains, inputs
    centred per colour channel over both training sets, truncated-normal weights and 0.1 biases."""
    from experiments import da_tf_dann as T

    assert T.binarized(np.array([[0, 1, 254]], np.uint8)).tolist() == [[0, 255, 255]]
    source, source_test, target, target_test = T.domains(48, 16)
    assert (len(source), len(source_test), len(target), len(target_test)) == (48, 16, 48, 16)
    raw = (source.x.astype(np.float64) * 255.0, target.x.astype(np.float64) * 255.0)
    mean = np.mean(np.concatenate([r.reshape(-1, 3) for r in raw]), axis=0)
    assert np.allclose(mean, 0.0, atol=1e-3)  # centred on both training sets, per channel
    digit = raw[0][..., 0] - raw[0][..., 0].min()  # the binarised source: two levels only
    assert len(np.unique(np.round(digit))) == 2 and np.array_equal(target.y, source.y)
    spec = da_mnist.cnn(source.example_shape, da_mnist.PROTOCOLS["quick"], padding="SAME")
    params = T.truncated_normal_init(spec, seed=0)
    kernel = np.asarray(params["encoder"]["conv_1"]["kernel"])
    assert np.all(np.abs(kernel) <= 2 * T.INIT_STD) and 0.07 < kernel.std() < 0.1
    assert np.all(np.asarray(params["head"]["out"]["bias"]) == T.INIT_BIAS)


def test_tf_dann_table_sets_ours_beside_tf_dann_and_the_paper():
    from experiments import da_tf_dann as T

    results = {"source_only": 0.5, "dann": 0.7, "target_only": 0.9, "steps": {"dann": 8590}}
    record = {"seed": 0, "results": {**results, "dann_last_epoch": {"train_domain_accuracy": 0.6}}}
    table = T.table([record])
    rows = {line.split(" | ")[0].strip("| "): line for line in table.splitlines() if "|" in line}
    assert "| 0.50 |" in rows["dann"] and "0.7076" in rows["dann"] and "0.7666" in rows["dann"]
    # tf-dann's own share of the gap, against the paper's train-on-target (0.9596)
    assert "0.41 (notebook) and 0.50 (README)" in table and "0.600" in table
