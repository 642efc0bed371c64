"""The names of the metrics the loop reports every epoch, derived from the code that computes them.

The driver checks `tune.metric` against these before any trial starts: a metric that no epoch reports
would otherwise fail every trial. No Ray or MLflow here.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch

from trainables.config import RunConfig
from trainables.losses import needs_teacher, resolve_method, students_loss

# teacher forwards in the epoch's training steps (this worker): 0 with cached soft labels or a bank
TEACHER_FORWARDS_KEY = "teacher_forwards"
EPOCH_KEYS = ("epoch", "lr", "images_per_s", "epoch_seconds", TEACHER_FORWARDS_KEY)
VAL_KEYS = ("val_top1", "val_top5", "val_ece")  # per student, and per teacher when there is one
MEAN_KEY = "val_top1_mean"  # the mean of the students' val_top1
BAD_IMAGES_KEY = "bad_images"  # with data.skip_bad_images: images skipped in the epoch


def train_key(part: str) -> str:
    """A loss part as the loop reports it: `resnet18/kd` -> `resnet18/train_kd`; shared keys unchanged."""
    return part.replace("/", "/train_", 1) if "/" in part else part


def train_keys(names: Sequence[str], loss_settings: Mapping[str, Any]) -> list[str]:
    """The training keys: the parts `students_loss` returns on a dummy batch, as the loop names them."""
    logits = [torch.zeros(2, 2) for _ in names]
    teacher = torch.zeros(2, 2) if needs_teacher(loss_settings) else None
    parts = students_loss(logits, torch.zeros(2, dtype=torch.long), teacher, names=list(names), **loss_settings)
    return [train_key(k) for k in parts if k != "total"]


def epoch_metric_names(cfg: RunConfig) -> list[str]:
    """Every metric that each epoch's report holds (the last epoch adds model profiles)."""
    settings = resolve_method(cfg.loss.settings())
    names = cfg.students.names
    keys = [*EPOCH_KEYS, *train_keys(names, settings), MEAN_KEY]
    evaluated = [*names, "teacher"] if needs_teacher(settings) else list(names)
    keys += [f"{name}/{key}" for name in evaluated for key in VAL_KEYS]
    if cfg.data.skip_bad_images:
        keys.append(BAD_IMAGES_KEY)
    return keys
