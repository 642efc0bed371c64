"""The teacher's weight w(x) across `loss.threshold`, before any trial: what a threshold range gates out.

Users pick the search range of `loss.threshold` blind: a range above every sample's uncertainty gates
nothing, one below most of it leaves the teacher little to say. Once the teacher is cached, its
training-set logits tell: the plan prints the share of samples gated out and the mean w at the range's
ends and middle, and the parent run gets the whole curve (`teacher_gating.png`, `teacher_gating.csv`)
and those figures as metrics. The maths is `trainables.losses`' own, so the view is what trials compute.

This module computes the curve (torch); which thresholds a spec shows is `shown_thresholds`, the plan's lines
from the teacher cache `plan_view`, the cached logits `cached_logits`, the plot `orchestrator.results`'.
"""

from __future__ import annotations

from typing import Iterable

import pandas as pd
import torch

from orchestrator.spec import Spec
from orchestrator.teacher.shown_thresholds import (
    THRESHOLD_KEY,
    WEIGHTING_KEY,
    shown_weighting,
    thresholds_to_show,
)
from trainables.losses import normalized_entropy, teacher_certainty
from trainables.methods import GATED_WEIGHTINGS

METRIC_PREFIX = "teacher_gate"
GRID = tuple(i / 100 for i in range(1, 101))  # the plot's thresholds: (0, 1] in steps of 0.01


def gating_curve(train_logits: torch.Tensor, weighting: str, thresholds: Iterable[float]) -> pd.DataFrame:
    """Per threshold: the share of samples gated out (u > threshold) and the mean w over all samples (float64).

    Gated samples count as w = 0 in the mean, as they do in the loss; a weighting that does not gate (`none`,
    `entropy`) gates nothing, as `students_loss` reports it. u and the ungated w come from `trainables.losses`
    once, and each threshold only applies the loss's gate (compared in float32, as there): recomputing the
    entropies per threshold took two minutes for a 100-point curve over ImageNet-100's training set.
    """
    u = normalized_entropy(train_logits)
    w = teacher_certainty(train_logits, weighting, None).double()
    never = torch.zeros_like(u, dtype=torch.bool)
    rows = []
    for t in thresholds:
        gated = u > float(t) if weighting in GATED_WEIGHTINGS else never
        rows.append(
            {
                "threshold": float(t),
                "share_gated": gated.double().mean().item(),
                "mean_weight": w.masked_fill(gated, 0.0).mean().item(),
            }
        )
    return pd.DataFrame(rows, columns=["threshold", "share_gated", "mean_weight"], dtype="float64")


def _header(spec: Spec, weighting: str, samples: int) -> str:
    line = f"teacher weight w by {THRESHOLD_KEY} on its {samples:,} training samples, weighting {weighting}"
    if WEIGHTING_KEY in spec.search:
        line += f" ({WEIGHTING_KEY} is searched: shown for {weighting})"
    elif weighting not in GATED_WEIGHTINGS:
        line += " (it does not gate: the threshold changes nothing)"
    return line + ":"


def shown_points(spec: Spec, train_logits: torch.Tensor) -> pd.DataFrame:
    """The curve at the thresholds to show, indexed by their labels (low, mid, high; threshold; or a choice)."""
    shown = thresholds_to_show(spec)
    return gating_curve(train_logits, shown_weighting(spec), shown.values()).set_axis(list(shown), axis=0)


def plan_lines(spec: Spec, train_logits: torch.Tensor) -> list[str]:
    """A header and one line per threshold to show, e.g. `teacher weight at loss.threshold 0.300 (low): 42.1 %
    of training samples gated out, mean w 0.412`; [] when the spec sets and searches no threshold."""
    points = shown_points(spec, train_logits)
    if points.empty:
        return []
    lines = [_header(spec, shown_weighting(spec), len(train_logits))]
    for label, row in points.iterrows():
        which = f" ({label})" if label in ("low", "mid", "high") else ""
        lines.append(
            f"teacher weight at {THRESHOLD_KEY} {row.threshold:.3f}{which}: {100 * row.share_gated:.1f} % "
            f"of training samples gated out, mean w {row.mean_weight:.3f}"
        )
    return lines
