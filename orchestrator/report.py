"""`python -m orchestrator.report SWEEP [--tracking-uri URI] [--out DIR]`: rebuild a finished sweep's or
comparison's tables and plots from MLflow alone, training nothing.

SWEEP is a sweep folder's name (`peer-20261126-101500`) or a spec name (its newest sweep).
The sweep driver calls the same code when a comparison ends, so both give the same tables
(`orchestrator.results.sweep_report`).
"""

from __future__ import annotations

import argparse
from typing import Optional

from orchestrator import results
from orchestrator.cli import run_main, summary


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m orchestrator.report", description=summary(__doc__))
    p.add_argument("sweep", help="a sweep folder's name, or a spec name for its newest sweep")
    p.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--out", help="where to write the tables and plots (default: reports/SWEEP)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    return results.rebuild_report(args.sweep, args.tracking_uri, args.out)


if __name__ == "__main__":
    run_main(main)
