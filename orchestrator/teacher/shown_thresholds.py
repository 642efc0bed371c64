"""Which thresholds the gating view shows for a spec, and for which weighting: its searched range's ends and
middle, a categorical search's choices, or the fixed `loss.threshold`. Pure functions on the spec, no torch.
"""

from __future__ import annotations

import math
from typing import Optional

from orchestrator.spec import CategoricalParam, Spec
from trainables.methods import GATED_WEIGHTINGS, resolve_method

THRESHOLD_KEY = "loss.threshold"
WEIGHTING_KEY = "loss.weighting"


def _valid(value: object) -> bool:
    """A threshold a trial can run with; others (a null choice, 0, a string) show nothing."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < float(value) <= 1.0


def thresholds_to_show(spec: Spec) -> dict[str, float]:
    """Label -> threshold: a searched range's low, middle (geometric on a log scale) and high ends, a categorical
    search's choices, or the fixed `loss.threshold`; empty when no threshold is set or searched."""
    param = spec.search.get(THRESHOLD_KEY)
    if isinstance(param, CategoricalParam):
        shown = {f"{c:g}": float(c) for c in param.choices if _valid(c)}
    elif param is not None:
        mid = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
        shown = {"low": param.low, "mid": mid, "high": param.high}
    else:
        shown = {"threshold": spec.loss.threshold}
    return {label: float(t) for label, t in shown.items() if _valid(t)}


def search_range(spec: Spec) -> Optional[tuple[float, float]]:
    """The searched span of `loss.threshold` (a categorical's smallest and largest choice), or None."""
    param = spec.search.get(THRESHOLD_KEY)
    if isinstance(param, CategoricalParam):
        values = list(thresholds_to_show(spec).values())
        return (min(values), max(values)) if len(values) > 1 else None
    return None if param is None else (float(param.low), float(param.high))


def shown_weighting(spec: Spec) -> str:
    """The weighting the view is computed for: the one the spec's method trains with.

    When `loss.weighting` is searched, trials differ, and only a gating weighting shows what the threshold
    does: the spec's own if it gates, else the first gating choice, else `entropy+threshold`. One curve is
    shown rather than one per choice, since the plan is meant to be read at a glance.
    """
    fixed = resolve_method(spec.loss.settings())["weighting"]  # a method may force one (kd: none)
    param = spec.search.get(WEIGHTING_KEY)
    if not isinstance(param, CategoricalParam):
        return fixed
    return next((w for w in [fixed, *param.choices] if w in GATED_WEIGHTINGS), "entropy+threshold")
