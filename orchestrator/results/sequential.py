"""Seeds added until the paired interval decides, with decisions that stay valid when it stops.

Looking at the interval after every added seed and stopping once it excludes 0 inflates false
positives: a plain 95 % t interval, looked at after 3, 4, ..., 10 seeds, excludes 0 under no difference
far more often than 5 % of the time (`tests/test_sequential.py` measures how much). The error is split
over the looks instead (Bonferroni): with K looks each decides at level 1 - 0.05 / K, so the chance that
any look wrongly decides stays at most 5 %, wherever the comparison stops.

A look decides as every table does (`paired.decides`): the t interval excludes 0 and the exact
sign-flip test agrees at the look's level. That test cannot reach a level on too few seeds (2/2^n is
its smallest p), so early looks cannot decide at all, and an error share given to them would never be
spent: K counts only the looks that can decide (`deciding_looks`), the fewest K whose level leaves at
most K looks able to. For 3 to 8 seeds that is K = 2 (looks at 7 and 8 seeds, each at 97.5 %) where
splitting over all 6 looks would give 99.17 %, which only 8 seeds of one sign can reach. The price is
a wider interval than a fixed-seed one at the same number of seeds, and no decision on few seeds.

`false_decision_rate` checks the promise by simulation, on continuous differences and on lattice ones
(whole validation images, which tie), for every shipped plan: `benchmarks/false_decisions.py`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np
import pandas as pd
import yaml

from orchestrator.results.comparison import comparison_table
from orchestrator.results.paired import LEVEL, IntervalLevel, min_seeds, t_decides
from orchestrator.spec import CompareSettings, Spec

STOP_TAG = "sequential_stop"  # the parent run's tag: why the comparison stopped adding seeds
IMAGE = 100 / 360  # one validation image of the digits (360 images), in top-1 points: the lattice's step
NOISES = ("normal", "t3", "images_pm1", "images_pm2", "images_pm3", "images_sign1", "images_round1", "images_round2")


def looks_able(first: int, max_seeds: int, level: float) -> int:
    """How many looks, after `first` to `max_seeds` seeds, can decide at `level` (`paired.min_seeds`)."""
    fewest = min_seeds(level)
    return 0 if fewest is None else max(0, max_seeds - max(first, fewest) + 1)


def deciding_looks(first: int, max_seeds: int, level: float) -> int:
    """K, the looks the error 1 - level is split over: the fewest whose per-look level leaves at most K looks
    able to decide. Looks that cannot decide cannot err, so the error stays within 1 - level (Bonferroni)."""
    looks = max_seeds - first + 1
    return next(k for k in range(1, looks + 1) if looks_able(first, max_seeds, 1 - (1 - level) / k) <= k)


@dataclass(frozen=True)
class SequentialPlan:
    """Looks after `first` seeds, then after each added one, up to `max_seeds`; a fixed-seed comparison is
    the plan with one look (`first == max_seeds`)."""

    first: int
    max_seeds: int
    level: float = LEVEL

    @property
    def looks(self) -> int:
        return self.max_seeds - self.first + 1

    @property
    def look_level(self) -> float:
        """Each look's level: the error 1 - level split evenly over the looks that can decide."""
        return 1 - (1 - self.level) / deciding_looks(self.first, self.max_seeds, self.level)

    @property
    def first_decision(self) -> Optional[int]:
        """The fewest seeds at which a look can decide; None when none can."""
        fewest = min_seeds(self.look_level)
        return None if fewest is None or fewest > self.max_seeds else max(self.first, fewest)

    @property
    def intervals(self) -> IntervalLevel:
        return IntervalLevel("t", self.look_level, per_look=True)

    def describe(self) -> str:
        looks = f"{self.looks} planned looks (seeds {self.first} to {self.max_seeds})"
        first = self.first_decision
        if first is None:
            return (
                f"sequential: {looks}, each a {self.look_level:.2%} t interval per look; none can decide: the "
                f"sign-flip test needs {min_seeds(self.look_level)} seeds at that level"
            )
        return (
            f"sequential: {looks}, each a {self.look_level:.2%} t interval per look, decided only with the "
            f"sign-flip test at the same level, which no look under {first} seeds can pass; each look from {first} "
            f"seeds on may spend {1 - self.look_level:.2%} of the {1 - self.level:.0%} error (Bonferroni), so the "
            "decisions are valid wherever the seeds stopped; wider than a fixed-seed interval"
        )


