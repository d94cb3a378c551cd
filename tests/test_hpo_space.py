"""Search spaces: validation, grids, nevergrad conversion, JSON declarations."""

import numpy as np
import pytest

from ml_adv.errors import ConfigError
from ml_adv.hpo.methods import make_searcher
from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: Float("lr", 1e-2, 1e-3), "low < high"),
        (lambda: Float("lr", 1e-3, 1e-3), "low < high"),
        (lambda: Float("lr", 0.0, 1.0, log=True), "log-scale range needs low > 0"),
        (lambda: Float("lr", -1.0, 1.0, log=True), "log-scale range needs low > 0"),
        (lambda: Float("lr", 0.0, float("inf")), "finite number"),
        (lambda: Int("layers", 1, 3.5), "integer"),
        (lambda: Int("layers", 4, 2), "low < high"),
        (lambda: Categorical("arch", []), "empty choice"),
        (lambda: Categorical("arch", "mlp"), "list of options"),
        (lambda: Categorical("arch", ["mlp", "mlp"]), "distinct"),
        (lambda: Categorical("arch", [object()]), "JSON scalars"),
        (lambda: Float("", 0.0, 1.0), "non-empty string"),
        (lambda: SearchSpace([]), "empty search space"),
        (lambda: SearchSpace([Float("a", 0, 1), Int("a", 0, 3)]), "duplicates"),
        (lambda: SearchSpace.from_dict({"lr": ["log", 0, 1]}), "low > 0"),
        (lambda: SearchSpace.from_dict({"lr": 3}), "expected"),
    ],
)
def test_invalid_spaces_are_rejected_with_config_errors(make, match):
    with pytest.raises(ConfigError, match=match):
        make()


def test_grid_is_lexicographic_with_the_last_parameter_fastest():
    space = SearchSpace(
        [Float("lr", 1e-4, 1e-2, log=True), Categorical("arch", ["mlp", "cnn"]), Int("n", 1, 2)]
    )
    grid = space.grid(points=3)
    assert len(grid) == space.grid_size(3) == 3 * 2 * 2
    assert [g["n"] for g in grid[:4]] == [1, 2, 1, 2]
    assert [g["arch"] for g in grid[:4]] == ["mlp", "mlp", "cnn", "cnn"]
    np.testing.assert_allclose(
        sorted({g["lr"] for g in grid}), [1e-4, 1e-3, 1e-2]
    )  # geometric on a log axis
    assert Float("x", 0, 1).grid(3) == [0.0, 0.5, 1.0]
    assert Int("n", 1, 100, log=True).grid(3) == [1, 10, 100]
    with pytest.raises(ConfigError, match="grid_points"):
        space.grid(points=1)


def test_grid_axes_are_the_factors_of_the_grid():
    """Grid search picks a spread subset from the axes without building the whole grid."""
    import itertools

    space = SearchSpace(
        [Float("lr", 1e-4, 1e-2, log=True), Categorical("arch", ["mlp", "cnn"]), Int("n", 1, 2)]
    )
    axes = space.grid_axes(np.int64(3))  # a NumPy integer, as searches produce them
    assert [len(a) for a in axes] == [3, 2, 2]
    assert [dict(zip(space.names, c)) for c in itertools.product(*axes)] == space.grid(3)
    with pytest.raises(ConfigError, match=r"grid_points: expected an integer >= 2, got True"):
        space.grid_axes(True)


def test_nevergrad_parametrization_is_seeded_and_respects_types_and_bounds():
    space = SearchSpace(
        [
            Float("lr", 1e-4, 1e-1, log=True),
            Int("n", 2, 5),
            Float("d", 0.0, 0.5),
            Categorical("hidden_sizes", [(16,), (32, 16)]),
        ]
    )

    def samples(seed):
        param = space.to_nevergrad(seed)
        return [space.canonical(param.sample().value) for _ in range(200)]

    a, b = samples(3), samples(3)
    assert a == b and a != samples(4)
    assert all(1e-4 <= s["lr"] <= 1e-1 and 0 <= s["d"] <= 0.5 for s in a)
    assert {s["n"] for s in a} == {2, 3, 4, 5} and all(isinstance(s["n"], int) for s in a)
    assert {s["hidden_sizes"] for s in a} == {(16,), (32, 16)}
    # log-uniform: about half the samples below the geometric midpoint 1e-2.5
    below = np.mean([s["lr"] < 10**-2.5 for s in a])
    assert 0.35 < below < 0.65


def test_ordered_choices_are_one_coordinate_for_the_bayesian_searcher():
    """Numbers and elementwise-growing tuples have an order: with ``ordinal`` (the bayesian
    method's encoding) each is one coordinate instead of one weight per option; names and
    tuples without an order keep one weight per option."""
    space = SearchSpace(
        [
            Float("lr", 1e-4, 1e-1, log=True),
            Categorical("batch_size", [64, 32, 128]),
            Categorical("widths", [(4, 8), (8, 16), (16, 32)]),
            Categorical("hidden_sizes", [(16,), (32, 16)]),
            Categorical("architecture", ["mlp", "cnn"]),
        ]
    )
    assert space.params[1].ordered == (32, 64, 128)
    assert space.params[2].ordered == ((4, 8), (8, 16), (16, 32))
    assert space.params[3].ordered is None and space.params[4].ordered is None
    assert space.to_nevergrad(0).dimension == 1 + 3 + 3 + 2 + 2
    param = space.to_nevergrad(0, ordinal=True)
    assert param.dimension == 1 + 1 + 1 + 2 + 2
    values = [space.canonical(param.sample().value) for _ in range(300)]
    assert {v["batch_size"] for v in values} == {32, 64, 128}
    assert {v["widths"] for v in values} == {(4, 8), (8, 16), (16, 32)}
    searcher = make_searcher("bayesian", space, budget=6, seed=0)
    for i in range(6):  # asks and tells through the GP (the first are its random design)
        suggestion = searcher.ask()
        assert suggestion.config["batch_size"] in (32, 64, 128)
        searcher.tell(suggestion, float(i))


def test_json_declarations_round_trip():
    space = SearchSpace.from_dict(
        {
            "learning_rate": ["log", 1e-4, 1e-2],
            "dropout": ["float", 0, 0.5],
            "layers": ["int", 1, 3],
            "width": ["logint", 8, 128],
            "batch_size": [16, 32],
            "hidden_sizes": {"choices": [[16], [32, 16]]},
        }
    )
    assert space.names == [
        "learning_rate",
        "dropout",
        "layers",
        "width",
        "batch_size",
        "hidden_sizes",
    ]
    assert space["learning_rate"].log and isinstance(space["width"], Int) and space["width"].log
    assert space["hidden_sizes"].choices == ((16,), (32, 16))
    again = SearchSpace.from_dict(space.to_dict())
    assert again.to_dict() == space.to_dict()
    assert space.canonical(
        {
            "learning_rate": 1e-3,
            "dropout": 0.1,
            "layers": 2.0,
            "width": 9.6,
            "batch_size": 32,
            "hidden_sizes": [32, 16],
        }
    )["hidden_sizes"] == (32, 16)
    with pytest.raises(ConfigError, match="expected values for"):
        space.canonical({"learning_rate": 1e-3})
