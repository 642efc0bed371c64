"""`python -m orchestrator.train SPEC.yaml [--set key=value ...]`: one run of the spec's fixed values.

No search: the spec's `search` and `tune` sections are ignored. The teacher is prepared (or taken
from the cache) first, then one real `TorchTrainer` trains the students and the final figures print.
One MLflow run in the spec's experiment gets the settings, every epoch, the model sizes and the final
predictions. The work is `orchestrator.search.single_run`.
"""

from __future__ import annotations

import argparse
from typing import Optional

from orchestrator import search
from orchestrator.cli import run_main, spec_parser, summary


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = spec_parser("python -m orchestrator.train", summary(__doc__))
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    return search.train_once(
        args.spec,
        args.overrides,
        address=args.address,
        mlflow_uri=args.tracking_uri,
        skip_data_check=args.skip_data_check,
    )


if __name__ == "__main__":
    run_main(main)
