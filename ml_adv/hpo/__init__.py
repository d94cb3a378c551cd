"""Hyper-parameter search and model selection.

* ``space``: declared search spaces (log/linear floats, ints, categorical choices,
  including the architecture and its size), converted to nevergrad and to grids;
* ``methods``: the registry of search methods (bayesian, genetic, grid_search, random,
  population, pbt, any nevergrad optimizer name), all ask/tell;
* ``study``: the loop, the append-only trial journal, replay on resume, executors;
* ``objective``: training a candidate with ``fit`` on a validation split of the training data;
* ``pruning``: median and successive-halving pruners;
* ``population``: configurations trained as one stacked program;
* ``pbt``, ``pbt_loop``, ``pbt_study``: population based training, its exploit/explore
  decisions as a hook of the one training loop over one stacked program;
* ``journal``, ``report``, ``result``, ``plots``: what a study writes and returns;
* ``facade``: ``AdvancedHyperparameterOptimizer`` (SEED API);
* ``workflow``: what ``ml-adv hpo`` runs, callable from Python.

The trainer's ``optimization_method`` (search, then train the best) is
``ml_adv.trainer.search``: training meets search above this package, not inside it.
"""

import importlib

# Lazy (PEP 562): a worker process that unpickles a trial imports only what the trial needs.
_EXPORTS = {
    "OPTIMIZATION_METHODS": "ml_adv.hpo.methods",
    "SEARCH_METHODS": "ml_adv.hpo.methods",
    "make_searcher": "ml_adv.hpo.methods",
    "FunctionObjective": "ml_adv.hpo.objective",
    "TrainingObjective": "ml_adv.hpo.objective",
    "run_trial": "ml_adv.hpo.objective",
    "MedianPruner": "ml_adv.hpo.pruning",
    "SuccessiveHalvingPruner": "ml_adv.hpo.pruning",
    "Categorical": "ml_adv.hpo.space",
    "Float": "ml_adv.hpo.space",
    "Int": "ml_adv.hpo.space",
    "SearchSpace": "ml_adv.hpo.space",
    "Study": "ml_adv.hpo.study",
    "StudyResult": "ml_adv.hpo.study",
    "AdvancedHyperparameterOptimizer": "ml_adv.hpo.facade",
    "default_space": "ml_adv.hpo.facade",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module_name = _EXPORTS.get(name)
    if module_name is None:
        raise AttributeError(f"module 'ml_adv.hpo' has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value
    return value
