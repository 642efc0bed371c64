"""`python -m orchestrator.sync FOLDER [--tracking-uri URI]`: send the MLflow writes a sweep or run kept in
its journal (FOLDER/mlflow-journal) while the tracking server was away. Sending twice sends nothing new."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional

from orchestrator.cli import run_main
from orchestrator.journal import JOURNAL_FOLDER, JournalFiles
from orchestrator.sender import Sender, short_error
from trainables.config import ConfigError


def journal_files(folder: str) -> JournalFiles:
    path = Path(folder)
    for candidate in (path / JOURNAL_FOLDER, path):
        if JournalFiles(candidate).exists():
            return JournalFiles(candidate)
    raise ConfigError(
        f"{folder} holds no MLflow journal ({JOURNAL_FOLDER}/): give a sweep folder "
        "(STORAGE/sweeps/NAME) or a run folder that the command printed"
    )


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m orchestrator.sync", description=__doc__.splitlines()[0])
    p.add_argument("folder", help="the sweep's or run's folder, as the line that kept the writes named it")
    p.add_argument("--tracking-uri", help="send to this server instead of the one the journal was written for")
    args = p.parse_args(argv)
    files = journal_files(args.folder)
    uri = args.tracking_uri or files.tracking_uri()
    if not uri:
        raise ConfigError(f"{files.folder} does not say which tracking server it was written for: give --tracking-uri")
    before = files.unsent()
    if not before:
        print(f"nothing to send: MLflow at {uri} has every write of {files.folder}")
        return 0
    sender = Sender(files, uri)
    try:
        sender.send_pending()
    except Exception as err:  # noqa: BLE001 - the server is still away: what is left stays kept
        left = files.unsent()
        print(
            f"error: MLflow at {uri} does not answer ({short_error(err)}): sent {before - left} of {before} "
            f"writes; the other {left} stay in {files.folder}: run this again when it answers",
            file=sys.stderr,
        )
        return 1
    print(
        f"sent {before} writes to MLflow at {uri}"
        + (f"; {sender.rejected} refused, kept in {files.folder / 'rejected.jsonl'}" if sender.rejected else "")
    )
    return 0


if __name__ == "__main__":
    run_main(main)
