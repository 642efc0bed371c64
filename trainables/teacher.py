"""The frozen teacher: trained (or loaded) once per setting, cached, and shared by every trial.

A teacher is identified by everything that defines it (data, architecture, schedule, seed, source
checkpoint). Its cache folder holds the weights, a meta file and, when the training transform is
deterministic, its logits on the training split, so that trials need no teacher forward at all.
The folder is a location (`trainables.storage`): a local folder or a bucket URI, named and checked by
`trainables.teacher_cache` (no torch there: the driver's plan asks it). Training a missing teacher is the
driver's work (`orchestrator.teacher.preparation.ensure_teacher`).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from trainables import storage
from trainables.config import RunConfig
from trainables.data import build_datasets, train_transform_is_deterministic
from trainables.failures import RunFailed, one_line
from trainables.models import build_model, output_classes
from trainables.teacher_cache import META_FILE, SOFT_LABELS_FILE, WEIGHTS_FILE, teacher_identity


def teacher_training_config(cfg: RunConfig) -> RunConfig:
    """The run that trains the teacher: the student loop with one CE student of the teacher's arch, on the
    teacher's own view of the labels (`teacher.data`) when it has one."""
    t = cfg.teacher
    optim = t.model_dump(
        exclude={"arch", "checkpoint", "init_weights", "seed", "cache_soft_labels", "bank_epochs", "bank_seed", "data"}
    )
    students = {**optim, "archs": [t.arch], "init_weights": {t.arch: t.init_weights} if t.init_weights else {}}
    return cfg.model_copy(
        update={
            "students": type(cfg.students).model_validate({**cfg.students.model_dump(), **students}),
            "loss": type(cfg.loss).model_validate(
                {
                    **cfg.loss.model_dump(),
                    "method": "ce",
                    "alpha": 0.0,
                    "beta": 0.0,
                    "weighting": "none",
                    "peer_weighting": "uniform",
                }
            ),
            "data": t.data.applied_to(cfg.data) if t.data else cfg.data,
            "teacher_dir": None,
            "seed": t.seed,
        }
    )


def load_teacher(
    folder: str | os.PathLike, arch: str, num_classes: int, image_size: int, device: torch.device | str = "cpu"
) -> nn.Module:
    """The teacher in eval mode with gradients off: it is never trained by a student run.

    Weights that do not fit this data are one line: the driver leaves that check to the workers when
    only they see the data.
    """
    model = build_model(arch, num_classes, image_size)
    state = torch.load(storage.local_copy(str(folder)) / WEIGHTS_FILE, map_location="cpu", weights_only=True)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise RunFailed(
            f"the teacher at {folder} does not fit a {arch} with this data's {num_classes} classes at "
            f"{image_size} px ({one_line(err)}): check teacher.arch and teacher.checkpoint"
        ) from None
    model.eval().requires_grad_(False)
    return model.to(device)


@torch.no_grad()
def compute_logits(model: nn.Module, dataset, batch_size: int = 256) -> torch.Tensor:
    """Logits of `model` on every item of `dataset`, ordered by the item index."""
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False)
    device = next(model.parameters()).device
    parts, indices = [], []
    for images, _, index in loader:
        parts.append(model(images.to(device)).float().cpu())
        indices.append(index)
    logits = torch.cat(parts)
    out = torch.empty_like(logits)
    out[torch.cat(indices)] = logits
    return out


def check_logits(logits: torch.Tensor, arch: str, folder: str) -> None:
    """Stop before any trial when the teacher's logits hold inf or nan: every KD loss would be nan at the
    first step, blamed on the students' settings."""
    bad = int((~torch.isfinite(logits)).flatten(1).any(dim=1).sum()) if logits.numel() else 0
    if bad:
        raise RunFailed(
            f"the teacher {arch} ({folder}) gives non-finite logits on {bad} of {len(logits)} training "
            "images: it diverged; train it again with a lower teacher.lr or more teacher.warmup_epochs, "
            "or give a working teacher.checkpoint"
        )


def load_soft_labels(folder: Optional[str | os.PathLike]) -> Optional[torch.Tensor]:
    path = storage.local_copy(str(folder)) / SOFT_LABELS_FILE if folder else None
    return torch.load(path, weights_only=True) if path and path.is_file() else None


def _publish(tmp: Path, folder: str) -> None:
    """Move a finished entry into place: a rename on a local disk, else an upload with the meta file last."""
    if not storage.is_uri(folder):
        if Path(folder).exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
        return
    for path in sorted(tmp.iterdir(), key=lambda p: p.name == META_FILE):
        storage.upload(path, storage.join(folder, path.name))


def write_teacher(folder: str, state_dict: dict, cfg: RunConfig, meta: dict, cache_soft_labels: bool) -> None:
    """Write weights, meta and (deterministic data only) soft labels; a crash leaves no entry that looks complete."""
    scratch = Path(folder).parent if not storage.is_uri(folder) else storage.cache_root()
    scratch.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".teacher-", dir=scratch))
    try:
        torch.save(state_dict, tmp / WEIGHTS_FILE)
        num_classes = output_classes(state_dict)  # the weights', not the data's: the driver may not see the data
        if cache_soft_labels and train_transform_is_deterministic(cfg.data):  # embedded data only
            train_ds, _, _ = build_datasets(cfg.data, cfg.data.split_seed)
            model = load_teacher(tmp, cfg.teacher.arch, num_classes, cfg.data.image_size)
            logits = compute_logits(model, train_ds)
            check_logits(logits, cfg.teacher.arch, folder)
            torch.save(logits, tmp / SOFT_LABELS_FILE)
        full_meta = {**meta, "arch": cfg.teacher.arch, "num_classes": num_classes, "identity": teacher_identity(cfg)}
        (tmp / META_FILE).write_text(json.dumps(full_meta, indent=2, sort_keys=True))
        _publish(tmp, folder)
    except (OSError, RuntimeError) as err:  # torch.save tells a full disk as "unexpected pos ..."
        refusal = storage.disk_refusal(scratch)
        if refusal is None:
            raise
        raise refusal from err
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_state_dict(path: str | os.PathLike) -> dict:
    """A state_dict from a file that holds one directly or under 'state_dict' / 'model'."""
    obj = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
    return obj
