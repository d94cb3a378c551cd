"""Search methods: the registry, nevergrad names, grid order and cut, determinism."""

import logging
import math

import numpy as np
import pytest

from ml_adv.errors import ConfigError
from ml_adv.hpo.methods import OPTIMIZATION_METHODS, SEARCH_METHODS, make_searcher, resolve_method
from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace
from ml_adv.hpo.study import Study

SPACE = SearchSpace([Float("x", -3.0, 3.0), Int("n", 1, 5), Categorical("c", ["a", "b"])])


def score(config):
    return -((config["x"] - 1.0) ** 2) - abs(config["n"] - 3) + (config["c"] == "b")


def test_registry_holds_the_seed_methods_and_the_trainer_accepts_them():
    from ml_adv.trainer.facade import AdvancedCustomModelTrainer

    for name in ("bayesian", "genetic", "grid_search", "random", "population"):
        assert name in SEARCH_METHODS
        assert name in OPTIMIZATION_METHODS
    assert OPTIMIZATION_METHODS[0] == "none"
    AdvancedCustomModelTrainer("mlp", optimization_method="genetic")
    with pytest.raises(ConfigError, match="optimization_method"):
        AdvancedCustomModelTrainer("mlp", optimization_method="simulated_annealing")


def test_unknown_method_and_bad_budget_fail_before_anything_runs():
    with pytest.raises(ConfigError, match="unknown name 'hill_climbing'.*nevergrad optimizer name"):
        resolve_method("hill_climbing")
    with pytest.raises(ConfigError, match="max_trials"):
        make_searcher("random", SPACE, 0)
    with pytest.raises(ConfigError, match="grid_order"):
        make_searcher("grid_search", SPACE, 4, grid_order="sideways")
    with pytest.raises(ConfigError, match="unknown option"):
        make_searcher("bayesian", SPACE, 4, grid_points=3)
    assert resolve_method("CMA").name == "CMA"  # any nevergrad optimizer name


def test_grid_search_runs_the_stated_order_capped_by_max_trials(caplog):
    grid = SPACE.grid(points=3)
    with caplog.at_level(logging.WARNING, logger="ml_adv.hpo.study"):
        capped = Study(
            score,
            SPACE,
            method="grid_search",
            max_trials=5,
            progress=False,
            method_options={"grid_points": 3, "grid_order": "lexicographic"},
        ).run()
    assert [t["config"] for t in capped.trials] == grid[:5]  # the explicit old order, unchanged
    assert [r.getMessage() for r in caplog.records] == [
        "grid_search: trying 5 of the 18 grid points (max_trials=5), the first in lexicographic "
        "order (grid_order='lexicographic')"
    ]
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ml_adv.hpo.study"):
        whole = Study(
            score,
            SPACE,
            method="grid_search",
            max_trials=1000,
            method_options={"grid_points": 3},
            progress=False,
        ).run()
    assert len(whole.trials) == len(grid) == 3 * 3 * 2  # ends when the grid is exhausted
    assert [t["config"] for t in whole.trials] == grid  # a whole grid runs in lexicographic order
    assert (
        whole.best_config == {"x": 0.0, "n": 3, "c": "b"} and not caplog.records
    )  # nothing cut, nothing said
    shuffled = Study(
        score,
        SPACE,
        method="grid_search",
        max_trials=5,
        progress=False,
        method_options={"grid_points": 3, "grid_order": "shuffled"},
    ).run()
    configs = [t["config"] for t in shuffled.trials]
    assert (
        configs != grid[:5]
        and all(c in grid for c in configs)
        and len({repr(c) for c in configs}) == 5
    )


def _values_tried(points, space):
    return {name: {repr(p[name]) for p in points} for name in space.names}


def test_a_cut_grid_tries_every_value_of_every_small_enough_axis():
    """Default order below the grid size: distinct grid points covering each axis with <=
    max_trials values."""
    from ml_adv.hpo.facade import default_space

    for space, grid_points in (
        (SPACE, 3),
        (SPACE, 5),
        (default_space(), 3),
        (default_space(("mlp", "cnn")), 4),
    ):
        axes = space.grid_axes(grid_points)
        grid = [repr(p) for p in space.grid(grid_points)]
        for budget in (1, 2, 3, 4, 5, 7, 11, 17):
            for seed in (0, 7):
                points = make_searcher(
                    "grid_search", space, budget, seed=seed, grid_points=grid_points
                ).points
                assert len(points) == budget and len({repr(p) for p in points}) == budget
                assert all(repr(p) in grid for p in points)
                tried = _values_tried(points, space)
                for name, axis in zip(space.names, axes):
                    if len(axis) <= budget:
                        assert tried[name] == {repr(v) for v in axis}, (space, budget, seed, name)


