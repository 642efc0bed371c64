"""Datasets: digits (ships with scikit-learn), synthetic (no files at all), imagefolder (ImageNet-100).

Every item is `(image[3, S, S] float, label int, index int)`: the index is the sample's position in
its split, the key of the teacher's cached soft labels. No Ray or MLflow here.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from trainables.config import DataConfig, MissingInput
from trainables.failures import RunFailed, one_line
from trainables.views import IMAGENET_MEAN, IMAGENET_STD, VIEW_FIELDS, apply_pil, draw_view_now

log = logging.getLogger(__name__)


def random_shift(image: torch.Tensor) -> torch.Tensor:
    """Translate by up to 1/8 of the size (edge-replicating pad, then a random crop).

    Draws from torch's global RNG, which the training loop seeds and DataLoader re-seeds per worker,
    so workers do not repeat each other's shifts.
    """
    size = image.shape[-1]
    pad = max(1, size // 8)
    dy, dx = torch.randint(0, 2 * pad + 1, (2,)).tolist()
    padded = F.pad(image, (pad, pad, pad, pad), mode="replicate")
    return padded[:, dy : dy + size, dx : dx + size]


class TensorImages(Dataset):
    """A split held in memory as one N x 1 x S x S tensor, so an item is an index (and a shift)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: bool):
        self.images, self.labels, self.augment = images, labels, augment

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image = self.images[index].repeat(3, 1, 1)
        return (random_shift(image) if self.augment else image), int(self.labels[index]), index


class SyntheticImages(Dataset):
    """Gaussian-noise images with random labels, drawn per index: any size, no memory, no files."""

    def __init__(self, size: int, num_classes: int, image_size: int, seed: int, split: int, augment: bool):
        self.image_size, self.augment = image_size, augment
        self.seed = (seed, split)
        self.labels = torch.from_numpy(np.random.default_rng(self.seed).integers(num_classes, size=size))

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        rng = np.random.default_rng((*self.seed, index))
        image = torch.from_numpy(rng.standard_normal((3, self.image_size, self.image_size), dtype=np.float32))
        return (random_shift(image) if self.augment else image), int(self.labels[index]), index


class BadImageError(RunFailed):
    """An image file that cannot be decoded: the line names the file."""


def load_image(path: str):
    """The image at `path`, decoded in full as RGB (what training reads).

    An unreadable file (truncated, corrupt, not an image) raises `BadImageError` naming it, instead of
    PIL's error that names no file.
    """
    from PIL import Image

    try:
        with open(path, "rb") as f:
            return Image.open(f).convert("RGB")
    except Exception as err:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError, ...
        raise bad_image(path, one_line(err)) from None


def bad_image(path: str, reason: str) -> BadImageError:
    bad = BadImageError(
        f"unreadable image {path} ({reason}): replace or delete it, or set "
        "data.skip_bad_images: true; python -m orchestrator.verify_images ROOT lists "
        "every unreadable image"
    )
    bad.path, bad.reason = str(path), reason
    return bad


class Indexed(Dataset):
    """Selects `indices` of an ImageFolder-like dataset and adds each item's position in the selection.

    With `skip_bad`, an unreadable image becomes None, which `collate_skipping_none` drops.
    """

    def __init__(self, base: Dataset, indices: list[int], skip_bad: bool = False):
        self.base, self.indices, self.skip_bad = base, indices, skip_bad

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int) -> Optional[tuple[torch.Tensor, int, int]]:
        try:
            image, label = self.load(index)
        except BadImageError as err:
            if not self.skip_bad:
                raise
            log.warning("skipping unreadable image %s (%s)", getattr(err, "path", "?"), getattr(err, "reason", err))
            return None
        return image, label, index

    def load(self, index: int) -> tuple:
        return self.base[self.indices[index]]

    def path(self, index: int) -> str:
        return self.base.samples[self.indices[index]][0]