def null_differences(noise: str, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Paired differences with no true difference, of kind `noise`.

    Continuous: `normal`; `t3` (heavy tails: a seed that sometimes lands far off). On the lattice of whole
    validation images (IMAGE points apart), where differences tie: `images_pmM` uniform on -M..M images,
    `images_sign1` one image either way, `images_roundS` a normal of sd S images rounded to whole images.
    """
    if noise == "normal":
        return rng.standard_normal(size)
    if noise == "t3":
        return rng.standard_t(3, size)
    if noise.startswith("images_pm"):
        reach = int(noise.removeprefix("images_pm"))
        return rng.integers(-reach, reach + 1, size) * IMAGE
    if noise == "images_sign1":
        return rng.choice([-1.0, 1.0], size) * IMAGE
    if noise.startswith("images_round"):
        return np.round(float(noise.removeprefix("images_round")) * rng.standard_normal(size)) * IMAGE
    raise ValueError(f"unknown noise {noise!r}: one of {', '.join(NOISES)}")


def false_decision_rate(
    plan: SequentialPlan,
    level: float,
    simulations: int = 2000,
    seed: int = 0,
    noise: str = "normal",
    decide: Callable[[np.ndarray, float], np.ndarray] = t_decides,
) -> float:
    """The share of simulated null comparisons (no true difference) in which some look decides.

    Each simulation draws `plan.max_seeds` paired differences (`null_differences`) and looks after
    `plan.first`, `plan.first + 1`, ... seeds, stopping at the first look that decides, as the driver does;
    `decide(diffs, level)` is the tables' rule unless another is given (to show what a plain one does).
    """
    diffs = null_differences(noise, (simulations, plan.max_seeds), np.random.default_rng(seed))
    decided = np.zeros(simulations, dtype=bool)
    for n in range(plan.first, plan.max_seeds + 1):
        decided |= decide(diffs[:, :n], level)
    return float(decided.mean())


def shipped_plans(folder: str | Path) -> dict[str, SequentialPlan]:
    """Every comparison spec under `folder` (path relative to it) as the plan its `≠0` columns are read under:
    its `compare.sequential` plan, or one look at its seeds count."""
    plans = {}
    for path in sorted(Path(folder).rglob("*.yaml")):
        raw = (yaml.safe_load(path.read_text()) or {}).get("compare")
        if raw is not None:
            c = CompareSettings.model_validate(raw)
            plans[path.relative_to(folder).as_posix()] = SequentialPlan(
                len(c.seeds), c.sequential.max_seeds if c.sequential else len(c.seeds)
            )
    return plans


def coverage_table(
    plans: dict[str, SequentialPlan], noises: tuple[str, ...] = NOISES, simulations: int = 4000, seed: int = 0
) -> pd.DataFrame:
    """Per plan (rows) and noise kind (columns), the simulated share of null comparisons that wrongly decide
    at the plan's look level: at most 0.05 is the promise."""
    rows = {
        name: {noise: false_decision_rate(plan, plan.look_level, simulations, seed, noise) for noise in noises}
        for name, plan in plans.items()
    }
    return pd.DataFrame.from_dict(rows, orient="index", columns=list(noises))


def plan_of(spec: Spec) -> Optional[SequentialPlan]:
    """The plan of a comparison with `compare.sequential`, else None."""
    c = spec.compare
    return SequentialPlan(len(c.seeds), c.sequential.max_seeds) if c and c.sequential else None


def intervals_of(spec: Spec) -> IntervalLevel:
    """The intervals of a comparison's table: its plan's per-look ones, else `compare.interval` at LEVEL."""
    plan = plan_of(spec)
    return plan.intervals if plan else IntervalLevel(spec.compare.interval)


def undecided(table: pd.DataFrame, against: str, methods: list[str]) -> list[str]:
    """`method/student` of every named method whose difference against `against` is not decided yet."""
    rows = table[table["method"].isin(methods)]
    column = f"vs_{against}_excludes_0"  # None while there is no interval (no spread yet)
    return [
        f"{row['method']}/{row['student']}"
        for _, row in rows.iterrows()
        if row[column] is None or not bool(row[column])
    ]


def stop_reason(trials: list[dict], spec: Spec, seeds: int, hours_used: float) -> Optional[str]:
    """Why a sequential comparison stops after `seeds` seeds, or None to add one more."""
    plan, rule = plan_of(spec), spec.compare.sequential
    table = comparison_table(
        trials, spec.students.names, spec.compare.methods, plan.intervals, references=spec.compare.references
    )
    left = undecided(table, rule.against, rule.methods)
    if not left:
        return f"decided at {seeds} seeds: every difference of {', '.join(rule.methods)} against {rule.against} ≠ 0"
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
