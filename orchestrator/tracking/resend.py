"""Sending the MLflow writes a sweep or run kept in its journal while the tracking server was away: what
`python -m orchestrator.sync FOLDER` does. Sending twice sends nothing new.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from orchestrator.tracking.journal import JOURNAL_FOLDER, JournalFiles
from orchestrator.tracking.sender import Sender, short_error
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


def send_kept(folder: str, tracking_uri: Optional[str] = None) -> int:
    """Send the journal's unsent writes (to `tracking_uri`, else the server it was written for); the exit status:
    0 when every write is sent, 1 when the server is still away (what is left stays kept)."""
    files = journal_files(folder)
    uri = tracking_uri or files.tracking_uri()
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
