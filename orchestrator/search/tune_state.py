"""Tune's saved experiment state, kept whole on a storage folder that fills up.

Tune writes its state in the driver's staging folder and copies it onto the storage in place. A disk that
fills during that copy leaves a cut file, and `Tuner.restore` then logs the error and restarts the whole
experiment from nothing: every trial again, without its checkpoints. So while a sweep runs, a copy of the
last whole state is kept beside it (each file written under a temporary name, then renamed: a full disk
leaves the previous copy whole), and a resumed sweep puts that copy back when Tune's own does not read.
A bucket takes an object whole or not at all, so only a storage folder needs this.
"""

from __future__ import annotations

import fnmatch
import json
import os
import pickle
import shutil
from pathlib import Path
from typing import Optional

from ray.tune import Callback

from orchestrator.execution import experiment_folders
from trainables import storage

STATE_FILES = ("experiment_state-*.json", "search_gen_state-*.json", "searcher-state-*.pkl")
KEPT = ".tune-state-kept"


def state_files(folder: Path) -> list[Path]:
    return sorted(p for p in folder.glob("*") if any(fnmatch.fnmatch(p.name, pattern) for pattern in STATE_FILES))


def reads_whole(path: Path) -> bool:
    """Whether the state file loads: Tune's experiment state is JSON, its searcher states are pickles (also
    the one named .json); a cut file loads as neither."""
    data = path.read_bytes()
    for load in (lambda: json.loads(data), lambda: pickle.loads(data)):
        try:
            load()
            return True
        except Exception:  # noqa: BLE001, S112 - either loader failing is expected; both failing is damage
            continue
    return False


class KeepTuneState(Callback):
    """Copies Tune's state from the driver's staging folder to `KEPT` in the experiment's storage folder
    whenever Tune saved anew. Tune's controller saves and calls its callbacks in one thread, so the staging
    files are whole here."""

    def __init__(self):
        self.copied: dict[str, float] = {}

    def on_step_end(self, iteration, trials, **info):
        if not trials:
            return
        local, experiment, staging = experiment_folders(trials[0])
        if not local:
            return
        kept = experiment / KEPT
        for path in state_files(staging):
            stamp = path.stat().st_mtime
            if self.copied.get(path.name) == stamp:
                continue
            try:
                kept.mkdir(exist_ok=True)
                tmp = kept / f".{path.name}.tmp"
                shutil.copyfile(path, tmp)
                os.replace(tmp, kept / path.name)
            except OSError:  # a full or read-only storage: the last whole copy stays; the sweep's guard reports it
                return
            self.copied[path.name] = stamp


def repair_state(location: str) -> Optional[str]:
    """Before Tune restores the experiment at `location`: put the kept copy back when Tune's state does not
    read. Returns a line saying what was done, or None when Tune's state reads (or there is none)."""
    if storage.is_uri(location):
        return None
    folder = Path(location)
    damaged = [p.name for p in state_files(folder) if not reads_whole(p)]
    if not damaged:
        return None
    kept = state_files(folder / KEPT)
    if not kept or not all(reads_whole(p) for p in kept):
        return (
            f"Tune's saved state in {folder} is cut short ({', '.join(damaged)}) and no whole copy was kept: "
            "Tune starts the unfinished trials again from their first epoch"
        )
    for path in kept:
        shutil.copyfile(path, folder / path.name)
    return (
        f"Tune's saved state in {folder} was cut short ({', '.join(damaged)}): put back the whole copy kept beside it"
    )
