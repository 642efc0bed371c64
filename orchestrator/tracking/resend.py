"""Sending the MLflow writes a sweep or run kept in its journal while the tracking server was away: what
`python -m orchestrator.sync FOLDER` does. Sending twice sends nothing new; each server keeps its own place in the
journal, so sending to another server sends it all there, in the experiment of the same name.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

from orchestrator.tracking.journal import JOURNAL_FOLDER, REJECTED, JournalFiles
from orchestrator.tracking.sender import Sender, short_error
from trainables.config import ConfigError

SYNC_WAIT_S = 30.0  # how long a sync waits for another sender of the journal (one batch of the sweep's thread)


def journal_files(folder: str) -> JournalFiles:
    path = Path(folder)
    for candidate in (path / JOURNAL_FOLDER, path):
        if JournalFiles(candidate).exists():
            return JournalFiles(candidate)
    raise ConfigError(
        f"{folder} holds no MLflow journal ({JOURNAL_FOLDER}/): give a sweep folder "
        "(STORAGE/sweeps/NAME) or a run folder that the command printed"
    )


def send_kept(folder: str, tracking_uri: Optional[str] = None, wait: Optional[float] = None) -> int:
    """Send the journal's unsent writes (to `tracking_uri`, else the server it was written for); the exit status:
    0 when every write is sent or refused for good, 1 when the server is still away (what is left stays kept).
    Another process sending the journal for longer than `wait` seconds (default SYNC_WAIT_S), or its folder
    taking no writes: one line, exit 2 (ConfigError)."""
    files = journal_files(folder)
    files.repair()
    uri = tracking_uri or files.tracking_uri()
    if not uri:
        raise ConfigError(f"{files.folder} does not say which tracking server it was written for: give --tracking-uri")
    before = files.unsent(uri)
    if not before:
        print(f"nothing to send: MLflow at {uri} has every write of {files.folder}")
        return 0
    sender = Sender(files, uri)
    try:
        handled = sender.send_pending(SYNC_WAIT_S if wait is None else wait)
    except ConfigError:
        raise
    except Exception as err:  # noqa: BLE001 - the server is still away: what is left stays kept
        left = files.unsent(uri)
        print(
            f"error: MLflow at {uri} does not answer ({short_error(err)}): sent {before - left} of {before} "
            f"writes; the other {left} stay in {files.folder}: run this again when it answers",
            file=sys.stderr,
        )
        return 1
    if not handled:
        print(f"nothing to send: MLflow at {uri} has every write of {files.folder}")
        return 0
    print(
        f"sent {handled - sender.rejected} writes to MLflow at {uri}"
        + (f"; {sender.rejected} not taken, kept in {files.folder / REJECTED} with why" if sender.rejected else "")
    )
    return 0
