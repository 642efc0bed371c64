"""`python -m orchestrator.sync FOLDER [--tracking-uri URI]`: send the MLflow writes a sweep or run kept in
its journal (FOLDER/mlflow-journal) while the tracking server was away. Sending twice sends nothing new.

The work is `orchestrator.tracking.resend`."""

from __future__ import annotations

import argparse
from typing import Optional

from orchestrator import tracking
from orchestrator.cli import run_main, summary


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.sync", description=summary(__doc__))
    p.add_argument("folder", help="the sweep's or run's folder, as the line that kept the writes named it")
    p.add_argument(
        "--tracking-uri",
        help="send to this server instead of the one the journal was written for (all of it, in the experiment "
        "of the same name)",
    )
    p.add_argument(
        "--wait",
        type=float,
        metavar="SECONDS",
        help="how long to wait for another process sending this journal (default 30)",
    )
    args = p.parse_args(argv)
    return tracking.send_kept(args.folder, args.tracking_uri, args.wait)


if __name__ == "__main__":
    run_main(main)
