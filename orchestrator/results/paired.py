"""Paired differences over seeds: the statistics that can tell two methods apart on a few seeds.

Methods of a comparison share seeds (the same initialisation and batch order), so a method's result
minus the reference's on the same seed removes what the seed alone does. Pure functions on floats.

When a difference counts as decided (`excludes_zero`, the tables' `≠0`): its differences have a spread,
its interval (t or bootstrap) excludes 0, and the exact sign-flip test rejects mean 0 at the interval's
level. Every table and the sequential stopping rule decide with `decides`, so they cannot disagree.

Why more than "the interval excludes 0": top-1 moves in steps of one validation image (100/360 points on
the digits), so paired differences are lattice values that often tie. Every seed giving the same
difference gives the interval [mean, mean], which estimates no spread at all: it is no interval
(`low`/`high` NaN, `excludes_zero` None). Near-ties do harm too: a t interval assumes normal
differences, and on 3-8 differences of a few images it wrongly excludes 0 in up to 7 % of comparisons
with no true difference at 95 % (`benchmarks/false_decisions.py`). The sign-flip test needs no such
assumption: with no true difference, the two methods are exchangeable on a seed, so each difference
is as likely to be +d as -d, whatever its distribution (a lattice, ties, heavy tails); the share of
the 2^n sign patterns whose |sum| reaches the observed one is then a p-value whose error is at most
1 - level, exactly. Requiring it keeps every decision's error within its level. Its price is a floor
on the seeds: the smallest p of n differences is 2/2^n (every one with the same sign), so at 95 % no
comparison of fewer than 6 seeds can decide (`min_seeds`); the t interval alone promised the level
only for normal differences. The rule needs no lattice step, so no table has to know the val set size.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Literal, Mapping, Optional

import numpy as np
from scipy import stats

Interval = Literal["t", "bootstrap"]
LEVEL = 0.95
BOOTSTRAP_RESAMPLES = 10_000
INTERVAL_NAMES = {"t": "t", "bootstrap": "bootstrap BCa"}
# Differences closer than this (relative above 1 point) are equal: top-1 in points is at most 100, so float
# rounding moves a difference by ~1e-14, while one image of a val set under a million images is >= 1e-4.
TIE = 1e-9
EXACT_SIGN_FLIPS = 16  # up to this many seeds the sign-flip test tries all 2^n sign patterns
SAMPLED_SIGN_FLIPS = 2**16 - 1  # beyond, a seeded sample of patterns (and the observed one)
_BLOCK = 2**22  # sums computed at once by `sign_flip_p`: bounds its memory


@dataclass(frozen=True)
class IntervalLevel:
    """What a table's intervals are: their kind and level, and whether the level is one look's of a sequential
    comparison (whose error is split over its looks) rather than a fixed-seed interval's."""

    kind: Interval = "t"
    level: float = LEVEL
    per_look: bool = False

    @property
    def label(self) -> str:
        """The header's words: `95% t`, `99.17% t per look`, `95% bootstrap BCa`."""
        return f"{self._percent} {INTERVAL_NAMES[self.kind]}" + (" per look" if self.per_look else "")

    @property
    def words(self) -> str:
        """The caption's words: `95% t interval`, `97.5% t interval per look`."""
        return f"{self._percent} {INTERVAL_NAMES[self.kind]} interval" + (" per look" if self.per_look else "")

    @property
    def seeds_needed(self) -> str:
        """The caption's words on the fewest seeds that can decide at this level (`min_seeds`)."""
        fewest = min_seeds(self.level)
        return f"which takes at least {fewest} seeds" if fewest else "which no number of seeds reaches"

    @property
    def _percent(self) -> str:
        return f"{100 * self.level:.2f}".rstrip("0").rstrip(".") + "%"

    def columns(self) -> dict:
        """The CSV's columns naming the intervals, so a table read without its caption still says what they are."""
        return {"interval_kind": self.kind, "interval_level": self.level, "interval_per_look": self.per_look}


INTERVAL_COLUMNS = tuple(IntervalLevel().columns())


@dataclass(frozen=True)
class PairedDifference:
    mean: float  # mean over the shared seeds of (method - reference)
    low: float  # the interval's ends; NaN with no spread (under two seeds, or all equal) or none computable
    high: float
    seeds: int
    excludes_zero: Optional[bool]  # decided (`decides`); None when there is no interval
    sign_flip_p: float  # the exact sign-flip test's p of mean 0; NaN without a seed


