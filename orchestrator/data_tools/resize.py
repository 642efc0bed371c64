"""Resized JPEG copies of images (short side to a given size, quality 90), in parallel.

A GPU decodes and crops a 256 px ImageNet image several times faster than a full-size one (about
500 x 375, some far larger), and the training crop loses nothing: RandomResizedCrop's output is 224 px.
Used by `python -m orchestrator.prepare_imagenet100 SRC DST --resize 256`.
"""

from __future__ import annotations

import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Iterable, Optional

QUALITY = 90


def resize_file(job: tuple[str, str, int]) -> Optional[str]:
    """Write `src` as a JPEG at `dst` with its short side at `short` px; why it failed, or None.

    An existing `dst` is kept (a rerun continues); the file appears complete or not at all.
    """
    from PIL import Image

    src, dst, short = job
    if os.path.exists(dst):
        return None
    try:
        with Image.open(src) as image:
            image = image.convert("RGB")
            scale = short / min(image.size)
            size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
            image = image.resize(size, Image.Resampling.BICUBIC, reducing_gap=3.0)
            tmp = f"{dst}.tmp-{os.getpid()}"
            image.save(tmp, "JPEG", quality=QUALITY)
        os.replace(tmp, dst)
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, ... on files that are no image
        return f"{type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}"
    return None


def resize_files(pairs: Iterable[tuple[str, str]], short: int, workers: Optional[int] = None) -> list[tuple[str, str]]:
    """Resize every (src, dst) pair; (src, reason) of those that failed."""
    jobs = [(str(src), str(dst), short) for src, dst in pairs]
    for _, dst, _ in jobs:
        Path(dst).parent.mkdir(parents=True, exist_ok=True)
    workers = max(1, workers or os.cpu_count() or 1)
    chunk = max(1, min(256, len(jobs) // (workers * 8) or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        reasons = pool.map(resize_file, jobs, chunksize=chunk)
        return [(src, reason) for (src, _, _), reason in zip(jobs, reasons) if reason is not None]
