"""Search methods: the registry, nevergrad names, grid order and cap, determinism."""

import pytest

from ml_adv.errors import ConfigError
from ml_adv.hpo.methods import OPTIMIZATION_METHODS, SEARCH_METHODS, make_searcher, resolve_method
from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace
from ml_adv.hpo.study import Study

SPACE = SearchSpace([Float("x", -3.0, 3.0), Int("n", 1, 5), Categorical("c", ["a", "b"])])


def score(config):
    return -(config["x"] - 1.0) ** 2 - abs(config["n"] - 3) + (config["c"] == "b")


def test_registry_holds_the_seed_methods_and_the_trainer_accepts_them():
    from ml_adv.training.facade import AdvancedCustomModelTrainer

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


def test_grid_search_runs_the_stated_order_capped_by_max_trials():
    grid = SPACE.grid(points=3)
    capped = Study(score, SPACE, method="grid_search", max_trials=5, method_options={"grid_points": 3},
                   progress=False).run()
    assert [t["config"] for t in capped.trials] == grid[:5]
    whole = Study(score, SPACE, method="grid_search", max_trials=1000, method_options={"grid_points": 3},
                  progress=False).run()
    assert len(whole.trials) == len(grid) == 3 * 3 * 2  # ends when the grid is exhausted
    assert whole.best_config == {"x": 0.0, "n": 3, "c": "b"}
    shuffled = Study(score, SPACE, method="grid_search", max_trials=5, progress=False,
                     method_options={"grid_points": 3, "grid_order": "shuffled"}).run()
    configs = [t["config"] for t in shuffled.trials]
    assert configs != grid[:5] and all(c in grid for c in configs) and len({repr(c) for c in configs}) == 5


@pytest.mark.parametrize("method, trials", [("genetic", 12), ("random", 12), ("bayesian", 5), ("CMA", 8)])
def test_methods_are_deterministic_under_a_seed(method, trials):
    runs = [Study(score, SPACE, method=method, max_trials=trials, seed=seed, progress=False).run()
            for seed in (0, 0, 1)]
    configs = [[t["config"] for t in r.trials] for r in runs]
    assert configs[0] == configs[1] and configs[0] != configs[2]
    assert runs[0].best_score == max(t["score"] for t in runs[0].trials)
    assert all(SPACE.canonical(c) == c for c in configs[0])


def test_genetic_search_improves_on_its_first_generation():
    result = Study(score, SPACE, method="genetic", max_trials=60, seed=0, progress=False).run()
    first = max(t["score"] for t in result.trials[:10])
    assert result.best_score > first and result.best_config["c"] == "b" and result.best_config["n"] == 3


def test_bayesian_search_survives_optima_on_the_boundary():
    # The GP's acquisition picks corners of the box: probes must map back inside the
    # bounds, and a corner proposed twice must be accepted (both raised in nevergrad 1.0).
    import math

    space = SearchSpace([Float("learning_rate", 1e-4, 3e-2, log=True), Float("label_smoothing", 0.0, 0.2)])
    result = Study(lambda c: math.log(c["learning_rate"]) - c["label_smoothing"], space, method="bayesian",
                   max_trials=10, seed=0, progress=False).run()
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
