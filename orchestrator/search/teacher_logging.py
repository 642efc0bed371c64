"""The teacher on the sweep's parent run, before the first trial: its training-set logits and uncertainty summary
(whether the weighting has anything to weigh), and its gating curve against `loss.threshold`.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch

from orchestrator.results import TEACHER_LOGITS_ARTIFACT, log_gating_curve
from orchestrator.spec import Spec
from orchestrator.teacher import teacher_uncertainty, train_logits_of
from orchestrator.tracking import SweepTracker
from trainables import storage
from trainables.teacher_cache import SOFT_LABELS_FILE


def log_teacher_uncertainty(tracker: SweepTracker, teacher_dir: Optional[str], threshold: Optional[float]) -> None:
    """The teacher's training-set logits (the comparison's entropy histogram) and their uncertainty summary,
    on the parent run and printed: before any trial, whether the weighting has anything to weigh."""
    soft_labels = storage.local_copy(teacher_dir) / SOFT_LABELS_FILE if teacher_dir else None
    if not (soft_labels and soft_labels.is_file()):
        return
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / TEACHER_LOGITS_ARTIFACT
        shutil.copyfile(soft_labels, target)
        tracker.journal.log_artifact(tracker.parent_id, str(target))
    summary = teacher_uncertainty(torch.load(soft_labels, weights_only=True), threshold)
    tracker.log_metrics(summary)
    print(
        "teacher uncertainty u = H/log C on the training set: "
        + ", ".join(f"{k.removeprefix('teacher_u/train_')} {v:.3f}" for k, v in summary.items())
    )


def log_teacher_gating(tracker: SweepTracker, spec: Spec, teacher_dir: Optional[str]) -> None:
    """The share gated out and the mean teacher weight against `loss.threshold`, on the parent run before the
    first trial (`orchestrator.teacher.gating`): whether the searched range gates anything."""
    logits = train_logits_of(teacher_dir) if teacher_dir else None
    if logits is not None:
        with tempfile.TemporaryDirectory() as tmp:
            log_gating_curve(tracker.journal, tracker.parent_id, spec, logits, tmp)