class ViewedImages(Indexed):
    """Training images as augmentation views (`trainables.views`): drawn live, or replayed from a bank.

    `replay(views)` sets the views of every image for the coming epoch; it writes a shared-memory table
    that persistent loader workers read too, so call it before the epoch's loader iterator starts.
    With `raw_bytes` an item is the file's bytes (uint8) instead: the worker decodes and augments the
    batch on its device (`trainables.decode`).
    """

    def __init__(self, base: Dataset, indices: list[int], size: int, skip_bad: bool = False, raw_bytes: bool = False):
        super().__init__(base, indices, skip_bad)
        self.size, self.raw_bytes = size, raw_bytes
        self.views = torch.full((len(indices), len(VIEW_FIELDS)), -1, dtype=torch.int64).share_memory_()

    def replay(self, views: Optional[torch.Tensor]) -> None:
        """Replay these views (one row per image) from now on; None: draw them live again."""
        if views is None:
            self.views.fill_(-1)
        else:
            self.views.copy_(views)

    def load(self, index: int) -> tuple:
        path, label = self.base.samples[self.indices[index]]
        if self.raw_bytes:
            return read_bytes(path), label
        image = load_image(path)
        view = self.views[index]
        if view[2] < 0:  # no replayed view: draw one now
            view = draw_view_now(image.height, image.width)
        return apply_pil(image, view, self.size), label


def read_bytes(path: str) -> torch.Tensor:
    """A file's bytes as a uint8 tensor; an unreadable file is a `BadImageError` naming it."""
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as err:
        raise bad_image(path, one_line(err)) from None
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else torch.empty(0, dtype=torch.uint8)


def collate_skipping_none(batch: list):
    """Default collation without the items a dataset skipped (None); None when every item was skipped.

    Items of file bytes (different lengths) stay a list of tensors.
    """
    items = [item for item in batch if item is not None]
    if not items:
        return None
    if items[0][0].dtype == torch.uint8 and items[0][0].dim() == 1:
        return (
            [item[0] for item in items],
            torch.tensor([item[1] for item in items]),
            torch.tensor([item[2] for item in items]),
        )
    return torch.utils.data.default_collate(items)


def noisy_labels(labels: torch.Tensor, share: float, num_classes: int, seed: int) -> torch.Tensor:
    """`labels` with round(share * N) of them, chosen at random, moved to a different class at random.

    Symmetric noise: a teacher trained on it is unsure on many samples (it learns the noise), while the
    validation labels stay clean, so distillation from it can beat training on the labels.
    """
    if share == 0:
        return labels
    gen = torch.Generator().manual_seed(seed)
    flipped = torch.randperm(len(labels), generator=gen)[: round(share * len(labels))]
    shift = torch.randint(1, num_classes, (len(flipped),), generator=gen)
    out = labels.clone()
    out[flipped] = (labels[flipped] + shift) % num_classes
    return out


def confused_labels(labels: torch.Tensor, groups: list[list[int]], seed: int) -> torch.Tensor:
    """`labels` with every label of a class in a group drawn anew, uniformly among the group's classes.

    The labels then carry nothing that tells a group's classes apart: a model trained on them is unsure
    between them (u about log k / log C for a group of k), wrong on most of their samples, and sure
    elsewhere: a blind spot whose uncertainty sits where the errors are.
    """
    gen = torch.Generator().manual_seed(seed + 1)  # a stream of its own, not noisy_labels'
    out = labels.clone()
    for group in groups:
        ids = torch.tensor(group)
        members = torch.isin(labels, ids)
        out[members] = ids[torch.randint(len(ids), (int(members.sum()),), generator=gen)]
    return out


def rare_kept(labels: torch.Tensor, rare: list[int], keep: float, seed: int) -> torch.Tensor:
    """Positions kept: every sample of the other classes, round(keep * n) (at least 1) of each rare class's n."""
    gen = torch.Generator().manual_seed(seed + 2)
    dropped = []
    for c in rare:
        members = torch.nonzero(labels == c).flatten()
        order = members[torch.randperm(len(members), generator=gen)]
        dropped.append(order[max(1, round(keep * len(members))) :])
    kept = torch.ones(len(labels), dtype=torch.bool)
    kept[torch.cat(dropped)] = False
    return torch.nonzero(kept).flatten()


class Kept(Dataset):
    """The items at `keep` of a split, indexed anew from 0 (an item's index is its position in the split)."""

    def __init__(self, base: Dataset, keep: torch.Tensor):
        self.base, self.keep, self.labels = base, keep, base.labels[keep]

    def __len__(self) -> int:
        return len(self.keep)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int, int]:
        image, label, _ = self.base[int(self.keep[index])]
        return image, label, index


