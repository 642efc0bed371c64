"""`python -m orchestrator.teacher_check SPEC.yaml [--set key=value ...]`: is the teacher unsure where it errs?

Uncertainty weighting can only help when the teacher's u = H / log C is high on the samples it gets wrong
and low elsewhere. This trains (or takes from the cache) the spec's teacher as a sweep would, then prints
its validation figures: top-1, the AUROC of u for its own errors (1: every error is less sure than every
correct answer; 0.5: u says nothing), the share of samples above u = 0.3 and above `loss.threshold`, and,
when `teacher.data` gives it blind-spot classes, its top-1 and mean u on them and elsewhere. The embedded
data only: the check reads the validation images on this machine. Comparisons log the same figures.
"""

from __future__ import annotations

import argparse
from typing import Optional

import torch

from orchestrator.cli import run_main, spec_parser
from orchestrator.comparison import teacher_uncertainty
from orchestrator.execution import start_ray, stop_own_ray
from orchestrator.preparation import prepare_teacher
from orchestrator.spec import load_spec
from orchestrator.teacher_quality import summary_lines, teacher_val_summary
from trainables.config import ConfigError
from trainables.data import build_datasets
from trainables.teacher import compute_logits, load_soft_labels, load_teacher
from trainables.teacher_cache import read_meta


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    return spec_parser("python -m orchestrator.teacher_check", __doc__.splitlines()[0]).parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    spec = load_spec(args.spec, args.overrides).resolved()
    if spec.data.name == "imagefolder":
        raise ConfigError("teacher_check reads the validation set on this machine: it is for digits and synthetic")
    start_ray(args.address)
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


if __name__ == "__main__":
    run_main(main)
