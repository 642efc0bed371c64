"""The share of comparisons with no true difference that the tables' rule wrongly decides: at most 5 % is
the promise (`orchestrator.results.paired`, `orchestrator.results.sequential`).

    python benchmarks/false_decisions.py [--simulations 4000] [--seed 0]

One row per shipped comparison spec (its sequential plan, or one look at its seeds count) and per plan the
tests simulate; one column per kind of null differences: continuous (`normal`, `t3`) and lattice ones in
whole validation images, which tie (`orchestrator.results.sequential.null_differences`). Printed as Markdown; below
it, for comparison, two rules without the sign-flip test, the error split over every planned look: the t
interval with equal differences not deciding, and the rule before (equal differences deciding).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd

from orchestrator.results import SequentialPlan, has_spread, markdown_table, t_interval
from orchestrator.results.sequential import NOISES, coverage_table, false_decision_rate, shipped_plans

SEARCH_SPACES = Path(__file__).resolve().parents[1] / "search_spaces"
TESTED = {
    "tests: 3 to 10 seeds": SequentialPlan(3, 10),
    "tests: 2 to 6 seeds": SequentialPlan(2, 6),
    "tests: 5 to 20 seeds": SequentialPlan(5, 20),
}


def t_alone(diffs: np.ndarray, level: float) -> np.ndarray:
    """The t interval excludes 0, and the differences have a spread: the rule without the sign-flip test."""
    low, high = t_interval(diffs, level)
    return has_spread(diffs) & ((low > 0) | (high < 0))


def before(diffs: np.ndarray, level: float) -> np.ndarray:
    """The rule before: the t interval excludes 0, and equal differences are the interval [mean, mean]."""
    low, high = t_interval(diffs, level)
    tied = ~has_spread(diffs) & (np.abs(diffs.mean(axis=1)) > 0) & (diffs.shape[1] >= 2)
    return tied | (low > 0) | (high < 0)


def rates(plans: dict, decide, level_of, simulations: int, seed: int) -> pd.DataFrame:
    rows = {
        name: {n: false_decision_rate(plan, level_of(plan), simulations, seed, n, decide) for n in NOISES}
        for name, plan in plans.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(NOISES))


def shown(table: pd.DataFrame, plans: dict, level_of) -> str:
    table = table.map(lambda v: f"{v:.2%}")
    table.insert(0, "level", [f"{level_of(plan):.2%}" for plan in plans.values()])
    table.insert(0, "seeds", [f"{plan.first}-{plan.max_seeds}" for plan in plans.values()])
    return markdown_table(table.rename_axis("plan").reset_index())


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--simulations", type=int, default=4000)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    plans = {**shipped_plans(SEARCH_SPACES), **TESTED}
    per_look = lambda plan: plan.look_level  # noqa: E731
    every_look = lambda plan: 1 - (1 - plan.level) / plan.looks  # noqa: E731
    print(f"The tables' rule, {args.simulations} null comparisons per cell:\n")
    print(shown(coverage_table(plans, NOISES, args.simulations, args.seed), plans, per_look))
    print("\nThe t interval alone, equal differences not deciding, the error split over every planned look:\n")
    print(shown(rates(plans, t_alone, every_look, args.simulations, args.seed), plans, every_look))
    print("\nBefore: the t interval, equal differences deciding, the error split over every planned look:\n")
    print(shown(rates(plans, before, every_look, args.simulations, args.seed), plans, every_look))


if __name__ == "__main__":
    main()
