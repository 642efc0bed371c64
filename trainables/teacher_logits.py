"""Where a training step's teacher logits come from: one interface, three sources.

- `CachedLogits`: the soft labels the teacher wrote once for data whose views never change
  (deterministic transforms): a lookup by image index, no forward.
- `BankLogits`: the soft-label bank's recorded views (augmented data): the epoch's logits move to the
  device once, a step looks them up by index; the loader replays the bank's views of that epoch.
- `LiveTeacher`: a forward of the frozen teacher on the step's images.

Each holds the teacher itself as `model`, since validation always runs it live, and counts its
forwards (`forwards`, reset by `start_epoch`): a run on cached logits or the bank reports 0.
"""

from __future__ import annotations

import logging
from typing import Optional

import torch
from torch import nn

from trainables.bank import Bank
from trainables.config import RunConfig
from trainables.teacher import load_soft_labels, load_teacher

log = logging.getLogger(__name__)


class TeacherLogits:
    """The interface: `start_epoch(epoch)` once per epoch, then `self(images, index)` per step."""

    def __init__(self, model: nn.Module):
        self.model = model
        self.forwards = 0  # counted by a hook, so a forward from anywhere in a training step shows
        self.model.register_forward_pre_hook(self._count)

    def _count(self, *_) -> None:
        self.forwards += 1

    def start_epoch(self, epoch: int) -> Optional[torch.Tensor]:
        """Resets the forward count; the views the loader must replay this epoch (None: it draws its own)."""
        self.forwards = 0
        return None

    def __call__(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        """The teacher's logits for a batch: `images` on the device, `index` the images' dataset indices."""
        raise NotImplementedError


class CachedLogits(TeacherLogits):
    def __init__(self, model: nn.Module, soft_labels: torch.Tensor, device):
        super().__init__(model)
        self.soft_labels, self.device = soft_labels, device

    def __call__(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.soft_labels[index.cpu()].to(self.device)


class BankLogits(TeacherLogits):
    def __init__(self, model: nn.Module, bank: Bank, device):
        super().__init__(model)
        self.bank, self.device = bank, device
        self.epoch_logits: Optional[torch.Tensor] = None

    def start_epoch(self, epoch: int) -> Optional[torch.Tensor]:
        """The bank's views of this epoch; its logits move to the device once."""
        super().start_epoch(epoch)
        views, logits = self.bank.epoch(epoch)
        self.epoch_logits = logits.to(self.device)  # 25 MB on ImageNet-100: no host copy and sync per step
        return views

    def __call__(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.epoch_logits[index.to(self.device)].float()


class LiveTeacher(TeacherLogits):
    def __call__(self, images: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return self.model(images).float()


def build_teacher_logits(
    cfg: RunConfig, train_ds, num_classes: int, device, memory_format, run: str, rank: int
) -> TeacherLogits:
    """The cheapest source the teacher's folder allows: its cached soft labels, else the bank, else live.

    The teacher is loaded last in every case, after the students were built: building it draws from
    torch's global RNG, so moving it would change the run's random stream.
    """
    soft_labels = load_soft_labels(cfg.teacher_dir)
    bank = None
    if soft_labels is None and cfg.bank_dir:
        bank = Bank(cfg.bank_dir)
        bank.check(len(train_ds), num_classes)
        if cfg.students.epochs > bank.epochs and rank == 0:
            log.warning(
                f"{run}: the soft-label bank holds {bank.epochs} epochs of views, this run trains "
                f"{cfg.students.epochs}: epoch e replays bank epoch e mod {bank.epochs}"
            )
    model = load_teacher(cfg.teacher_dir, cfg.teacher.arch, num_classes, cfg.data.image_size, device)
    model = model.to(memory_format=memory_format)
    if soft_labels is not None:
        return CachedLogits(model, soft_labels, device)
    if bank is not None:
        return BankLogits(model, bank, device)
    return LiveTeacher(model)
