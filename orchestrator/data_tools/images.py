"""The image files of a folder as training reads them: the suffixes torchvision's ImageFolder takes, no torch.

The pre-flight counts a data root's images with these, and the ImageNet-100 preparation lists what to link or
resize; `tests/test_data.py` holds `IMAGE_SUFFIXES` to torchvision's own list.
"""

from __future__ import annotations

import os
from pathlib import Path

# What torchvision's ImageFolder reads (`torchvision.datasets.folder.IMG_EXTENSIONS`; it lower-cases the
# suffix), so the counts are what training sees. Written out: importing torchvision would import torch.
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")


def image_files(root: str | Path) -> list[str]:
    """Every image file under `root` (following links, as a prepared ImageNet-100 is links), sorted."""
    found = []
    for folder, _, files in os.walk(root, followlinks=True):
        found.extend(os.path.join(folder, name) for name in files if name.lower().endswith(IMAGE_SUFFIXES))
    return sorted(found)
