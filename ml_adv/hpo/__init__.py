"""Hyper-parameter search and model selection.

* ``space``: declared search spaces (log/linear floats, ints, categorical choices,
  including the architecture and its size), converted to nevergrad and to grids;
* ``methods``: the registry of search methods (bayesian, genetic, grid_search, random,
  population, any nevergrad optimizer name), all ask/tell;
* ``study``: the loop, the append-only trial journal, replay on resume, executors;
* ``objective``: training a candidate with ``fit`` on a validation split of the training data;
* ``pruning``: median and successive-halving pruners;
* ``population``: configurations trained as one stacked program;
* ``facade``: ``AdvancedHyperparameterOptimizer`` (SEED API);
* ``integration``: the trainer's ``optimization_method`` (search, then train the best).
"""

from ml_adv.hpo.methods import OPTIMIZATION_METHODS, SEARCH_METHODS, make_searcher
from ml_adv.hpo.objective import FunctionObjective, TrainingObjective, run_trial
from ml_adv.hpo.pruning import MedianPruner, SuccessiveHalvingPruner
from ml_adv.hpo.space import Categorical, Float, Int, SearchSpace
from ml_adv.hpo.study import Study, StudyResult

__all__ = [
    "OPTIMIZATION_METHODS", "SEARCH_METHODS", "Categorical", "Float", "FunctionObjective", "Int",
    "MedianPruner", "SearchSpace", "Study", "StudyResult", "SuccessiveHalvingPruner", "TrainingObjective",
    "make_searcher", "run_trial",
]
