"""The teacher's soft-label bank for augmented data: recorded views and the teacher's logits on them.

For each training image and each of E epochs the bank holds one augmentation view (`trainables.views`)
and the frozen teacher's logits on exactly that view (bf16, all classes). A trial replays the view of
its epoch (epoch e uses bank epoch e mod E) and reads the logits, so it runs no teacher forward while
training: the teacher's forward is paid once per teacher, data and augmentation seed, not per trial.

The bank lives beside the cached teacher (`TEACHER/banks/<key>/`), keyed by everything that defines
it. It is built by a Ray Train run (`build_bank_per_worker`), each worker taking every world-th image;
each worker writes one file per epoch, rank 0 the data's sizes (`DATA_FILE`: the driver may not see
the data), and the driver writes the meta file last, once all are in.
No Ray Tune or MLflow here.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch

from trainables import storage
from trainables.config import DataConfig, MissingInput, RunConfig
from trainables.data import bad_image, build_datasets, collate_skipping_none
from trainables.decode import device_batch, resolve_decode
from trainables.failures import one_line, recording_failures
from trainables.models import input_memory_format
from trainables.teacher import check_logits, load_teacher
from trainables.views import VERSION, draw_views, epoch_uniforms

META_FILE = "bank.json"
DATA_FILE = "data.json"
# bf16 has fp32's range: an fp16 bank turned every logit of a diverged teacher into inf. Under bf16
# autocast (GPU) the teacher computes its logits in bf16 anyway.
LOGITS_DTYPE = torch.bfloat16


def applies(data: DataConfig) -> bool:
    """Whether a bank replaces the live teacher: imagefolder data, whose training views are random crops."""
    return data.name == "imagefolder"


def bank_epochs(cfg: RunConfig) -> int:
    return cfg.teacher.bank_epochs or cfg.students.epochs


def views_seed(cfg: RunConfig) -> int:
    """The seed of the bank's views: `teacher.bank_seed` when set (one bank for every seed), else the run's."""
    return cfg.seed if cfg.teacher.bank_seed is None else cfg.teacher.bank_seed


def bank_identity(cfg: RunConfig, teacher_dir: str, on_gpu: bool) -> dict:
    """What defines a bank: the teacher entry (data, teacher), the views, and how the logits were computed."""
    return {
        "teacher": storage.basename(teacher_dir),
        "epochs": bank_epochs(cfg),
        "seed": views_seed(cfg),
        "views": VERSION,
        "decode": resolve_decode(cfg.data.decode, on_gpu),
        "logits": "bf16",
        "precision": "bf16" if on_gpu and cfg.students.amp else "fp32",
    }


def bank_location(cfg: RunConfig, teacher_dir: str, on_gpu: bool) -> str:
    key = hashlib.sha256(json.dumps(bank_identity(cfg, teacher_dir, on_gpu), sort_keys=True).encode()).hexdigest()[:12]
    return storage.join(teacher_dir, "banks", key)


def is_built(folder: str) -> bool:
    return storage.exists(storage.join(folder, META_FILE))


def shard_name(epoch: int, rank: int, world: int) -> str:
    return f"epoch-{epoch:04d}-shard-{rank}-of-{world}.pt"


def image_sizes(dataset, positions: list[int]) -> np.ndarray:
    """(height, width) of each image from its header alone; (0, 0) for an unreadable one when skipping them."""
    from PIL import Image

    sizes = np.zeros((len(positions), 2), dtype=np.int64)
    for row, position in enumerate(positions):
        path = dataset.path(position)
        try:
            with Image.open(path) as image:
                sizes[row] = image.height, image.width
        except Exception as err:  # whatever PIL raises on a file that is no image
            if not dataset.skip_bad:
                raise bad_image(path, one_line(err)) from None
    return sizes


@torch.no_grad()
def shard_logits(
    teacher,
    dataset,
    views: torch.Tensor,
    positions: list[int],
    device,
    batch_size: int,
    loader_workers: int = 0,
    autocast=None,
    memory_format=torch.contiguous_format,
) -> torch.Tensor:
    """The teacher's logits (bf16) on `views` (one row per image of `dataset`) of the images at `positions`.

    Goes through the run's own input path (PIL items, or file bytes decoded on `device`), so the logits
    are those a live teacher computes on the replayed view. Rows of skipped unreadable images are 0.
    """
    dataset.replay(views)
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, positions),
        batch_size=batch_size,
        num_workers=loader_workers,
        collate_fn=collate_skipping_none,
    )
    num_classes = None
    rows, parts = [], []
    for batch in loader:
        if batch is None:
            continue
        if dataset.raw_bytes:
            batch = device_batch(batch, dataset, device, dataset.size, views)
            if batch is None:
                continue
        images, _, index = batch
        with autocast or nullcontext():
            logits = teacher(images.to(device).to(memory_format=memory_format)).float()
        num_classes = logits.shape[1]
        parts.append(logits.to(LOGITS_DTYPE).cpu())
        rows.append(index.cpu())
    out = torch.zeros(len(dataset), num_classes or 1, dtype=LOGITS_DTYPE)
    if parts:
        out[torch.cat(rows)] = torch.cat(parts)
    return out[positions]


def build_shards(cfg: RunConfig, rank: int, world: int, device, out_dir: str) -> int:
    """Write this worker's share (every world-th image) of every epoch of the bank to `out_dir`; images done.

    Rank 0 also writes the data's image and class counts, which the driver's meta file takes. Logits
    that hold inf or nan stop the build with one line naming the teacher (`check_logits`).
    """
    on_gpu = device.type == "cuda"
    raw = resolve_decode(cfg.data.decode, on_gpu) == "gpu"
    train_ds, _, num_classes = build_datasets(cfg.data, cfg.data.split_seed, raw_bytes=raw)
    teacher = load_teacher(cfg.teacher_dir, cfg.teacher.arch, num_classes, cfg.data.image_size, device)
    memory_format = input_memory_format(on_gpu, cfg.students.channels_last)
    teacher = teacher.to(memory_format=memory_format)
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.students.amp else None
    n = len(train_ds)
    if rank == 0:
        storage.write_text(storage.join(out_dir, DATA_FILE), json.dumps({"images": n, "num_classes": num_classes}))
    positions = list(range(rank, n, world))
    sizes = image_sizes(train_ds, positions)
    for epoch in range(bank_epochs(cfg)):
        views = torch.full((n, 5), -1, dtype=torch.int64)
        drawn = torch.from_numpy(draw_views(sizes, epoch_uniforms(views_seed(cfg), epoch, n)[positions]))
        drawn[torch.from_numpy(sizes[:, 0] == 0)] = -1  # unreadable, skipped: never replayed
        views[positions] = drawn
        logits = shard_logits(
            teacher,
            train_ds,
            views,
            positions,
            device,
            cfg.students.batch_size * 2,
            cfg.data.loader_workers,
            autocast,
            memory_format,
        )
        check_logits(logits, cfg.teacher.arch, cfg.teacher_dir)
        shard = {"index": torch.tensor(positions, dtype=torch.int64), "views": drawn.to(torch.int32), "logits": logits}
        name = shard_name(epoch, rank, world)
        if storage.is_uri(out_dir):
            with tempfile.TemporaryDirectory(prefix="bank-") as tmp:
                torch.save(shard, Path(tmp) / name)
                storage.upload(Path(tmp) / name, storage.join(out_dir, name))
        else:
            Path(out_dir).mkdir(parents=True, exist_ok=True)
            torch.save(shard, Path(out_dir) / name)
    return len(positions)


def build_bank_per_worker(config: dict) -> None:
    """The Ray Train loop that builds the bank at `config['bank_dir']`, split across the run's workers.

    A failure a restart cannot fix (a diverged teacher, an unreadable image) is recorded, so that the
    restarts `FailureConfig` allows stop at once with its line.
    """
    import ray
    import ray.train
    import ray.train.torch

    cfg = RunConfig.model_validate(config)
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    ctx = ray.train.get_context()
    with recording_failures(cfg.failure_file):
        build_shards(cfg, ctx.get_world_rank(), ctx.get_world_size(), ray.train.torch.get_device(), cfg.bank_dir)


def write_meta(folder: str, cfg: RunConfig, world: int, identity: dict) -> None:
    """Mark the bank complete: written by the driver after every worker has written its files.

    The image and class counts are those the workers found (`DATA_FILE`): the driver never opens the data.
    """
    sizes = json.loads(storage.read_text(storage.join(folder, DATA_FILE)) or "{}")
    if not sizes:
        raise MissingInput(
            f"the soft-label bank at {folder} has no {DATA_FILE}: its build did not finish; run again to rebuild it"
        )
    meta = {
        "epochs": bank_epochs(cfg),
        "world": world,
        "images": sizes["images"],
        "num_classes": sizes["num_classes"],
        "identity": identity,
    }
    storage.write_text(storage.join(folder, META_FILE), json.dumps(meta, indent=2, sort_keys=True))


class Bank:
    """A built bank, read one epoch at a time (an ImageNet-100 epoch is about 25 MB)."""

    def __init__(self, folder: str):
        self.local = storage.local_copy(folder)
        self.meta = json.loads((self.local / META_FILE).read_text())
        self.epochs = int(self.meta["epochs"])

    def check(self, images: int, num_classes: int) -> None:
        if (images, num_classes) != (self.meta["images"], self.meta["num_classes"]):
            raise ValueError(
                f"the soft-label bank at {self.local} holds {self.meta['images']} images of "
                f"{self.meta['num_classes']} classes, this run has {images} of {num_classes}: "
                "the bank belongs to other data"
            )

    def epoch(self, epoch: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views [N, 5] (int64) and teacher logits [N, C] (bf16) of bank epoch `epoch % epochs`."""
        epoch %= self.epochs
        n, world = self.meta["images"], self.meta["world"]
        views = torch.full((n, 5), -1, dtype=torch.int64)
        logits = torch.zeros(n, self.meta["num_classes"], dtype=LOGITS_DTYPE)
        for rank in range(world):
            shard = torch.load(self.local / shard_name(epoch, rank, world), weights_only=True)
            views[shard["index"]] = shard["views"].long()
            logits[shard["index"]] = shard["logits"]
        return views, logits
