"""A sweep's folder, on a disk every node shares or in a bucket.

Tune writes trial state and checkpoints straight to `location` (a folder or a bucket URI). The
driver's own files (the Optuna study's sqlite, tables, plots, the spec) are written to `local` first:
for a folder that is the folder itself; for a bucket, a scratch copy that `publish` uploads and a
resumed sweep `fetch`es back.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from trainables import storage


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
                    storage.upload(path, storage.join(self.location, path.name))

    def fetch(self, *names: str) -> None:
        """Bring the bucket's copies of these files back into `local` (a sweep resumed on another machine)."""
        if storage.is_uri(self.root):
            for name in names:
                remote = storage.join(self.location, name)
                if storage.exists(remote):
                    storage.download(remote, self.local / name)

    def __str__(self) -> str:
        return self.location


def new_sweep_folder(root: str, spec_name: str) -> SweepFolder:
    return SweepFolder(root, f"{spec_name}-{time.strftime('%Y%m%d-%H%M%S')}")


def latest_sweep_folder(root: str, spec_name: str) -> SweepFolder | None:
    """The newest sweep of this spec's name (what --resume continues), or None."""
    found = [name for name in storage.subfolders(root) if name.rsplit("-", 2)[0] == spec_name]
    return SweepFolder(root, max(found)) if found else None