def has_spread(diffs: np.ndarray) -> np.ndarray:
    """Per row of `diffs` (rows: comparisons, columns: seeds): at least two differences, not all equal."""
    if diffs.shape[1] < 2:
        return np.zeros(len(diffs), dtype=bool)
    scale = np.maximum(1.0, np.abs(diffs).max(axis=1))
    return np.ptp(diffs, axis=1) > TIE * scale


@lru_cache(maxsize=None)
def sign_patterns(n: int) -> np.ndarray:
    """The sign vectors the sign-flip test tries on n differences, the observed one (all +1) first.

    All 2^n up to EXACT_SIGN_FLIPS seeds; beyond, the observed one and SAMPLED_SIGN_FLIPS seeded draws, whose
    p = (1 + hits) / (draws + 1) keeps the test's error within its level (Phipson & Smyth 2010).
    """
    if n <= EXACT_SIGN_FLIPS:
        patterns = 1.0 - 2.0 * ((np.arange(2**n)[:, None] >> np.arange(n)) & 1)
    else:
        draws = np.random.default_rng(0).choice([-1.0, 1.0], size=(SAMPLED_SIGN_FLIPS, n))
        patterns = np.vstack([np.ones((1, n)), draws])
    patterns.setflags(write=False)  # cached: shared by every caller
    return patterns


def min_sign_flip_p(n: int) -> float:
    """The smallest p the sign-flip test can give on n differences (every one with the same sign)."""
    return 2.0 / 2**n if n <= EXACT_SIGN_FLIPS else 1.0 / (SAMPLED_SIGN_FLIPS + 1)


def min_seeds(level: float) -> Optional[int]:
    """The fewest seeds on which a difference can be decided at `level` (6 at 95 %); None if none can."""
    return next((n for n in range(2, EXACT_SIGN_FLIPS + 2) if min_sign_flip_p(n) <= 1 - level), None)


