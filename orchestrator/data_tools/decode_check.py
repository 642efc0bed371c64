"""Decode every image under a folder once, in parallel, and list the unreadable ones.

A truncated or corrupt file otherwise stops a run when a training worker first reads it, possibly
hours in. Images are decoded exactly as training decodes them (`trainables.data.load_image`).
`python -m orchestrator.verify_images ROOT` runs `verify_folder`.
"""

from __future__ import annotations

import os
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

from orchestrator.data_tools.images import image_files


def decode_error(path: str) -> Optional[str]:
    """Why the image at `path` cannot be decoded, or None when it can."""
    from trainables.data import BadImageError, load_image

    try:
        load_image(path)
    except BadImageError as err:
        return err.reason
    return None


def find_bad_images(paths: Iterable[str], workers: Optional[int] = None) -> list[tuple[str, str]]:
    """(path, reason) of every image that does not decode; `workers` processes decode them (default: all cores)."""
    paths = list(paths)
    workers = max(1, workers or os.cpu_count() or 1)
    chunk = max(1, min(256, len(paths) // (workers * 8) or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        reasons = pool.map(decode_error, paths, chunksize=chunk)
        return [(path, reason) for path, reason in zip(paths, reasons) if reason is not None]


def verify(root: str | Path, workers: Optional[int] = None, out=sys.stdout) -> int:
    """Print the unreadable images under `root` and a summary; the number of unreadable images."""
    paths = image_files(root)
    bad = find_bad_images(paths, workers)
    for path, reason in bad:
        print(f"{path}: {reason}", file=out)
    print(
        f"{len(paths)} images decoded under {root}: {len(bad)} unreadable"
        + (" (replace or delete them, or set data.skip_bad_images: true)" if bad else ""),
        file=out,
    )
    return len(bad)


def verify_folder(root: str, workers: Optional[int] = None) -> int:
    """The command's exit status: 0 when every image under `root` decodes, 1 when some do not (each listed as
    `PATH: reason`), 2 when `root` is not a folder."""
    if not Path(root).is_dir():
        print(f"error: {root} is not a folder: give the folder that holds the images", file=sys.stderr)
        return 2
    return 1 if verify(root, workers) else 0
