"""Greedy pruning and diversity-seeking selection (ml_adv.ensembles.pruning)."""

import numpy as np

from ml_adv.ensembles.pruning import greedy_diverse_selection, greedy_prune, leave_one_out_nll


def _members(n=60, seed=0):
    """A: right on 80% of examples, C: right on a different 80%, A2 = A, B: confidently wrong."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 3, n)

    def member(right):
        pred = np.where(right, labels, (labels + 1) % 3)
        return np.full((n, 3), 0.1, np.float32) + 0.7 * np.eye(3, dtype=np.float32)[pred]

    a_right = np.arange(n) % 5 != 0
    c_right = np.arange(n) % 5 != 1
    a, c = member(a_right), member(c_right)
    b = member(np.zeros(n, bool))
    return labels, {"A": a, "A2": a.copy(), "B": b, "C": c}


def test_greedy_prune_rule():
    labels, m = _members()
    probs = np.stack([m["A"], m["A2"], m["B"], m["C"]])
    w = np.ones(4, np.float32)
    loo = np.asarray(leave_one_out_nll(probs, w, labels, np.ones(4, bool)))
    assert np.argmin(loo) == 2  # dropping B helps most
    kept, trace = greedy_prune(probs, w, labels, threshold=0.0)
    # Step 1 removes B. Without B, dropping A2 or C changes NLL; neither improves it, so pruning
    # stops.
    assert [t["member"] for t in trace][0] == 2
    assert not kept[2] and kept.sum() >= 2
    assert all(t["nll_after"] <= t["nll_before"] for t in trace)
    # A huge threshold removes down to one member; min_members is respected.
    kept, trace = greedy_prune(probs, w, labels, threshold=100.0)
    assert kept.sum() == 1 and len(trace) == 3
    kept, _ = greedy_prune(probs, w, labels, threshold=100.0, min_members=3)
    assert kept.sum() == 3


def test_greedy_prune_removes_a_member_that_changes_nothing():
    labels, m = _members()
    probs = np.stack([m["A"], m["A2"]])
    kept, trace = greedy_prune(probs, np.ones(2, np.float32), labels, threshold=0.0)
    assert kept.sum() == 1 and trace[0]["nll_after"] == trace[0]["nll_before"]


def test_diverse_selection_skips_duplicates_and_bad_members():
    labels, m = _members()
    probs = np.stack([m["A"], m["A2"], m["B"], m["C"]])
    selected, trace = greedy_diverse_selection(
        probs, np.ones(4, np.float32), labels, diversity_weight=0.1
    )
    # A (or its copy) first, then C, which errs elsewhere; never the duplicate, never B.
    assert selected.tolist() in ([True, False, False, True], [False, True, False, True])
    assert [t["member"] for t in trace][-1] == 3
    assert trace[1]["score"] > trace[0]["score"]
    selected, _ = greedy_diverse_selection(
        probs, np.ones(4, np.float32), labels, diversity_weight=0.1, max_members=1
    )
    assert selected.sum() == 1
