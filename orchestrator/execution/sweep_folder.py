"""A sweep's folder, on a disk every node shares or in a bucket.

Tune writes trial state and checkpoints straight to `location` (a folder or a bucket URI). The
driver's own files (the Optuna study's sqlite, tables, plots, the spec) are written to `local` first:
for a folder that is the folder itself; for a bucket, a scratch copy that `publish` uploads and a
resumed sweep `fetch`es back.
"""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from pathlib import Path

from trainables import storage

SPEC_FILE = "spec.yaml"  # the resolved spec the sweep started with: what --resume compares the spec with


@dataclass(frozen=True)
class SweepFolder:
    root: str  # where every sweep of the storage lives: STORAGE/sweeps
    name: str  # SPEC_NAME-DATE-TIME

    @property
    def location(self) -> str:
        return storage.join(self.root, self.name)

    @property
    def local(self) -> Path:
        if storage.is_uri(self.root):
            return storage.cache_root() / "sweeps" / self.name
        return Path(self.location)

    def publish(self, *paths: Path) -> None:
        """Copy files written under `local` to the bucket (nothing to do for a folder); missing ones are skipped
        (a comparison has no Optuna study)."""
        if storage.is_uri(self.root):
            for path in paths:
                if path.exists():
                    name = path.relative_to(self.local).as_posix() if path.is_relative_to(self.local) else path.name
                    storage.upload(path, storage.join(self.location, name))  # pareto/t03.yaml keeps its folder

    def fetch(self, *names: str) -> None:
        """Bring the bucket's copies of these files back into `local` (a sweep resumed on another machine)."""
        if storage.is_uri(self.root):
            for name in names:
                remote = storage.join(self.location, name)
                if storage.exists(remote):
                    storage.download(remote, self.local / name)

    def __str__(self) -> str:
        return self.location


def new_sweep_folder(root: str, spec_name: str, claim: bool = True, stamp: str | None = None) -> SweepFolder:
    """`SPEC_NAME-DATE-TIME` under `root`, or `SPEC_NAME-DATE-TIME-2`, `-3`, ... when that name is taken.

    With `claim`, the folder is created by an atomic mkdir (for a bucket: of the driver's local copy,
    and a name the bucket does not hold yet), so two sweeps started in the same second get two
    folders. Without it (a dry run) nothing is created.
    """
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    for n in range(1, 1000):
        folder = SweepFolder(root, f"{spec_name}-{stamp}" + (f"-{n}" if n > 1 else ""))
        if storage.exists(folder.location) or (storage.is_uri(root) and folder.local.exists()):
            continue
        if not claim:
            return folder
        folder.local.parent.mkdir(parents=True, exist_ok=True)
        try:
            folder.local.mkdir()
        except FileExistsError:
            continue  # another sweep took this name a moment ago
        return folder
    raise FileExistsError(f"no free sweep folder name for {spec_name}-{stamp} under {root}")


def sweep_order(name: str, spec_name: str) -> tuple[str, int] | None:
    """(DATE-TIME, n) of a sweep folder of this spec (`NAME-DATE-TIME[-n]`), else None."""
    match = re.fullmatch(rf"{re.escape(spec_name)}-(\d{{8}}-\d{{6}})(?:-(\d+))?", name)
    return (match.group(1), int(match.group(2) or 1)) if match else None


def latest_sweep_folder(root: str, spec_name: str) -> SweepFolder | None:
    """The newest sweep of this spec's name (what --resume continues), or None."""
    found = [name for name in storage.subfolders(root) if sweep_order(name, spec_name)]
    return SweepFolder(root, max(found, key=lambda name: sweep_order(name, spec_name))) if found else None
