"""Where a teacher is cached and whether its entry is complete, without torch: the driver's dry run asks it.

A teacher is identified by everything that defines it (data, architecture, schedule, seed, source checkpoint):
`teacher_dir` names its cache folder under the cache root (a folder or a bucket URI). `trainables.teacher`
writes and loads the entries.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from trainables import storage
from trainables.config import RunConfig

WEIGHTS_FILE = "teacher.pt"
META_FILE = "meta.json"
SOFT_LABELS_FILE = "soft_labels.pt"


def teacher_identity(cfg: RunConfig) -> dict:
    """The settings that define the teacher; any change gives another cache entry."""
    data = cfg.data.identity()
    # bank_*: the bank's, not the teacher's; data: only when set, so older entries keep their keys.
    teacher = cfg.teacher.model_dump(
        exclude={"bank_epochs", "bank_seed"} | ({"data"} if cfg.teacher.data is None else set())
    )
    if cfg.teacher.data is not None:
        teacher["data"] = cfg.teacher.data.identity()
    if teacher["checkpoint"]:
        src = Path(teacher["checkpoint"])
        stat = src.stat()
        # A given checkpoint replaces the training schedule; its content is named by size and mtime.
        teacher = {
            "arch": teacher["arch"],
            "checkpoint": str(src.resolve()),
            "size": stat.st_size,
            "mtime_ns": stat.st_mtime_ns,
        }
    return {"data": data, "teacher": teacher}


def teacher_key(cfg: RunConfig) -> str:
    blob = json.dumps(teacher_identity(cfg), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:12]


def teacher_dir(cache_root: str, cfg: RunConfig) -> str:
    """The teacher's cache location under `cache_root` (a folder or a bucket URI)."""
    return storage.join(str(cache_root), f"{cfg.teacher.arch}-{teacher_key(cfg)}")


def is_cached(folder: str) -> bool:
    """Complete entries only: the meta file is written last."""
    return storage.exists(storage.join(folder, META_FILE)) and storage.exists(storage.join(folder, WEIGHTS_FILE))


def read_meta(folder: str) -> dict:
    return json.loads((storage.local_copy(folder) / META_FILE).read_text())
