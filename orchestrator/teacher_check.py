"""`python -m orchestrator.teacher_check SPEC.yaml [--set key=value ...]`: is the teacher unsure where it errs?

Uncertainty weighting can only help when the teacher's u = H / log C is high on the samples it gets wrong
and low elsewhere. This trains (or takes from the cache) the spec's teacher as a sweep would, then prints
its validation figures: top-1, the AUROC of u for its own errors (1: every error is less sure than every
correct answer; 0.5: u says nothing), the share of samples above u = 0.3 and above `loss.threshold`, and,
when `teacher.data` gives it blind-spot classes, its top-1 and mean u on them and elsewhere. The embedded
data only: the check reads the validation images on this machine. Comparisons log the same figures. The work is
`orchestrator.teacher.check`.
"""

from __future__ import annotations

import argparse
from typing import Optional

from orchestrator import teacher
from orchestrator.cli import run_main, spec_parser, summary


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    # it logs nothing to MLflow and reads the validation images here: no --tracking-uri, no --skip-data-check
    parser = spec_parser("python -m orchestrator.teacher_check", summary(__doc__), tracking=False, data_check=False)
    return parser.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    return teacher.check_teacher(args.spec, args.overrides, args.address)


if __name__ == "__main__":
    run_main(main)