def sign_flip_p(diffs: np.ndarray) -> np.ndarray:
    """Per row of `diffs`, the two-sided p of the exact sign-flip test of mean 0: the share of sign patterns
    whose |sum| reaches the observed |sum| (ties within float rounding count as reaching it)."""
    patterns = sign_patterns(diffs.shape[1])
    reach = np.abs(diffs.sum(axis=1)) - TIE * np.maximum(1.0, np.abs(diffs).sum(axis=1))
    rows = max(1, _BLOCK // len(patterns))
    p = np.empty(len(diffs))
    for start in range(0, len(diffs), rows):
        block = slice(start, start + rows)
        p[block] = (np.abs(diffs[block] @ patterns.T) >= reach[block, None]).mean(axis=1)
    return p


def decides(diffs: np.ndarray, low: np.ndarray, high: np.ndarray, level: float) -> np.ndarray:
    """Per row of `diffs` with its interval [low, high]: whether the difference counts as decided (≠ 0).

    The differences have a spread, the interval excludes 0, and the sign-flip test rejects at 1 - level (see
    the module's docstring); the test runs only where the rest holds.
    """
    decided = has_spread(diffs) & ((low > 0) | (high < 0))
    if decided.any():
        decided[decided] = sign_flip_p(diffs[decided]) <= (1 - level) * (1 + 1e-12)
    return decided


def t_interval(diffs: np.ndarray, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Per row of `diffs`, the paired `level` t interval of the mean (scipy's `ttest_rel`); NaN under 2 seeds."""
    n = diffs.shape[1]
    if n < 2:
        return np.full(len(diffs), math.nan), np.full(len(diffs), math.nan)
    mean = diffs.mean(axis=1)
    half = stats.t.ppf(0.5 + level / 2, n - 1) * diffs.std(axis=1, ddof=1) / math.sqrt(n)
    return mean - half, mean + half


def t_decides(diffs: np.ndarray, level: float) -> np.ndarray:
    """`decides` with the t interval, vectorised over rows: the sequential rule and its simulation."""
    return decides(diffs, *t_interval(diffs, level), level)


def _bootstrap_interval(diffs: np.ndarray, level: float, seed: int) -> tuple[float, float]:
    with warnings.catch_warnings():  # a BCa interval that cannot be computed is NaN, handled by the caller
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        ci = stats.bootstrap(
            (diffs,),
            np.mean,
            confidence_level=level,
            method="BCa",
            n_resamples=BOOTSTRAP_RESAMPLES,
            rng=np.random.default_rng(seed),
        ).confidence_interval
    return float(ci.low), float(ci.high)


def paired_difference(
    values: Mapping[int, float],
    reference: Mapping[int, float],
    interval: Interval = "t",
    level: float = LEVEL,
    seed: int = 0,
) -> PairedDifference:
    """(values - reference) over the seeds both have, with a `level` interval for its mean and the decision.

    `t`: the paired t interval, which assumes roughly normal differences; `bootstrap`: the BCa interval of the
    mean over resampled differences (`seed` fixes the resamples), which corrects the percentile interval's bias
    and skew but, on 3-5 seeds, still cannot reach past the observed differences. Differences without a spread
    (one, or all equal) have no interval, nor does one scipy cannot compute (NaN).
    """
    shared = sorted(set(values) & set(reference))
    pairs = np.array([(values[s], reference[s]) for s in shared], dtype=float).reshape(-1, 2)
    diffs = pairs[:, 0] - pairs[:, 1]
    diffs = diffs[~np.isnan(diffs)]
    n = len(diffs)
    if n == 0:
        return PairedDifference(math.nan, math.nan, math.nan, 0, None, math.nan)
    mean, p = float(diffs.mean()), float(sign_flip_p(diffs[None])[0])
    if not has_spread(diffs[None])[0]:
        return PairedDifference(mean, math.nan, math.nan, n, None, p)
    if interval == "t":
        low, high = (float(end[0]) for end in t_interval(diffs[None], level))
    else:
        low, high = _bootstrap_interval(diffs, level, seed)
    if math.isnan(low) or math.isnan(high):
        return PairedDifference(mean, math.nan, math.nan, n, None, p)
    decided = bool(decides(diffs[None], np.array([low]), np.array([high]), level)[0])
    return PairedDifference(mean, low, high, n, decided, p)


def difference_columns(
    values: Mapping[int, float],
    reference: Mapping[int, float],
    ref: str,
    is_reference: bool,
    intervals: IntervalLevel = IntervalLevel(),
) -> dict:
    """A table row's `vs_{ref}_*` columns: its paired difference against `ref` over the seeds both have
    (empty for `ref` itself and where the two share no seed)."""
    d = paired_difference(values, reference, intervals.kind, intervals.level)
    none = is_reference or d.seeds == 0
    return {
        f"vs_{ref}_mean_%": math.nan if none else d.mean,
        f"vs_{ref}_ci_low_%": math.nan if none else d.low,
        f"vs_{ref}_ci_high_%": math.nan if none else d.high,
        f"vs_{ref}_excludes_0": None if none else d.excludes_zero,
        f"vs_{ref}_sign_flip_p": math.nan if none else d.sign_flip_p,
        f"vs_{ref}_pairs": 0 if none else d.seeds,
    }


def table_references(columns) -> list[str]:
    """The references a table has `vs_{ref}_*` columns for, in column order: read from the table itself, so
    its display, caption and logged metrics follow whatever references it was built with (a CSV read back too)."""
    return [c[len("vs_") : -len("_mean_%")] for c in columns if c.startswith("vs_") and c.endswith("_mean_%")]


def references_words(references, suffix: str = "") -> tuple[str, str]:
    """The caption's words for the paired columns: ("`vs_kd` and `vs_ce`", "kd (ce)") for [kd, ce]; `suffix`
    follows each reference's name ("'s": "kd's (ce's)")."""
    names = [f"`vs_{ref}`" for ref in references]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    named = [ref + suffix for ref in references]
    against = named[0] + (f" ({', '.join(named[1:])})" if len(named) > 1 else "")
    return listed, against


def paired_column_names(references) -> tuple[str, ...]:
    """The `vs_{ref}_*` columns of each reference, in the order `difference_columns` gives them."""
    parts = ("mean_%", "ci_low_%", "ci_high_%", "excludes_0", "sign_flip_p", "pairs")
    return tuple(f"vs_{ref}_{part}" for ref in references for part in parts)
