"""How unsure the teacher is, and whether it is unsure where it errs: its training-set uncertainty summary (logged
on a sweep's parent run before any trial) and its validation figures, from its logits and the labels.

Pure functions: `python -m orchestrator.teacher_check` prints them for one teacher, and a comparison's report logs
them on the parent run beside the per-bin table (`orchestrator.results.certainty_bins`).
"""

from __future__ import annotations

import math
from typing import Iterable, Optional

import torch

from trainables.losses import normalized_entropy

PREFIX = "teacher_u/val_"
UNSURE_U = 0.3  # a teacher is "unsure" on a sample above this u (the hard setting's requirement)


def teacher_uncertainty(train_logits, threshold: Optional[float] = None) -> dict[str, float]:
    """The teacher's training-set u = H / log C: mean, quantiles, share above 0.3 and above the threshold.

    Logged on the parent run: whether the uncertainty weighting can matter at all on this data (a teacher
    sure of every sample gives every sample w close to 1, and every weighting is then plain KD). Metrics,
    to sort and filter runs by, so not under `teacher/`, whose figures are logged as params.
    """
    u = normalized_entropy(torch.as_tensor(train_logits)).double()
    summary = {
        "teacher_u/train_mean": u.mean().item(),
        **{f"teacher_u/train_p{q}": u.quantile(q / 100).item() for q in (10, 50, 90)},
        f"teacher_u/train_share_above_{UNSURE_U}": (u > UNSURE_U).double().mean().item(),
    }
    if threshold is not None:
        summary["teacher_u/train_share_above_threshold"] = (u > threshold).double().mean().item()
    return summary


def error_auroc(u: torch.Tensor, wrong: torch.Tensor) -> float:
    """The AUROC of u as a score for the teacher's own errors; NaN when it makes no error or no correct answer."""
    from sklearn.metrics import roc_auc_score

    wrong = torch.as_tensor(wrong).bool()
    return (
        float(roc_auc_score(wrong.numpy(), torch.as_tensor(u).double().numpy()))
        if 0 < wrong.sum() < len(wrong)
        else math.nan
    )


def teacher_val_summary(
    val_logits, labels, threshold: Optional[float] = None, blind_classes: Iterable[int] = ()
) -> dict[str, float]:
    """The teacher's figures on the validation set (fractions), keyed `teacher_u/val_*` like the training-set
    summary of `teacher_uncertainty`."""
    logits, labels = torch.as_tensor(val_logits).float(), torch.as_tensor(labels)
    u = normalized_entropy(logits).double()
    wrong = logits.argmax(1) != labels
    out = {
        f"{PREFIX}top1": 1 - wrong.double().mean().item(),
        f"{PREFIX}error_auroc": error_auroc(u, wrong),
        f"{PREFIX}mean": u.mean().item(),
        f"{PREFIX}share_above_{UNSURE_U}": (u > UNSURE_U).double().mean().item(),
    }
    if threshold is not None:
        out[f"{PREFIX}share_above_threshold"] = (u > threshold).double().mean().item()
    blind = sorted({int(c) for c in blind_classes})
    if blind:
        inside = torch.isin(labels, torch.tensor(blind))
        for part, mask in (("blind", inside), ("elsewhere", ~inside)):
            out[f"{PREFIX}{part}_top1"] = 1 - wrong[mask].double().mean().item() if mask.any() else math.nan
            out[f"{PREFIX}{part}_mean"] = u[mask].mean().item() if mask.any() else math.nan
    return out


def summary_lines(summary: dict[str, float], blind_classes: Iterable[int] = ()) -> list[str]:
    """The summary for reading, one figure per line."""
    names = {
        "top1": "top-1",
        "error_auroc": "AUROC of u for its errors",
        "mean": "mean u",
        f"share_above_{UNSURE_U}": f"share above u = {UNSURE_U}",
        "share_above_threshold": "share above loss.threshold",
        "blind_top1": "top-1 on the blind-spot classes " + ",".join(map(str, sorted(blind_classes))),
        "blind_mean": "mean u on the blind-spot classes",
        "elsewhere_top1": "top-1 elsewhere",
        "elsewhere_mean": "mean u elsewhere",
    }
    return [f"{names[key.removeprefix(PREFIX)]}: {value:.4f}" for key, value in summary.items()]
