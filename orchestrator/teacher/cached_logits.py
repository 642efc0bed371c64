"""The cached teacher's training-set logits: its soft labels, else the first epoch of its first soft-label bank,
read without downloading the rest of its folder.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional, Sequence

import torch

from trainables import bank, storage
from trainables.teacher_cache import SOFT_LABELS_FILE


@contextmanager
def _local(folder: str, names: Sequence[str]) -> Iterator[Path]:
    """A local folder holding `names` of `folder`: itself when local, else a temporary download of those files
    alone (`storage.local_copy` would fetch the teacher's whole folder, every bank epoch included, and keep it)."""
    if not storage.is_uri(folder):
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="dualkd-gating-") as tmp:
        for name in names:
            storage.download(storage.join(folder, name), Path(tmp) / name)
        yield Path(tmp)


def _first_bank(teacher_folder: str) -> Optional[str]:
    banks = storage.join(teacher_folder, "banks")
    return next(
        (storage.join(banks, key) for key in storage.subfolders(banks) if bank.is_built(storage.join(banks, key))), None
    )


def _bank_logits(bank_dir: str) -> torch.Tensor:
    """Bank epoch 0's logits (on that epoch's augmented views), without the rows of images the bank skipped as
    unreadable: those are all 0, which would read as a uniform, fully unsure teacher."""
    meta = json.loads(storage.read_text(storage.join(bank_dir, bank.META_FILE)) or "{}")
    names = [bank.META_FILE, *(bank.shard_name(0, rank, meta["world"]) for rank in range(meta["world"]))]
    with _local(bank_dir, names) as local:
        _, logits = bank.Bank(str(local)).epoch(0)
    logits = logits.float()
    return logits[logits.ne(0).any(dim=1)]


def train_logits_of(teacher_dir: str) -> Optional[torch.Tensor]:
    """The cached teacher's training-set logits (float32): its soft labels, else its first soft-label bank's
    first epoch; None when it has neither (`teacher.cache_soft_labels` off). Raises one of `plan_view.READ_ERRORS` on a
    file that cannot be read."""
    if storage.exists(storage.join(teacher_dir, SOFT_LABELS_FILE)):
        with _local(teacher_dir, [SOFT_LABELS_FILE]) as local:
            logits = torch.load(local / SOFT_LABELS_FILE, map_location="cpu", weights_only=True)
        if not isinstance(logits, torch.Tensor):
            raise ValueError(f"{SOFT_LABELS_FILE} holds a {type(logits).__name__}, not a tensor of logits")
        return logits.float()
    found = _first_bank(teacher_dir)
    return _bank_logits(found) if found else None
