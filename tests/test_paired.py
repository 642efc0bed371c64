"""The rule that decides a paired difference (`orchestrator.results.paired`): equal differences never decide, the
sign-flip test is exact, and every table and the sequential rule decide alike (no Ray, no MLflow)."""

import itertools
import math

import numpy as np
import pytest

from orchestrator.results import IntervalLevel, decides, has_spread, min_seeds, paired_difference, t_interval
from orchestrator.results.paired import EXACT_SIGN_FLIPS, sign_flip_p, t_decides

IMAGE = 100 / 360  # one validation image of the digits, in points


def lattice(images: list[int], correct: int = 330) -> tuple[dict, dict]:
    """Top-1 in points as the tables compute it (correct / 360 * 100): per seed the reference's, one image more
    on each seed, and the method's, `images[seed]` images above it."""
    reference = {s: (correct + s) / 360 * 100 for s in range(len(images))}
    return {s: (correct + s + k) / 360 * 100 for s, k in enumerate(images)}, reference


@pytest.mark.parametrize("interval", ["t", "bootstrap"])
@pytest.mark.parametrize("images", [[1, 1], [1, 1, 1], [3] * 5, [-2] * 8, [1] * 12, [0, 0, 0]])
def test_equal_differences_never_decide(interval, images):
    values, reference = lattice(images)
    d = paired_difference(values, reference, interval)
    assert d.excludes_zero is None and math.isnan(d.low) and math.isnan(d.high)
    assert d.mean == pytest.approx(images[0] * IMAGE) and d.seeds == len(images)


def test_has_spread_tells_float_rounding_from_one_image():
    values, reference = lattice([2, 2, 2, 2])
    diffs = np.array([[values[s] - reference[s] for s in values]])
    assert np.ptp(diffs) > 0  # the subtraction's rounding leaves the equal differences a little apart ...
    assert not has_spread(diffs)[0]  # ... which is no spread
    assert has_spread(np.array([[2 * IMAGE, 3 * IMAGE], [0.0, 100 / 1e6]])).all()  # one image of a million
    assert not has_spread(np.array([[1.0]]))[0]


@pytest.mark.parametrize("n", [1, 2, 5, 8])
def test_sign_flip_p_is_the_share_of_sign_patterns_reaching_the_observed_sum(n):
    rng = np.random.default_rng(n)
    rows = np.vstack([rng.integers(-3, 4, (20, n)) * IMAGE, rng.standard_normal((20, n))])
    expected = [
        np.mean([abs(np.dot(signs, row)) >= abs(row.sum()) - 1e-9 for signs in itertools.product([-1, 1], repeat=n)])
        for row in rows
    ]
    assert sign_flip_p(rows) == pytest.approx(expected)


def test_a_decision_needs_enough_seeds_for_the_sign_flip_test():
    assert [min_seeds(level) for level in (0.95, 0.975, 0.99, 1 - 0.05 / 6)] == [6, 7, 8, 8]
    one_sign = np.array([[1.0, 1.2, 0.9, 1.1, 1.0]])  # far from 0 by the t interval, but 5 seeds
    assert t_interval(one_sign, 0.95)[0][0] > 0 and not t_decides(one_sign, 0.95)[0]
    assert t_decides(np.array([[1.0, 1.2, 0.9, 1.1, 1.0, 1.05]]), 0.95)[0]
    sampled = np.full((1, EXACT_SIGN_FLIPS + 4), 1.0) + np.linspace(0, 0.1, EXACT_SIGN_FLIPS + 4)
    assert 0 < sign_flip_p(sampled)[0] < 1e-3  # beyond the exact patterns: a sample, the observed one counted
    assert t_decides(sampled, 0.999)[0]


def test_the_vectorised_rule_is_the_tables_rule():
    rng = np.random.default_rng(1)
    rows = np.vstack(
        [
            rng.normal(0.8, 1.0, size=(200, 7)),
            rng.integers(-1, 4, size=(200, 7)) * IMAGE,  # lattice, with ties
            np.full((3, 7), 2 * IMAGE),  # all equal
        ]
    )
    level = 0.975
    vectorised = t_decides(rows, level)
    table = [
        paired_difference(dict(enumerate(row)), dict.fromkeys(range(7), 0.0), "t", level).excludes_zero is True
        for row in rows
    ]
    assert list(vectorised) == table and 0 < vectorised.sum() < len(table)
    low, high = t_interval(rows, level)
    assert not decides(rows, np.full(len(rows), np.nan), high, level).any()  # no interval, no decision
    assert (decides(rows, low, high, level) == vectorised).all()


def test_interval_labels_name_kind_level_and_look():
    assert IntervalLevel().label == "95% t" and IntervalLevel().words == "95% t interval"
    assert IntervalLevel("t", 1 - 0.05 / 6, per_look=True).label == "99.17% t per look"
    assert IntervalLevel("t", 0.975, per_look=True).words == "97.5% t interval per look"
    assert IntervalLevel("bootstrap").label == "95% bootstrap BCa"
    assert IntervalLevel("t", 0.975, True).columns() == {
        "interval_kind": "t",
        "interval_level": 0.975,
        "interval_per_look": True,
    }
