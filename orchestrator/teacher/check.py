"""Is the teacher unsure where it errs? What `python -m orchestrator.teacher_check SPEC.yaml` does: trains (or takes
from the cache) the spec's teacher as a sweep would, then prints its validation figures (`quality`) and its
training-set uncertainty. The embedded data only: the check reads the validation images on this machine.
"""

from __future__ import annotations

from typing import Optional

import torch

from orchestrator.execution import start_ray, stop_own_ray
from orchestrator.spec import load_spec
from orchestrator.teacher.preparation import prepare_teacher
from orchestrator.teacher.quality import summary_lines, teacher_uncertainty, teacher_val_summary
from trainables.config import ConfigError
from trainables.data import build_datasets
from trainables.teacher import compute_logits, load_soft_labels, load_teacher
from trainables.teacher_cache import read_meta


def check_teacher(spec_path: str, overrides: list[str], address: Optional[str] = None) -> int:
    """Print the teacher's figures; the exit status."""
    spec = load_spec(spec_path, overrides).resolved()
    if spec.data.name == "imagefolder":
        raise ConfigError("teacher_check reads the validation set on this machine: it is for digits and synthetic")
    start_ray(address)
    try:
        folder = prepare_teacher(spec).teacher_dir
    finally:
        stop_own_ray()
    if folder is None:
        raise ConfigError(f"loss.method {spec.loss.method} uses no teacher: set a method with a teacher")
    num_classes = read_meta(folder)["num_classes"]
    _, val, _ = build_datasets(spec.data, spec.data.split_seed)
    teacher = load_teacher(folder, spec.teacher.arch, num_classes, spec.data.image_size)
    labels = torch.tensor([val[i][1] for i in range(len(val))])
    blind = spec.teacher.blind_classes()
    print(f"\nteacher {spec.teacher.arch} ({folder}) on the validation set ({len(labels)} images):")
    for line in summary_lines(
        teacher_val_summary(compute_logits(teacher, val), labels, spec.loss.threshold, blind), blind
    ):
        print(f"  {line}")
    train_logits = load_soft_labels(folder)
    if train_logits is not None:
        train = teacher_uncertainty(train_logits, spec.loss.threshold)
        print(
            "on the students' training set: "
            + ", ".join(f"{k.removeprefix('teacher_u/train_')} {v:.3f}" for k, v in train.items())
        )
    return 0
