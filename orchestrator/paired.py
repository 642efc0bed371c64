"""Paired differences over seeds: the statistics that can tell two methods apart on a few seeds.

Methods of a comparison share seeds (the same initialisation and batch order), so a method's result
minus the reference's on the same seed removes what the seed alone does. Pure functions on floats.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Mapping

import numpy as np
from scipy import stats

Interval = Literal["t", "bootstrap"]
LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over the shared seeds of (method - reference)
    low: float  # the interval's ends; NaN with fewer than two shared seeds or none computable
    high: float
    seeds: int

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the interval lies wholly above or below 0; None when there is no interval."""
        if math.isnan(self.low):
            return None
        return bool(self.low > 0 or self.high < 0)


def paired_difference(
    values: Mapping[int, float],
    reference: Mapping[int, float],
    interval: Interval = "t",
    level: float = LEVEL,
    seed: int = 0,
) -> PairedDifference:
    """(values - reference) over the seeds both have, with a `level` interval for its mean.

    `t`: the paired t interval (`scipy.stats.ttest_rel`), which assumes roughly normal differences;
    `bootstrap`: the BCa interval of the mean over resampled differences (`seed` fixes the resamples),
    which corrects the percentile interval's bias and skew but, on 3-5 seeds, still cannot reach past the
    observed differences. Every seed giving the same difference gives the interval [mean, mean], where
    scipy returns NaN or warns; an interval scipy cannot compute (NaN) is reported as none.
    """
    shared = sorted(set(values) & set(reference))
    pairs = np.array([(values[s], reference[s]) for s in shared], dtype=float).reshape(-1, 2)
    pairs = pairs[~np.isnan(pairs[:, 0] - pairs[:, 1])]
    diffs = pairs[:, 0] - pairs[:, 1]
    n = len(diffs)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = float(diffs.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n)
    if np.ptp(diffs) <= 1e-12 * max(1.0, float(np.abs(diffs).max())):  # equal up to float rounding
        return PairedDifference(mean, mean, mean, n)
    if interval == "t":
        ci = stats.ttest_rel(pairs[:, 0], pairs[:, 1]).confidence_interval(confidence_level=level)
    else:
        with warnings.catch_warnings():  # a BCa interval that cannot be computed is NaN, handled below
            warnings.simplefilter("ignore", stats.DegenerateDataWarning)
            ci = stats.bootstrap(
                (diffs,),
                np.mean,
                confidence_level=level,
                method="BCa",
                n_resamples=BOOTSTRAP_RESAMPLES,
                rng=np.random.default_rng(seed),
            ).confidence_interval
    low, high = float(ci.low), float(ci.high)
    if math.isnan(low) or math.isnan(high):
        return PairedDifference(mean, math.nan, math.nan, n)
    return PairedDifference(mean, low, high, n)


def difference_columns(
    values: Mapping[int, float],
    reference: Mapping[int, float],
    ref: str,
    is_reference: bool,
    interval: Interval = "t",
    level: float = LEVEL,
) -> dict:
    """A table row's `vs_{ref}_*` columns: its paired difference against `ref` over the seeds both have
    (empty for `ref` itself and where the two share no seed)."""
    d = paired_difference(values, reference, interval, level)
    none = is_reference or d.seeds == 0
    return {
        f"vs_{ref}_mean_%": math.nan if none else d.mean,
        f"vs_{ref}_ci_low_%": math.nan if none else d.low,
        f"vs_{ref}_ci_high_%": math.nan if none else d.high,
        f"vs_{ref}_excludes_0": None if none else d.excludes_zero,
        f"vs_{ref}_pairs": 0 if none else d.seeds,
    }