def test_the_default_space_cut_to_four_trials_spans_the_learning_rates():
    """The issue's case: 4 trials of the 81-point default grid no longer all use the lowest
    learning rate."""
    from ml_adv.hpo.facade import AdvancedHyperparameterOptimizer, default_space

    space = default_space()
    optimizer = AdvancedHyperparameterOptimizer(
        optimization_method="grid_search", max_trials=4, progress=False
    )
    result = optimizer.optimize(
        lambda c: -abs(math.log10(c["learning_rate"]) + 2.5), search_space=space
    )
    rates = sorted({t["config"]["learning_rate"] for t in result.trials})
    np.testing.assert_allclose(rates, space.grid_axes(3)[0])  # 1e-4, its geometric middle, 3e-2
    lexicographic = AdvancedHyperparameterOptimizer(
        optimization_method="grid_search", max_trials=4, progress=False, grid_order="lexicographic"
    ).optimize(lambda c: -abs(math.log10(c["learning_rate"]) + 2.5), search_space=space)
    assert {t["config"]["learning_rate"] for t in lexicographic.trials} == {
        1e-4
    }  # the corner it used to try
    assert result.best_score > lexicographic.best_score


def test_the_spread_choice_is_seeded_and_said_in_one_line(caplog):
    def points(seed, **options):
        return [
            t["config"]
            for t in Study(
                score,
                SPACE,
                method="grid_search",
                max_trials=6,
                seed=seed,
                progress=False,
                method_options=options,
            )
            .run()
            .trials
        ]

    with caplog.at_level(logging.WARNING, logger="ml_adv.hpo.study"):
        first = points(0)
    assert [r.getMessage() for r in caplog.records] == [
        "grid_search: trying 6 of the 18 grid points (max_trials=6), spread evenly over each "
        "axis's values (seed 0; grid_order='lexicographic' keeps the first points instead)"
    ]
    assert points(0) == first and points(0, grid_order="spread") == first
    assert points(1) != first and sorted(map(repr, points(1))) != sorted(map(repr, first))
    # every prefix is spread too: the study asks the same points whatever its batch size
    batched = Study(
        score, SPACE, method="grid_search", max_trials=6, progress=False, trials_per_batch=4
    ).run()
    assert [t["config"] for t in batched.trials] == first


def test_spread_grid_indices_checks_its_count_and_stays_balanced():
    from ml_adv.hpo.methods import spread_grid_indices

    with pytest.raises(ConfigError, match="count: expected 0 <= count <= 6"):
        spread_grid_indices([2, 3], 7, 0)
    assert sorted(spread_grid_indices([2, 3], 6, 0)) == list(
        range(6)
    )  # the whole grid, each point once
    chosen = spread_grid_indices([3, 3, 3, 3], 9, 5)
    coordinates = np.array(np.unravel_index(np.array(chosen), (3, 3, 3, 3)))
    assert all(np.bincount(axis, minlength=3).tolist() == [3, 3, 3] for axis in coordinates)
    with pytest.raises(ConfigError, match="grid_order: expected one of"):
        make_searcher("grid_search", SPACE, 4, grid_order=3)


@pytest.mark.parametrize(
    "method, trials", [("genetic", 12), ("random", 12), ("bayesian", 5), ("CMA", 8)]
)
def test_methods_are_deterministic_under_a_seed(method, trials):
    runs = [
        Study(score, SPACE, method=method, max_trials=trials, seed=seed, progress=False).run()
        for seed in (0, 0, 1)
    ]
    configs = [[t["config"] for t in r.trials] for r in runs]
    assert configs[0] == configs[1] and configs[0] != configs[2]
    assert runs[0].best_score == max(t["score"] for t in runs[0].trials)
    assert all(SPACE.canonical(c) == c for c in configs[0])


def test_genetic_search_improves_on_its_first_generation():
    result = Study(score, SPACE, method="genetic", max_trials=60, seed=0, progress=False).run()
    first = max(t["score"] for t in result.trials[:10])
    assert (
        result.best_score > first
        and result.best_config["c"] == "b"
        and result.best_config["n"] == 3
    )


def test_bayesian_search_survives_optima_on_the_boundary():
    # The GP's acquisition picks corners of the box: probes must map back inside the
    # bounds, and a corner proposed twice must be accepted (both raised in nevergrad 1.0).
    import math

    space = SearchSpace(
        [Float("learning_rate", 1e-4, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)]
    )
    result = Study(
        lambda c: math.log(c["learning_rate"]) - c["label_smoothing"],
        space,
        method="bayesian",
        max_trials=10,
        seed=0,
        progress=False,
    ).run()
    assert len(result.trials) == 10 and all(t["status"] == "ok" for t in result.trials)
    assert result.best_config["learning_rate"] > 2.5e-2


def test_genetic_population_is_sized_to_the_budget():
    from ml_adv.hpo.methods import genetic_population

    assert [genetic_population(b) for b in (8, 16, 40, 400)] == [4, 4, 10, 30]
    assert genetic_population(16, num_workers=8) == 8
    genetic = Study(score, SPACE, method="genetic", max_trials=16, seed=0, progress=False).run()
    random = Study(score, SPACE, method="random", max_trials=16, seed=0, progress=False).run()
    # after its first generation of 4 the evolution proposes its own points, not random draws
    assert [t["config"] for t in genetic.trials][4:] != [t["config"] for t in random.trials][4:]


def test_bayesian_search_uses_expected_improvement():
    # nevergrad's default acquisition (UCB, kappa 2.576) kept probing the box's corners on the
    # MNIST study; expected improvement refines the best region (ml_adv.hpo.methods).
    searcher = make_searcher("bayesian", SPACE, 6, seed=0)
    assert (searcher.optimizer.utility_kind, searcher.optimizer.utility_xi) == ("ei", 0.0)
