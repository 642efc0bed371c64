"""`python -m orchestrator.sweep SPEC.yaml [--set k=v] [--address A] [--resume] [--dry-run]`.

Ray Tune searches the spec's `search` section with Optuna (its study stored in the sweep folder),
ASHA stops weak trials, each trial is one TorchTrainer, and MLflow gets a parent run with one nested
run per trial. The teacher is prepared once, before any trial.
"""

from __future__ import annotations

import argparse
from typing import Optional

from orchestrator import search
from orchestrator.cli import run_main, spec_parser, summary


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = spec_parser("python -m orchestrator.sweep", summary(__doc__))
    p.add_argument("--resume", action="store_true", help="continue the newest interrupted sweep of this spec")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: take training settings changed since the sweep started (named in the plan)",
    )
    p.add_argument(
        "--from-sweep",
        metavar="NAME",
        help="comparison: take the best values of this earlier sweep (its folder or spec name) from MLflow",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate the spec, check its inputs and print the plan; start nothing"
    )
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    return search.launch_sweep(
        args.spec,
        args.overrides,
        address=args.address,
        mlflow_uri=args.tracking_uri,
        skip_data_check=args.skip_data_check,
        resume=args.resume,
        force=args.force,
        earlier_sweep=args.from_sweep,
        dry_run=args.dry_run,
    )


if __name__ == "__main__":
    run_main(main)