def with_label_views(train: Dataset, cfg: DataConfig, num_classes: int, seed: int) -> Dataset:
    """An embedded training split with `cfg`'s altered labels: confused classes, then label noise, then rare
    classes thinned out; each fixed by `seed` (the split seed)."""
    train.labels = noisy_labels(
        confused_labels(train.labels, cfg.confused_classes, seed), cfg.label_noise, num_classes, seed
    )
    return Kept(train, rare_kept(train.labels, cfg.rare_classes, cfg.rare_keep, seed)) if cfg.rare_classes else train


def _digits(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset, int]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    labels = digits.target
    train_idx, val_idx = train_test_split(
        np.arange(len(labels)), test_size=cfg.val_fraction, stratify=labels, random_state=seed
    )
    if cfg.train_subset is not None and cfg.train_subset != len(train_idx):
        if cfg.train_subset > len(train_idx):
            raise ValueError(
                f"data.train_subset={cfg.train_subset} exceeds the {len(train_idx)} digits training images"
            )
        train_idx, _ = train_test_split(
            train_idx, train_size=cfg.train_subset, stratify=labels[train_idx], random_state=seed
        )
    # Resize once at build time: the whole set is < 2k images, and items become plain indexing.
    images = torch.from_numpy(digits.images).float().div_(16.0).unsqueeze(1)
    images = F.interpolate(images, size=(cfg.image_size, cfg.image_size), mode="bilinear", align_corners=False)
    images = (images - 0.5) / 0.5
    targets = torch.from_numpy(labels)

    def split(idx: np.ndarray, augment: bool) -> TensorImages:
        idx = torch.from_numpy(idx)
        return TensorImages(images[idx].contiguous(), targets[idx], augment)

    num_classes = int(labels.max()) + 1
    return with_label_views(split(train_idx, cfg.augment), cfg, num_classes, seed), split(val_idx, False), num_classes


def _synthetic(cfg: DataConfig, seed: int) -> tuple[Dataset, Dataset, int]:
    train_size = min(cfg.train_subset or cfg.synthetic_train_size, cfg.synthetic_train_size)
    train = SyntheticImages(train_size, cfg.num_classes, cfg.image_size, seed, 0, cfg.augment)
    val = SyntheticImages(cfg.synthetic_val_size, cfg.num_classes, cfg.image_size, seed, 1, False)
    return with_label_views(train, cfg, cfg.num_classes, seed), val, cfg.num_classes


def _imagefolder(cfg: DataConfig, seed: int, raw_bytes: bool = False) -> tuple[Dataset, Dataset, int]:
    from torchvision import datasets, transforms

    root = Path(cfg.root)
    if not (root / "train").is_dir() or not (root / "val").is_dir():
        raise MissingInput(
            f"imagefolder root {root} not found or incomplete: it must hold train/ and val/ (one folder per class)"
        )
    size = cfg.image_size
    normalize = transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)
    train = datasets.ImageFolder(str(root / "train"), loader=load_image)  # items are views (ViewedImages)
    val = datasets.ImageFolder(
        str(root / "val"),
        transforms.Compose(
            [transforms.Resize(round(size / 0.875)), transforms.CenterCrop(size), transforms.ToTensor(), normalize]
        ),
        loader=load_image,
    )
    if train.classes != val.classes:
        only = sorted(set(train.classes) ^ set(val.classes))
        raise ValueError(
            f"{root}: train/ and val/ hold different classes (e.g. {only[:3]}); both need the same class folders"
        )
    train_idx = list(range(len(train)))
    if cfg.train_subset is not None:
        train_idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))[
            : cfg.train_subset
        ].tolist()
    skip = cfg.skip_bad_images
    return (
        ViewedImages(train, train_idx, size, skip, raw_bytes),
        Indexed(val, list(range(len(val))), skip),
        len(train.classes),
    )


_BUILDERS = {"digits": _digits, "synthetic": _synthetic, "imagefolder": _imagefolder}


def build_datasets(cfg: DataConfig, seed: int, raw_bytes: bool = False) -> tuple[Dataset, Dataset, int]:
    """Train split, validation split, number of classes; the split (not the augmentation) depends on `seed`.

    `raw_bytes` (imagefolder): training items are file bytes, decoded on the worker's device.
    """
    if cfg.name == "imagefolder":
        return _imagefolder(cfg, seed, raw_bytes)
    return _BUILDERS[cfg.name](cfg, seed)


def train_transform_is_deterministic(cfg: DataConfig) -> bool:
    """Whether a training image is the same every epoch, so the teacher's soft labels can be cached once."""
    return cfg.name != "imagefolder" and not cfg.augment
