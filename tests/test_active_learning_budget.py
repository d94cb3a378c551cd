"""Labelling budget: unit costs, per-sample costs, BudgetError, trimming, used/left."""

import numpy as np
import pytest

from ml_adv.active_learning.budget import Budget
from ml_adv.errors import BudgetError, ConfigError, DataError


def test_unit_costs_charge_and_left():
    b = Budget(10)
    assert b.fit([3, 1, 2]).tolist() == [3, 1, 2]
    assert b.charge([3, 1, 2]) == 3.0
    assert (b.used, b.left) == (3.0, 7.0)
    assert b.to_dict() == {
        "enabled": True,
        "total": 10.0,
        "used": 3.0,
        "left": 7.0,
        "per_sample_costs": False,
        "trim": False,
    }


def test_over_budget_raises_with_numbers():
    b = Budget(5, costs=np.array([1.0, 2.0, 3.0, 0.5]))
    b.charge([0])  # 4 left
    with pytest.raises(BudgetError, match=r"costs 5.*only 4 of the budget 5"):
        b.fit([1, 2])
    assert b.used == 1.0  # a rejected selection charges nothing


def test_trim_keeps_the_longest_prefix_in_rank_order():
    b = Budget(4, costs=np.array([1.0, 2.0, 3.0, 0.5]), trim=True)
    assert b.fit([2, 3, 1, 0]).tolist() == [2, 3]  # 3 + 0.5 fits, + 2 does not
    assert b.fit([1, 0, 3, 2]).tolist() == [1, 0, 3]  # 2 + 1 + 0.5 = 3.5
    b.charge([1, 0, 3])
    assert b.fit([2]).tolist() == []  # nothing fits any more


def test_float_costs_sum_exactly_to_budget():
    b = Budget(1.0, costs=np.full(10, 0.1))
    assert b.fit(np.arange(10)).size == 10


def test_bad_budget_inputs():
    with pytest.raises(ConfigError, match="budget"):
        Budget(0)
    with pytest.raises(ConfigError, match="budget"):
        Budget(True)
    with pytest.raises(DataError, match="costs"):
        Budget(5, costs=np.array([1.0, -1.0]))
    with pytest.raises(DataError, match="costs"):
        Budget(5, costs=np.array([1.0, np.nan]))
    with pytest.raises(DataError, match="one cost per pool sample"):
        Budget(5, costs=np.ones(3)).check_pool(4)
    with pytest.raises(DataError, match="indices"):
        Budget(5, costs=np.ones(3)).cost_of([5])
