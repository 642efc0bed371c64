"""Seeds added until the paired interval decides, with an interval that stays valid when it decides.

Looking at the interval after every added seed and stopping once it excludes 0 inflates false
positives: a plain 95 % t interval, looked at after 3, 4, ..., 10 seeds, excludes 0 under no difference
far more often than 5 % of the time (`tests/test_sequential.py` measures how much). The error is split
over the planned looks instead (Bonferroni): with K looks each interval is a t interval at level
1 - 0.05 / K, so the chance that any look wrongly excludes 0 stays at most 5 %, wherever the comparison
stops. The price is a wider interval than a fixed-seed one at the same number of seeds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import numpy as np
import pandas as pd
from scipy import stats

from orchestrator.comparison import comparison_table
from orchestrator.paired import LEVEL
from orchestrator.spec import Spec

STOP_TAG = "sequential_stop"  # the parent run's tag: why the comparison stopped adding seeds


@dataclass(frozen=True)
class SequentialPlan:
    """Looks after `first` seeds, then after each added one, up to `max_seeds`."""

    first: int
    max_seeds: int
    level: float = LEVEL

    @property
    def looks(self) -> int:
        return self.max_seeds - self.first + 1

    @property
    def look_level(self) -> float:
        """Each look's interval level: the error 1 - level split evenly over the looks."""
        return 1 - (1 - self.level) / self.looks

    def describe(self) -> str:
        return (
            f"sequential: {1 - self.level:.0%} error split over {self.looks} planned looks (seeds "
            f"{self.first} to {self.max_seeds}), each a {self.look_level:.2%} t interval (Bonferroni), valid "
            "wherever the seeds stopped, and wider than a fixed-seed interval"
        )


def t_excludes_zero(diffs: np.ndarray, level: float) -> np.ndarray:
    """Per row of `diffs` (rows: comparisons, columns: seeds): whether the `level` t interval of the mean
    excludes 0. The same interval as `paired.paired_difference(interval="t")`, vectorised."""
    n = diffs.shape[1]
    half = stats.t.ppf(0.5 + level / 2, n - 1) * diffs.std(axis=1, ddof=1) / np.sqrt(n)
    return np.abs(diffs.mean(axis=1)) > half


def false_decision_rate(
    plan: SequentialPlan, level: float, simulations: int = 2000, seed: int = 0, noise: str = "normal"
) -> float:
    """The share of simulated null comparisons (no true difference) in which some look's interval excludes 0.

    Each simulation draws `plan.max_seeds` paired differences of mean 0 and looks after `plan.first`,
    `plan.first + 1`, ... seeds, stopping at the first look that excludes 0, as the driver does.
    `noise`: `normal`, or `t3` (heavy tails: a seed that sometimes lands far off).
    """
    rng = np.random.default_rng(seed)
    size = (simulations, plan.max_seeds)
    diffs = rng.standard_normal(size) if noise == "normal" else rng.standard_t(3, size)
    decided = np.zeros(simulations, dtype=bool)
    for n in range(plan.first, plan.max_seeds + 1):
        decided |= t_excludes_zero(diffs[:, :n], level)
    return float(decided.mean())


def plan_of(spec: Spec) -> Optional[SequentialPlan]:
    """The plan of a comparison with `compare.sequential`, else None."""
    c = spec.compare
    return SequentialPlan(len(c.seeds), c.sequential.max_seeds) if c and c.sequential else None


def undecided(table: pd.DataFrame, against: str, methods: list[str]) -> list[str]:
    """`method/student` of every named method whose interval against `against` does not exclude 0 yet."""
    rows = table[table["method"].isin(methods)]
    column = f"vs_{against}_excludes_0"  # None while there is no interval (under 2 shared seeds)
    return [
        f"{row['method']}/{row['student']}"
        for _, row in rows.iterrows()
        if row[column] is None or not bool(row[column])
    ]


def stop_reason(trials: list[dict], spec: Spec, seeds: int, hours_used: float) -> Optional[str]:
    """Why a sequential comparison stops after `seeds` seeds, or None to add one more."""
    plan, rule = plan_of(spec), spec.compare.sequential
    table = comparison_table(trials, spec.students.names, spec.compare.methods, "t", level=plan.look_level)
    left = undecided(table, rule.against, rule.methods)
    if not left:
        return (
            f"decided at {seeds} seeds: every interval of {', '.join(rule.methods)} against {rule.against} excludes 0"
        )
    if seeds >= rule.max_seeds:
        return f"max_seeds {rule.max_seeds} reached; undecided: {', '.join(left)}"
    budget = spec.compare.budget_hours
    if budget is not None and hours_used >= budget:
        spent = f"budget of {budget:g} resource-hours spent ({hours_used:.3f})"
        return f"{spent} at {seeds} seeds; undecided: {', '.join(left)}"
    return None


def table_note(spec: Spec, trials: list[dict], stopped: Optional[str]) -> Optional[str]:
    """The caption's words on a sequential comparison: its intervals, the seeds used and why it stopped."""
    plan = plan_of(spec)
    if plan is None:
        return None
    seeds = sorted({t["params"].get("seed") for t in trials if (t.get("params") or {}).get("seed") is not None})
    return (
        f"Intervals {plan.describe()}. Seeds used: {len(seeds)} ({', '.join(map(str, seeds))}); stopped: "
        f"{stopped or 'not recorded'}."
    )
