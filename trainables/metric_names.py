"""The names of the metrics the loop reports every epoch.

The driver checks `tune.metric` against these before any trial starts: a metric that no epoch reports
would otherwise fail every trial. No torch, Ray or MLflow here, so a dry run checks them without loading torch;
`tests/test_losses.py` holds the loss parts named here to what `trainables.losses.students_loss` returns.
"""

from __future__ import annotations

from typing import Sequence

from trainables.config import RunConfig
from trainables.methods import needs_teacher, resolve_method

# teacher forwards in the epoch's training steps (this worker): 0 with cached soft labels or a bank
TEACHER_FORWARDS_KEY = "teacher_forwards"
EPOCH_KEYS = ("epoch", "lr", "images_per_s", "epoch_seconds", TEACHER_FORWARDS_KEY)
VAL_KEYS = ("val_top1", "val_top5", "val_ece")  # per student, and per teacher when there is one
MEAN_KEY = "val_top1_mean"  # the mean of the students' val_top1
BAD_IMAGES_KEY = "bad_images"  # with data.skip_bad_images: images skipped in the epoch
STUDENT_PARTS = ("ce", "kd", "peer", "total")  # what `students_loss` returns per student, as `{name}/{part}`
SHARED_PARTS = ("teacher_weight", "gated")  # and once for the students together


def train_key(part: str) -> str:
    """A loss part as the loop reports it: `resnet18/kd` -> `resnet18/train_kd`; shared keys unchanged."""
    return part.replace("/", "/train_", 1) if "/" in part else part


def train_keys(names: Sequence[str]) -> list[str]:
    """The training keys: the parts `students_loss` returns (each student's, then the shared ones; not the
    total of all students), as the loop names them. Every method returns the same parts."""
    parts = [f"{name}/{part}" for name in names for part in STUDENT_PARTS] + list(SHARED_PARTS)
    return [train_key(k) for k in parts]


def epoch_metric_names(cfg: RunConfig) -> list[str]:
    """Every metric that each epoch's report holds (the last epoch adds model profiles)."""
    settings = resolve_method(cfg.loss.settings())
    names = cfg.students.names
    keys = [*EPOCH_KEYS, *train_keys(names), MEAN_KEY]
    evaluated = [*names, "teacher"] if needs_teacher(settings) else list(names)
    keys += [f"{name}/{key}" for name in evaluated for key in VAL_KEYS]
    if cfg.data.skip_bad_images:
        keys.append(BAD_IMAGES_KEY)
    return keys
