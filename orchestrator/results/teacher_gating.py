"""The teacher's gating curve on the parent run: `teacher_gating.png` and `.csv`, and the figures at the thresholds
the spec shows as metrics. The curve is `orchestrator.teacher.gating`'s; this module draws and logs it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import torch

from orchestrator.results.figures import pyplot
from orchestrator.spec import Spec
from orchestrator.teacher import (
    GRID,
    METRIC_PREFIX,
    THRESHOLD_KEY,
    gating_curve,
    search_range,
    shown_points,
    shown_weighting,
)

PLOT_FILE = "teacher_gating.png"
CSV_FILE = "teacher_gating.csv"


def plot_gating_curve(
    curve_df: pd.DataFrame,
    search_range: Optional[tuple[float, float]],
    out_path: str | Path,
    title: Optional[str] = None,
) -> Path:
    """Share gated out and mean w against the threshold, the searched range shaded."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve_df["threshold"], curve_df["share_gated"], color="C3", label="share gated out (u > threshold)")
    ax.plot(curve_df["threshold"], curve_df["mean_weight"], color="C0", label="mean teacher weight w")
    if search_range is not None:
        ax.axvspan(*search_range, color="grey", alpha=0.2, label=f"searched {THRESHOLD_KEY}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{THRESHOLD_KEY} (teacher normalised entropy u = H / log C)")
    ax.set_ylabel("share of training samples / mean w")
    ax.set_title(title or "Teacher weight against the threshold")
    ax.legend()
    out = Path(out_path)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def log_gating_curve(
    journal, parent_run_id: str, spec: Spec, train_logits: torch.Tensor, tmp_dir: str | Path
) -> dict[str, float]:
    """Log the curve on `parent_run_id` (a run of `journal`, an `orchestrator.journal.Journal`):
    `teacher_gating.png` and `.csv` as artifacts,
    and per shown threshold `teacher_gate/share_gated_at_LABEL` and `teacher_gate/mean_w_at_LABEL` (LABEL:
    low, mid, high; threshold; or a categorical choice) as metrics. Logs nothing when no threshold is
    set or searched. Returns the metrics."""
    points = shown_points(spec, train_logits)
    if points.empty:
        return {}
    weighting = shown_weighting(spec)
    out = Path(tmp_dir)
    out.mkdir(parents=True, exist_ok=True)
    curve = gating_curve(train_logits, weighting, GRID)
    curve.to_csv(out / CSV_FILE, index=False)
    plot_gating_curve(
        curve,
        search_range(spec),
        out / PLOT_FILE,
        title=f"{spec.name}: teacher weight ({weighting}), {len(train_logits):,} training samples",
    )
    for name in (PLOT_FILE, CSV_FILE):
        journal.log_artifact(parent_run_id, str(out / name))
    metrics = {}
    for label, row in points.iterrows():
        metrics[f"{METRIC_PREFIX}/share_gated_at_{label}"] = float(row.share_gated)
        metrics[f"{METRIC_PREFIX}/mean_w_at_{label}"] = float(row.mean_weight)
    for key, value in metrics.items():
        journal.log_metric(parent_run_id, key, value)
    return metrics
