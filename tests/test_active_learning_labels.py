"""The label store's journal: durable appends, replay, torn tails, idempotent re-adds, label
checks."""

import json
import os

import numpy as np
import pytest

from ml_adv.active_learning.labels import JOURNAL, LabelStore
from ml_adv.errors import CheckpointError, DataError, NotFittedError

X0 = np.arange(12, dtype=np.float32).reshape(6, 2)
Y0 = np.array([0, 1, 2, 0, 1, 2])
POOL = np.arange(40, dtype=np.float32).reshape(20, 2) + 100


def filled(run_dir):
    store = LabelStore(run_dir)
    store.add_labeled(X0, Y0)
    store.add_unlabeled(POOL)
    return store


def test_replay_restores_labels_pool_pending_and_settings(tmp_path):
    store = filled(tmp_path)
    store.set_setting(
        "budget", {"enabled": True, "total": 9.0, "trim": False}, {"costs": np.arange(20.0)}
    )
    store.begin_selection(np.array([5, 2, 7]), "entropy")
    labels = store.check_labels([1, 0, 2], num_classes=3)
    store.record_labels(labels)
    store.begin_selection(np.array([11, 3]), "entropy")  # pending at the "crash"

    again = LabelStore(tmp_path)
    assert again.restored and again.rounds == 1 and again.version == 2
    x, y = again.labelled()
    np.testing.assert_array_equal(x, np.concatenate([X0, POOL[[5, 2, 7]]]))
    np.testing.assert_array_equal(y, np.concatenate([Y0, [1, 0, 2]]))
    np.testing.assert_array_equal(again.pending, [11, 3])
    assert again.available.sum() == 20 - 3 - 2
    np.testing.assert_array_equal(again.settings["budget"]["costs"], np.arange(20.0))
    assert again.last_strategy == "entropy"


def test_labels_are_fsynced_before_record_returns(tmp_path, monkeypatch):
    store = filled(tmp_path)
    store.begin_selection(np.array([4]), "random")
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(
        os, "fsync", lambda fd: (synced.append(os.readlink(f"/proc/self/fd/{fd}")), real_fsync(fd))
    )
    store.record_labels(store.check_labels([2], 3))
    assert any(path.endswith(JOURNAL) for path in synced)
    last = json.loads((tmp_path / JOURNAL).read_text().splitlines()[-1])
    assert last["op"] == "label" and last["indices"] == [4] and last["labels"] == [2]


def test_torn_last_line_is_cut_and_journal_continues(tmp_path):
    store = filled(tmp_path)
    store.begin_selection(np.array([1, 2]), "random")
    with open(tmp_path / JOURNAL, "a") as fh:
        fh.write('{"op":"label","round":0,"indices":[1,2],"lab')  # killed mid-write
    again = LabelStore(tmp_path)
    assert again.rounds == 0 and again.pending.tolist() == [1, 2]
    again.record_labels(again.check_labels([0, 1], 3))
    third = LabelStore(tmp_path)
    assert third.rounds == 1 and third.pool_labels[[1, 2]].tolist() == [0, 1]


def test_damaged_middle_line_is_an_error(tmp_path):
    filled(tmp_path)
    lines = (tmp_path / JOURNAL).read_text().splitlines()
    (tmp_path / JOURNAL).write_text("\n".join([lines[0], "{not json", *lines[1:]]) + "\n")
    with pytest.raises(CheckpointError, match="damaged"):
        LabelStore(tmp_path)


def test_readding_the_same_data_after_restart_is_a_noop(tmp_path):
    filled(tmp_path)
    again = LabelStore(tmp_path)
    assert again.add_labeled(X0, Y0) is False and again.add_unlabeled(POOL) is False
    assert again.num_labelled == 6 and again.pool_size == 20
    assert again.add_unlabeled(POOL[:3]) is True and again.pool_size == 23
    with pytest.raises(DataError, match="different data"):
        LabelStore(tmp_path).add_labeled(X0, Y0 + 1)


def test_bad_labels_are_rejected_and_nothing_is_recorded(tmp_path):
    store = filled(tmp_path)
    with pytest.raises(NotFittedError, match="select_samples"):
        store.check_labels([0], 3)
    store.begin_selection(np.array([3, 9]), "random")
    size = (tmp_path / JOURNAL).stat().st_size
    with pytest.raises(DataError, match="expected 2 labels"):
        store.check_labels([0], 3)
    with pytest.raises(DataError, match=r"class ids in \[0, 3\)"):
        store.check_labels([0, 3], 3)
    with pytest.raises(DataError, match="class ids"):
        store.check_labels([0, -1], 3)
    with pytest.raises(DataError, match="integer"):
        store.check_labels([0.5, 1], 3)
    with pytest.raises(DataError, match="unselected"):
        store.check_labels({3: 0, 10: 1}, 3)
    with pytest.raises(DataError, match="indices"):
        store.check_labels([0, 1], 3, indices=[9, 3])
    assert (tmp_path / JOURNAL).stat().st_size == size and store.rounds == 0
    # A mapping in any order is put back into selection order.
    assert store.check_labels({9: 2, 3: 1}, 3).tolist() == [1, 2]


def test_already_labelled_rows_are_rejected(tmp_path):
    store = filled(tmp_path)
    store.begin_selection(np.array([0]), "random")
    store.record_labels(store.check_labels([1], 3))
    store.begin_selection(np.array([0]), "random")  # a forged re-selection of a labelled row
    with pytest.raises(DataError, match="already labelled"):
        store.check_labels([1], 3)


def test_in_memory_store_needs_no_run_dir():
    store = LabelStore(None)
    store.add_labeled(X0, Y0)
    store.add_unlabeled(POOL)
    store.begin_selection(np.array([0]), "random")
    store.record_labels(store.check_labels([2], 3))
    assert store.num_labelled == 7 and not store.restored


def test_training_pool_keeps_its_shape_while_labels_arrive(tmp_path):
    store = filled(tmp_path)
    x, y, mask = store.training_pool()
    assert x.shape == (26, 2) and mask.tolist() == [True] * 6 + [False] * 20
    np.testing.assert_array_equal(y[:6], Y0)
    store.begin_selection(np.array([3, 0]), "random")
    store.record_labels(store.check_labels([2, 1], 3))
    x2, y2, mask2 = store.training_pool()
    assert x2 is x and mask2.sum() == 8 and mask2[6 + 3] and mask2[6 + 0]
    assert y2[6 + 3] == 2 and y2[6 + 0] == 1
