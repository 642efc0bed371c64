"""Augmentation views: one training crop (RandomResizedCrop's box) and flip of an image, as five numbers.

A view is drawn from uniform numbers and applied by either input path, so the teacher's soft-label
bank can record it once and every trial replay it exactly: `apply_pil` (the CPU path: PIL, as
torchvision's transforms) and `apply_batch` (decoded uint8 tensors on any device, one `roi_align` per
chunk of the batch). A view is `(top, left, height, width, flip)` in the source image's pixels.
No Ray or MLflow here.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SCALE = (0.08, 1.0)  # RandomResizedCrop's defaults
RATIO = (3.0 / 4.0, 4.0 / 3.0)
TRIES = 10
UNIFORMS = 2 * TRIES + 3  # per view: (area, log-ratio) per try, top, left, flip
VIEW_FIELDS = ("top", "left", "height", "width", "flip")
VERSION = "rrc-0.08-1.0-flip-v1"  # part of the bank's key: a change to the drawing gives another bank
CHUNK_BYTES = 512 * 2**20  # apply_batch pads at most this much float data at once


def epoch_uniforms(seed: int, epoch: int, n: int) -> np.ndarray:
    """The uniform numbers of one epoch's views, one row per image: the same on every worker and split."""
    return np.random.default_rng([seed, epoch]).random((n, UNIFORMS))


def draw_views(sizes: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Views for images of `sizes` (rows of height, width) from uniforms `u` (rows of UNIFORMS), as int64 rows.

    RandomResizedCrop's rule, vectorised: the first of ten (area, aspect) tries that fits the image,
    else the central crop at the clamped aspect ratio; then a flip with probability 1/2.
    """
    sizes = np.asarray(sizes, dtype=np.float64).reshape(-1, 2)
    u = np.asarray(u, dtype=np.float64).reshape(-1, UNIFORMS)
    height, width = sizes[:, :1], sizes[:, 1:]
    area = height * width * (SCALE[0] + (SCALE[1] - SCALE[0]) * u[:, 0 : 2 * TRIES : 2])
    log_lo, log_hi = math.log(RATIO[0]), math.log(RATIO[1])
    aspect = np.exp(log_lo + (log_hi - log_lo) * u[:, 1 : 2 * TRIES : 2])
    w = np.round(np.sqrt(area * aspect))
    h = np.round(np.sqrt(area / aspect))
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(axis=1)
    rows = np.arange(len(sizes))
    crop_h, crop_w = h[rows, first], w[rows, first]
    # No try fits: the central crop at the aspect ratio clamped to RATIO (torchvision's fallback).
    ratio = width[:, 0] / height[:, 0]
    fb_w = np.where(
        ratio < RATIO[0], width[:, 0], np.where(ratio > RATIO[1], np.round(height[:, 0] * RATIO[1]), width[:, 0])
    )
    fb_h = np.where(ratio < RATIO[0], np.round(width[:, 0] / RATIO[0]), height[:, 0])
    none = ~fits.any(axis=1)
    crop_h, crop_w = np.where(none, fb_h, crop_h), np.where(none, fb_w, crop_w)
    top = np.where(none, (height[:, 0] - crop_h) // 2, np.floor(u[:, -3] * (height[:, 0] - crop_h + 1)))
    left = np.where(none, (width[:, 0] - crop_w) // 2, np.floor(u[:, -2] * (width[:, 0] - crop_w + 1)))
    flip = u[:, -1] < 0.5
    return np.stack([top, left, crop_h, crop_w, flip], axis=1).astype(np.int64)


def draw_view_now(height: int, width: int) -> np.ndarray:
    """One view from torch's global RNG (seeded by the loop, re-seeded per loader worker): live augmentation."""
    return draw_views(np.array([[height, width]]), torch.rand(UNIFORMS, dtype=torch.float64).numpy())[0]


def _normalize(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(IMAGENET_MEAN, device=images.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGENET_STD, device=images.device).view(1, 3, 1, 1)
    return (images - mean) / std


def apply_pil(image, view: Sequence[int], size: int) -> torch.Tensor:
    """The view of a PIL image as a normalised float tensor [3, size, size]: the CPU input path."""
    from torchvision.transforms import functional as TF

    top, left, height, width, flip = (int(v) for v in view)
    crop = TF.resized_crop(image, top, left, height, width, [size, size], antialias=True)
    if flip:
        crop = TF.hflip(crop)
    return _normalize(TF.to_tensor(crop)[None])[0]


def apply_batch(images: Sequence[torch.Tensor], views: torch.Tensor, size: int) -> torch.Tensor:
    """The views of decoded uint8 images [3, H, W] (any sizes, one device) as a normalised batch [B, 3, size, size].

    Images are zero-padded to a common size in chunks of at most CHUNK_BYTES and each chunk is cropped
    and resized by one `roi_align`, which averages ceil(crop / size) samples per output pixel, so a
    downscale is antialiased as PIL's is.
    """
    from torchvision.ops import roi_align

    views = views.to(torch.float32).cpu()
    outputs, start = [], 0
    while start < len(images):
        stop, height, width = start, 0, 0
        while stop < len(images):
            h, w = max(height, images[stop].shape[1]), max(width, images[stop].shape[2])
            if stop > start and (stop - start + 1) * 3 * h * w * 4 > CHUNK_BYTES:
                break
            height, width, stop = h, w, stop + 1
        chunk = images[start].new_zeros((stop - start, 3, height, width), dtype=torch.float32)
        for k, image in enumerate(images[start:stop]):
            chunk[k, :, : image.shape[1], : image.shape[2]] = image
        v = views[start:stop]
        boxes = torch.stack(
            [torch.arange(stop - start, dtype=torch.float32), v[:, 1], v[:, 0], v[:, 1] + v[:, 3], v[:, 0] + v[:, 2]],
            dim=1,
        ).to(chunk.device)
        outputs.append(roi_align(chunk, boxes, output_size=size, spatial_scale=1.0, sampling_ratio=-1, aligned=True))
        start = stop
    out = torch.cat(outputs).div_(255.0)
    flip = views[:, 4].to(torch.bool).to(out.device).view(-1, 1, 1, 1)
    return _normalize(torch.where(flip, out.flip(-1), out))
