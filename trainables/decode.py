"""The device input path (`data.decode: gpu`): loader workers only read file bytes; the worker decodes
and augments the batch on its own device, since PIL caps a node at a few thousand images/s.

`torchvision.io.decode_jpeg` decodes the batch on the device (nvJPEG on CUDA, libjpeg on the CPU, so
tests run the same code); a file it cannot decode (a PNG, a CMYK JPEG) is decoded alone on the CPU,
and one nothing can decode is a `BadImageError` naming it, or is dropped with `data.skip_bad_images`.
Crops, resizes and flips follow `trainables.views`. No Ray or MLflow here.
"""

from __future__ import annotations

import logging
from typing import Callable, Optional, Sequence

import numpy as np
import torch

from trainables.data import bad_image
from trainables.failures import one_line
from trainables.views import apply_batch, draw_view_now

log = logging.getLogger(__name__)


def resolve_decode(decode: str, on_gpu: bool) -> str:
    """`auto` -> `gpu` on a worker with a GPU, else `cpu`."""
    return ("gpu" if on_gpu else "cpu") if decode == "auto" else decode


def _decode_one(data: torch.Tensor, device: torch.device) -> torch.Tensor:
    from torchvision.io import ImageReadMode, decode_image, decode_jpeg

    try:
        return decode_jpeg(data, mode=ImageReadMode.RGB, device=device)
    except RuntimeError:
        return decode_image(data, mode=ImageReadMode.RGB).to(device)


def decode_batch(
    datas: Sequence[torch.Tensor], device: torch.device, path_of: Callable[[int], str], skip_bad: bool = False
) -> tuple[list[torch.Tensor], list[int]]:
    """Decoded uint8 RGB images [3, H, W] on `device`, and the positions in `datas` they came from.

    `path_of(position)` names a file that cannot be decoded.
    """
    from torchvision.io import ImageReadMode, decode_jpeg

    try:
        return list(decode_jpeg(list(datas), mode=ImageReadMode.RGB, device=device)), list(range(len(datas)))
    except RuntimeError:
        pass  # one file or more is no baseline JPEG: decode them one by one to find it
    images, kept = [], []
    for position, data in enumerate(datas):
        try:
            images.append(_decode_one(data, device))
        except RuntimeError as err:
            bad = bad_image(path_of(position), one_line(err))
            if not skip_bad:
                raise bad from None
            log.warning("skipping unreadable image %s (%s)", bad.path, bad.reason)
            continue
        kept.append(position)
    return images, kept


def device_batch(
    batch, dataset, device: torch.device, size: int, views: Optional[torch.Tensor] = None
) -> Optional[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """A batch of file bytes from `dataset` (a `ViewedImages` with raw bytes) as (images, labels, index) on `device`.

    `views`: every image's view for this epoch (a bank's); None draws them now from torch's RNG.
    None when no image of the batch could be decoded.
    """
    datas, labels, index = batch
    images, kept = decode_batch(datas, device, lambda p: dataset.path(int(index[p])), dataset.skip_bad)
    if not images:
        return None
    labels, index = labels[kept], index[kept]
    if views is None:
        batch_views = torch.from_numpy(np.stack([draw_view_now(im.shape[1], im.shape[2]) for im in images]))
    else:
        batch_views = views[index]
    return apply_batch(images, batch_views, size), labels.to(device, non_blocking=True), index
