"""Paired differences over seeds: the statistics that can tell two methods apart on a few seeds.

Methods of a comparison share seeds (the same initialisation and batch order), so a method's result
minus the reference's on the same seed removes what the seed alone does. Pure functions on floats.
"""

from __future__ import annotations

import math
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
    low: float  # the interval's ends; NaN with fewer than two shared seeds
    high: float
    seeds: int

    @property
    def excludes_zero(self) -> bool | None:
        """Whether the interval lies wholly above or below 0; None when there is no interval."""
        if math.isnan(self.low):
            return None
        return bool(self.low > 0 or self.high < 0)


def paired_difference(values: Mapping[int, float], reference: Mapping[int, float], interval: Interval = "t",
                      level: float = LEVEL, seed: int = 0) -> PairedDifference:
    """(values - reference) over the seeds both have, with a `level` interval for its mean.

    `t`: mean ± t(level, n-1) * sd / sqrt(n), which assumes roughly normal differences; `bootstrap`: the
    percentile interval of the mean over resampled seeds, which assumes nothing but needs more seeds
    (with 5 it can be no wider than the observed range).
    """
    shared = sorted(set(values) & set(reference))
    diffs = np.array([values[s] - reference[s] for s in shared], dtype=float)
    diffs = diffs[~np.isnan(diffs)]
    n = len(diffs)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0)
    mean = float(diffs.mean())
    if n < 2:
        return PairedDifference(mean, math.nan, math.nan, n)
    if interval == "t":
        half = stats.t.ppf(0.5 + level / 2, n - 1) * diffs.std(ddof=1) / math.sqrt(n)
        return PairedDifference(mean, float(mean - half), float(mean + half), n)
    rng = np.random.default_rng(seed)
    means = diffs[rng.integers(0, n, size=(BOOTSTRAP_RESAMPLES, n))].mean(axis=1)
    low, high = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return PairedDifference(mean, float(low), float(high), n)
