"""Active learning: acquisition scores, selection, budgets, a durable label store and the loop.

``from ml_adv.active_learning import AdvancedActiveLearning`` is SEED.md's import path.
Numerics (scores, top-k, k-center greedy) are pure jitted functions in ``scores`` and
``selection``; pool and label bookkeeping lives on the host in ``labels`` and ``budget``;
``loop`` runs one round; ``facade`` holds the state. ``stacked_simulation`` benchmarks many
(strategy, seed) loops in lockstep, one stacked training program per round.
"""

from ml_adv.active_learning.budget import Budget
from ml_adv.active_learning.facade import AdvancedActiveLearning, Selection
from ml_adv.active_learning.labels import LabelStore
from ml_adv.active_learning.loop import ActiveLearningConfig
from ml_adv.active_learning.scores import bald, entropy, least_confidence, margin, random_scores
from ml_adv.active_learning.selection import k_center_greedy, top_k
from ml_adv.active_learning.stacked_simulation import StackedSimulationConfig, simulate_stacked
from ml_adv.active_learning.strategies import STRATEGIES, Strategy

__all__ = [
    "ActiveLearningConfig",
    "AdvancedActiveLearning",
    "Budget",
    "LabelStore",
    "STRATEGIES",
    "Selection",
    "StackedSimulationConfig",
    "Strategy",
    "bald",
    "entropy",
    "k_center_greedy",
    "least_confidence",
    "margin",
    "random_scores",
    "simulate_stacked",
    "top_k",
]
