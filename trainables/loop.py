"""`train_loop_per_worker`: the dual-student loop that a Ray Train `TorchTrainer` runs on each worker.

One step shares the batch, the data loading and one teacher forward (or a lookup of cached teacher
logits) between both students; one optimizer steps both, since L_a + L_b has disjoint parameters.
With beta = 0 the two students are two independent runs that happen to see the same batches.
With N workers (DDP) each rank trains on its share of the run's order and evaluates its share of the
val set; the figures are those of all ranks (`trainables.distributed`). Rank 0 writes checkpoints,
which hold every rank's random state; every rank calls `ray.train.report`.

`_train` reads top to bottom: `start_worker` (rank, device, seeds), `build_training` (data, students,
teacher logits from `trainables.teacher_logits`, loaders, optimizer), `restore` (from Ray Train's
checkpoint), then per epoch `run_epoch` (the steps), `validate` and `checkpoint_and_report`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

import ray
import ray.train
import ray.train.torch
import torch
from torch import nn

from trainables import distributed, failures, trace
from trainables.config import ConfigError, OptimConfig, RunConfig
from trainables.data import build_datasets, collate_skipping_none
from trainables.decode import device_batch, resolve_decode
from trainables.divergence import FiniteGuard, LossDiverged, divergence_hint
from trainables.files import PREDICTIONS_FILE, STATE_FILE
from trainables.live_metrics import LiveMetrics
from trainables.losses import peer_warmup_factor, students_loss
from trainables.methods import needs_teacher, resolve_method
from trainables.metric_names import BAD_IMAGES_KEY, MEAN_KEY, TEACHER_FORWARDS_KEY, VAL_KEYS, train_key
from trainables.metrics import expected_calibration_error, topk_correct
from trainables.models import build_model, input_memory_format, model_profile, student_memory_format
from trainables.teacher_logits import TeacherLogits, build_teacher_logits

log = logging.getLogger(__name__)  # Ray Train forwards worker logs; its patched print() would echo twice
# How often (steps) the loss is checked for NaN/inf on a GPU, where a check synchronises with the host,
# and the live images/s gauge is updated.
FINITE_CHECK_EVERY = LIVE_EVERY_STEPS = 50


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=cfg.momentum > 0
        )
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at an optimizer step: linear warm-up, then cosine, step (x0.1 at 1/2 and 3/4)
    or flat."""
    total = max(1, cfg.epochs * steps_per_epoch)
    warm = cfg.warmup_epochs * steps_per_epoch
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    if cfg.schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if cfg.schedule == "step":
        return 0.1 ** sum(progress >= p for p in (0.5, 0.75))
    return 1.0


def schedule_position(completed_epochs: int, steps_per_epoch: int) -> int:
    """The scheduler's step count at the start of epoch `completed_epochs + 1`. The schedule is laid out in
    epochs, so a resume that counts other steps per epoch (another worker count) restarts it from here."""
    return completed_epochs * steps_per_epoch


def schedule_at(
    optimizer_state: dict, scheduler_state: dict, position: int, factors: list[Callable[[int], float]]
) -> tuple[dict, dict]:
    """Saved optimizer and LambdaLR states moved to step `position`, each group's learning rate set as
    LambdaLR sets it there (base rate x factor): the next step then takes the schedule's rate, not the old one."""
    lrs = [base * factor(position) for base, factor in zip(scheduler_state["base_lrs"], factors, strict=True)]
    groups = [{**group, "lr": lr} for group, lr in zip(optimizer_state["param_groups"], lrs, strict=True)]
    return {**optimizer_state, "param_groups": groups}, {**scheduler_state, "last_epoch": position, "_last_lr": lrs}


def checkpoint_workers(state: dict) -> Optional[int]:
    """The worker count that wrote a checkpoint: stored, else (older checkpoints) its number of random
    states, one per worker; None when neither tells."""
    return state.get("workers") or len(state.get("rngs") or []) or None


def schedule_moved(state: dict, steps_per_epoch: int, world: int) -> bool:
    """Whether the checkpoint's scheduler counted steps of another length than this run's. Older checkpoints
    lack the steps per epoch: another worker count stands for them."""
    saved = state.get("steps_per_epoch")
    if saved is not None:
        return saved != steps_per_epoch
    writers = checkpoint_workers(state)
    return writers is not None and writers != world


def load_schedule(optimizer, scheduler, state: dict, steps_per_epoch: int, world: int) -> bool:
    """Restores the optimizer and the scheduler. Their saved step count is exact with the same steps per
    epoch (kept as saved: a bit-for-bit resume); with other steps per epoch the schedule continues from the
    completed epochs instead, which the saved count would overshoot or fall short of. True if it moved."""
    optimizer_state, scheduler_state = state["optimizer"], state["scheduler"]
    moved = schedule_moved(state, steps_per_epoch, world)
    if moved:
        position = schedule_position(state["epoch"] + 1, steps_per_epoch)
        optimizer_state, scheduler_state = schedule_at(optimizer_state, scheduler_state, position, scheduler.lr_lambdas)
    optimizer.load_state_dict(optimizer_state)
    scheduler.load_state_dict(scheduler_state)
    return moved


def resume_line(run: str, start_epoch: int, world: int, state: dict, steps_per_epoch: int, moved: bool) -> str:
    """The log line of a resume; it names a change of worker count (or of steps per epoch) and the schedule's
    continuation, which tell why the run no longer replays the uninterrupted one."""
    line = f"{run}: resumed from the checkpoint of epoch {start_epoch}, continuing at epoch {start_epoch + 1}"
    writers = checkpoint_workers(state)
    if writers is not None and writers != world:
        line += f" with {world} worker(s) (checkpoint written by {writers})"
    elif moved:
        line += f" with {steps_per_epoch} steps per epoch (checkpoint: {state['steps_per_epoch']})"
    if moved:
        line += f": learning-rate schedule continued from epoch {start_epoch}"
    return line


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


class _Averager:
    """Running means of named scalars over an epoch, summed on the device: one host sync per epoch."""

    def __init__(self):
        self.sums: dict[str, torch.Tensor] = {}
        self.n = 0

    def add(self, values: dict[str, torch.Tensor], weight: int) -> None:
        for k, v in values.items():
            v = v.detach().float() * weight
            self.sums[k] = self.sums[k] + v if k in self.sums else v
        self.n += weight

    def means(self) -> dict[str, float]:
        if not self.sums:
            return {}
        totals = torch.stack(list(self.sums.values())).tolist()
        return {k: v / max(1, self.n) for k, v in zip(self.sums, totals)}


@torch.no_grad()
def evaluate(
    models: dict[str, nn.Module], loader, device, autocast, teacher=None, epoch: Optional[int] = None, hint: str = ""
) -> tuple[dict, dict]:
    """Val top-1/top-5/ECE per model, and per-sample records (confidence, correctness, predicted class, teacher
    logits, whose argmax is the teacher's class): the class, so a report can tell two students' shared mistakes.

    `loader` yields (images, labels, index); with several ranks each passes its own shard and the
    records of every rank are gathered (in index order), so every rank returns the figures a one-process
    evaluation of the whole set gives. A model whose outputs are not finite raises `LossDiverged` on
    every rank before any metric sees them.
    """
    records: dict[str, list] = {"index": [], "labels": [], "teacher_logits": []}
    for name in models:
        records.update({f"{name}/{k}": [] for k in ("confidence", "correct", "top5", "predicted")})
    for m in models.values():
        m.eval()
    for batch in loader:
        if batch is None:  # every image of the batch was unreadable and skipped
            continue
        images, labels, index = batch
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        records["index"].append(torch.as_tensor(index).cpu())
        records["labels"].append(labels.cpu())
        with autocast:
            if teacher is not None:
                records["teacher_logits"].append(teacher(images).float().cpu())
            for name, m in models.items():
                logits = m(images).float()
                records[f"{name}/confidence"].append(logits.softmax(1).max(1).values.cpu())
                records[f"{name}/correct"].append(topk_correct(logits, labels, 1).cpu())
                records[f"{name}/top5"].append(topk_correct(logits, labels, 5).cpu())
                records[f"{name}/predicted"].append(logits.argmax(1).cpu())
    mine = {k: torch.cat(v) for k, v in records.items() if v}
    shards = distributed.gather(mine)
    full = {k: torch.cat([s[k] for s in shards if k in s]) for k in {k for s in shards for k in s}}
    order = full["index"].argsort() if "index" in full else None  # the val set's own order, whatever the shards
    full = {k: v[order] for k, v in full.items()} if order is not None else full
    metrics, predictions = {}, {"labels": full["labels"]}
    if "teacher_logits" in full:
        predictions["teacher_logits"] = full["teacher_logits"]
    for name in models:
        conf, correct, top5 = (full[f"{name}/{k}"] for k in ("confidence", "correct", "top5"))
        if not bool(torch.isfinite(conf).all()):
            where = f"loss diverged in epoch {epoch}: " if epoch else ""
            raise LossDiverged(
                f"{where}{name} gives NaN or inf outputs on the validation set (its weights are not "
                "finite)" + (f"; {hint}" if hint else "")
            )
        values = (correct.float().mean().item(), top5.float().mean().item(), expected_calibration_error(conf, correct))
        metrics.update({f"{name}/{key}": value for key, value in zip(VAL_KEYS, values)})
        predictions[name] = {"confidence": conf, "correct": correct, "predicted": full[f"{name}/predicted"]}
    return metrics, predictions


def _quiet_ray_report_log() -> None:
    """Ray Train logs every report's full metric dict at INFO; the loop prints its own one-line summary."""
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(logging.WARNING)
    except ImportError:  # another Ray layout: keep its logging as it is
        pass


def epoch_line(metrics: dict, names: list[str], epochs: int, with_teacher: bool) -> str:
    accs = "  ".join(f"{n} {metrics[f'{n}/val_top1']:.4f}" for n in names)
    weight = f"  teacher weight {metrics['teacher_weight']:.3f}" if with_teacher else ""
    return f"epoch {metrics['epoch']}/{epochs}  val top-1: {accs}{weight}  {metrics['images_per_s']:.0f} img/s"


def model_profiles(cfg: RunConfig, num_classes: int, with_teacher: bool) -> dict[str, float]:
    """Parameters (with the dataset's and with 1000-class heads) and FLOPs per image, for the final tables."""
    archs = dict(zip(cfg.students.names, cfg.students.archs))
    if with_teacher:
        archs["teacher"] = cfg.teacher.arch
    out = {}
    for name, arch in archs.items():
        for key, value in model_profile(arch, num_classes, cfg.data.image_size).items():
            out[f"{name}/{key}"] = float(value)
    return out


def train_loop_per_worker(config: dict) -> None:
    """The loop; a failure that a restart cannot fix is recorded (see `trainables.failures`) and raised as one line."""
    cfg = RunConfig.model_validate(config)
    with failures.recording_failures(cfg.failure_file):
        _train(cfg)


def use_deterministic_algorithms() -> None:
    """torch's deterministic kernels (an error where one has none) and cuBLAS's fixed workspace; no cuDNN autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA op
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def build_students(cfg: RunConfig, num_classes: int, world: int, on_gpu: bool) -> dict[str, nn.Module]:
    """Both students on this worker's device, wrapped by DDP when there are several workers.

    `students.sync_bn` shares BatchNorm statistics over ranks; `students.compile` compiles after the DDP
    wrap, so that DDP's optimizer splits the graph at its gradient buckets (as timm does).
    """
    sc = cfg.students
    models = {}
    for name, arch in zip(sc.names, sc.archs):
        model = build_model(arch, num_classes, cfg.data.image_size, sc.init_weights.get(arch))
        if sc.sync_bn and world > 1:
            model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
        model = model.to(memory_format=student_memory_format(arch, on_gpu, sc.channels_last))
        model = ray.train.torch.prepare_model(model)
        if sc.compile:
            model.compile()  # in place: the module, its state_dict keys and DDP's wrapping stay as they are
        models[name] = model
    return models


@dataclass
class Worker:
    """This process's place in the run and how it computes; every part of the loop reads it."""

    rank: int
    world: int
    run: str  # the trial id in a sweep, the run's name otherwise
    device: torch.device
    autocast: Any  # bf16 autocast on a GPU with students.amp, else a null context
    memory_format: torch.memory_format
    live: Optional[LiveMetrics]  # rank 0 sets the live gauges; None on the other ranks


@dataclass
class Training:
    """What the epochs work on: built once per (re)start, in the same order every time (see `build_training`)."""

    loss_settings: dict
    raw_bytes: bool  # data.decode gpu: the loaders read file bytes, `device_batch` decodes on the device
    train_ds: Any
    val_ds: Any
    num_classes: int
    models: dict[str, nn.Module]
    teacher: Optional[TeacherLogits]  # None when the method needs no teacher
    sampler: Any
    train_loader: Any
    val_loader: Any
    optimizer: torch.optim.Optimizer
    scheduler: Any
    steps_per_epoch: int  # this rank's; the checkpoint keeps it, so that a resume can tell when it changed


def assigned_cpus() -> Optional[float]:
    """The CPUs Ray gave this worker; None in Ray Train's local mode (no worker process: torch keeps its threads)."""
    try:
        return ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    except AssertionError:  # Ray's answer outside a worker process
        return None


def start_worker(cfg: RunConfig) -> Worker:
    """This worker's rank, device and precision; seeds its RNG streams before anything draws from them."""
    _quiet_ray_report_log()
    cpus = assigned_cpus()
    if cpus is not None:
        torch.set_num_threads(max(1, int(cpus)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run = ctx.get_experiment_name()
    live = LiveMetrics(run) if rank == 0 else None
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    distributed.seed_rank(cfg.seed, rank)  # DDP starts every rank from rank 0's weights
    if cfg.deterministic:
        use_deterministic_algorithms()
    autocast = torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.students.amp else nullcontext()
    memory_format = input_memory_format(on_gpu, cfg.students.channels_last)
    return Worker(rank, world, run, device, autocast, memory_format, live)


def build_training(cfg: RunConfig, w: Worker) -> Training:
    """Data, students, teacher logits, loaders, optimizer and schedule.

    The order is part of the run: building the students (and the teacher after them) draws from the
    global RNG that `start_worker` seeded, so a reordering would change every later draw.
    """
    loss_settings = resolve_method(cfg.loss.settings())
    raw_bytes = cfg.data.name == "imagefolder" and resolve_decode(cfg.data.decode, w.device.type == "cuda") == "gpu"
    train_ds, val_ds, num_classes = build_datasets(cfg.data, cfg.data.split_seed, raw_bytes=raw_bytes)
    sc = cfg.students
    models = build_students(cfg, num_classes, w.world, w.device.type == "cuda")
    teacher = None
    if needs_teacher(loss_settings):
        if not cfg.teacher_dir:
            raise ValueError("this method needs a teacher but no teacher_dir was given: prepare it first")
        teacher = build_teacher_logits(cfg, train_ds, num_classes, w.device, w.memory_format, w.run, w.rank)
    sampler, train_loader, val_loader = build_loaders(cfg, w, train_ds, val_ds)
    params = [p for m in models.values() for p in m.parameters()]
    optimizer = build_optimizer(params, sc)
    steps_per_epoch = len(train_loader)
    if steps_per_epoch == 0:
        raise ConfigError(
            f"students.batch_size {sc.batch_size} x {w.world} worker(s) exceeds the {len(train_ds)} "
            "training images: no full batch per worker; lower students.batch_size or the workers"
        )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps_per_epoch, sc))
    return Training(
        loss_settings,
        raw_bytes,
        train_ds,
        val_ds,
        num_classes,
        models,
        teacher,
        sampler,
        train_loader,
        val_loader,
        optimizer,
        scheduler,
        steps_per_epoch,
    )


def build_loaders(cfg: RunConfig, w: Worker, train_ds, val_ds) -> tuple:
    """The train sampler and loader (this rank's share of the run's order) and this rank's val shard loader.

    Our own loaders: Ray's prepare_data_loader would seed the order with 0 whatever the run's seed and
    drop persistent_workers and prefetch_factor. Tensors move to the device in the steps.
    """
    sc = cfg.students
    loader_kw = dict(
        num_workers=cfg.data.loader_workers,
        pin_memory=w.device.type == "cuda",
        persistent_workers=cfg.data.loader_workers > 0,
        collate_fn=collate_skipping_none,
    )
    sampler = distributed.train_sampler(train_ds, cfg.seed, w.rank, w.world)
    train_loader = torch.utils.data.DataLoader(
        train_ds, batch_size=sc.batch_size, sampler=sampler, drop_last=True, **loader_kw
    )
    val_shard = torch.utils.data.Subset(val_ds, distributed.shard(len(val_ds), w.rank, w.world))
    val_loader = torch.utils.data.DataLoader(val_shard, batch_size=sc.batch_size * 2, shuffle=False, **loader_kw)
    return sampler, train_loader, val_loader


def restore(cfg: RunConfig, w: Worker, t: Training) -> tuple[int, Optional[dict]]:
    """The epoch to start at and the teacher's val figures, from Ray Train's checkpoint if it gave one.

    The teacher's figures come from the checkpoint: evaluating it again would draw on the random state
    the run restored. A run whose checkpoint is its last epoch reports that epoch again (so that Tune sees
    it end) and gets `students.epochs` back: no epoch left. A checkpoint of another worker count continues
    the learning-rate schedule from its completed epochs (`load_schedule`).
    """
    checkpoint = ray.train.get_checkpoint()
    if not checkpoint:
        return 0, None
    with checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    for name, m in t.models.items():
        unwrap(m).load_state_dict(state["students"][name])
    moved = load_schedule(t.optimizer, t.scheduler, state, t.steps_per_epoch, w.world)
    restore_rank_rng(state, w.rank, w.world, w.device, w.run)
    start_epoch = state["epoch"] + 1
    if start_epoch >= cfg.students.epochs:
        report_final_again(checkpoint, state, w.rank)
        return start_epoch, None
    if w.rank == 0:
        log.info(resume_line(w.run, start_epoch, w.world, state, t.steps_per_epoch, moved))
    return start_epoch, {k: v for k, v in state["metrics"].items() if k.startswith("teacher/")} or None


def run_epoch(cfg: RunConfig, w: Worker, t: Training, epoch: int, hint: str) -> tuple[dict, int]:
    """One epoch's training: its metrics (epoch, lr, speed, teacher forwards, loss parts) and its bad images."""
    t.sampler.set_epoch(epoch)
    bank_views = t.teacher.start_epoch(epoch) if t.teacher is not None else None
    if bank_views is not None and not t.raw_bytes:
        t.train_ds.replay(bank_views)  # before the epoch's loader iterator starts
    figures = train_epoch(cfg, w, t, epoch, bank_views, hint)
    metrics = {
        "epoch": epoch + 1,
        "lr": t.scheduler.get_last_lr()[0],
        "images_per_s": figures.pop("images_per_s"),
        "epoch_seconds": figures.pop("seconds"),
        TEACHER_FORWARDS_KEY: int(figures.pop("forwards")),
    }
    bad = int(figures.pop("bad"))
    metrics.update({train_key(k): v for k, v in figures.items()})
    return metrics, bad


def train_epoch(cfg: RunConfig, w: Worker, t: Training, epoch: int, bank_views, hint: str) -> dict[str, float]:
    """One epoch of steps; its figures over all ranks: loss parts (per image), images/s, bad images, teacher
    forwards."""
    sc, world = cfg.students, distributed.world_size()
    models, loader, teacher, device = t.models, t.train_loader, t.teacher, w.device
    agree = world > 1 and cfg.data.skip_bad_images  # only then can one rank's batch be empty
    steps = len(loader)
    for m in models.values():
        m.train()
    avg = _Averager()
    guard = FiniteGuard(epoch + 1, steps, 1 if device.type == "cpu" else FINITE_CHECK_EVERY, hint)
    seen, bad, started = 0, 0, time.perf_counter()
    for step, batch in enumerate(loader, start=1):
        if batch is not None and t.raw_bytes:
            batch = device_batch(batch, t.train_ds, device, cfg.data.image_size, bank_views)
        bad += sc.batch_size - (len(batch[1]) if batch is not None else 0)
        if not (distributed.all_ranks_have(batch is not None, device) if agree else batch is not None):
            continue  # every image of some rank's batch was unreadable: every rank skips the step
        images, labels, index = batch
        images = images.to(device, non_blocking=True).to(memory_format=w.memory_format)
        labels = labels.to(device, non_blocking=True)
        with w.autocast:
            teacher_logits = teacher(images, index) if teacher is not None else None
            logits = [m(images).float() for m in models.values()]
        ramp = peer_warmup_factor(epoch + (step - 1) / steps, cfg.loss.peer_warmup_epochs)
        parts = students_loss(
            logits,
            labels,
            teacher_logits,
            names=sc.names,
            label_smoothing=sc.label_smoothing,
            **{**t.loss_settings, "beta": t.loss_settings["beta"] * ramp},
        )
        guard.update(step, parts)  # before the step: NaN never reaches the weights unnoticed for long
        t.optimizer.zero_grad(set_to_none=True)
        parts["total"].backward()
        t.optimizer.step()
        t.scheduler.step()
        avg.add({k: v for k, v in parts.items() if k != "total"}, labels.shape[0])
        seen += labels.shape[0]
        if w.live is not None and step % LIVE_EVERY_STEPS == 0:
            w.live.throughput(seen * world / (time.perf_counter() - started))
    guard.check()
    seconds = time.perf_counter() - started
    totals = distributed.sum_over_ranks(
        {
            **avg.sums,
            "_images": seen,
            "_rate": seen / max(seconds, 1e-9),
            "_bad": bad,
            "_forwards": teacher.forwards if teacher else 0,
        },
        device,
    )
    images = totals.pop("_images")
    out = {k: v / max(1.0, images) for k, v in totals.items() if not k.startswith("_")}
    out.update(images_per_s=totals["_rate"], bad=totals["_bad"], forwards=totals["_forwards"], seconds=seconds)
    return out


def validate(
    cfg: RunConfig, w: Worker, t: Training, epoch: int, metrics: dict, bad: int, teacher_val: Optional[dict], hint: str
) -> tuple[dict, dict, Optional[dict]]:
    """Adds the epoch's val figures to `metrics`; returns the plain students, the val predictions and the
    teacher's val figures (measured on the first epoch evaluated, kept after). Every rank evaluates its shard."""
    plain = {name: unwrap(m) for name, m in t.models.items()}
    for m in plain.values():
        distributed.share_rank0_buffers(m)
    if t.teacher is not None and teacher_val is None:
        teacher_val, _ = evaluate({"teacher": t.teacher.model}, t.val_loader, w.device, w.autocast)
    last = epoch + 1 == cfg.students.epochs
    val, predictions = evaluate(
        plain,
        t.val_loader,
        w.device,
        w.autocast,
        t.teacher.model if last and t.teacher else None,
        epoch=epoch + 1,
        hint=hint,
    )
    metrics.update(val)
    metrics.update(teacher_val or {})
    names = cfg.students.names
    metrics[MEAN_KEY] = sum(val[f"{n}/val_top1"] for n in names) / len(names)
    if cfg.data.skip_bad_images:
        metrics[BAD_IMAGES_KEY] = bad + len(t.val_ds) - len(predictions["labels"])
    return plain, predictions, teacher_val


def checkpoint_and_report(
    cfg: RunConfig, w: Worker, t: Training, epoch: int, metrics: dict, plain: dict, predictions: dict
) -> None:
    """Rank 0 writes the checkpoint (every rank's random state, the predictions on the last epoch);
    every rank reports, as Ray Train requires."""
    rngs = distributed.gather(distributed.rng_state(w.device))  # after the draws of this epoch's evaluation
    last = epoch + 1 == cfg.students.epochs
    with tempfile.TemporaryDirectory(prefix="ckpt-") as checkpoint_dir:
        checkpoint = None
        if w.rank == 0:
            if last:
                torch.save(predictions, Path(checkpoint_dir) / PREDICTIONS_FILE)
                metrics.update(model_profiles(cfg, t.num_classes, t.teacher is not None))
            torch.save(
                {
                    "epoch": epoch,
                    "students": {n: m.state_dict() for n, m in plain.items()},
                    "optimizer": t.optimizer.state_dict(),
                    "scheduler": t.scheduler.state_dict(),
                    "rngs": rngs,
                    "workers": w.world,
                    "steps_per_epoch": t.steps_per_epoch,
                    "num_classes": t.num_classes,
                    "metrics": metrics,
                },
                Path(checkpoint_dir) / STATE_FILE,
            )
            checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
            log.info(f"{w.run}: " + epoch_line(metrics, cfg.students.names, cfg.students.epochs, t.teacher is not None))
            w.live.end_of_epoch(metrics)
        ray.train.report(metrics, checkpoint=checkpoint)


def _train(cfg: RunConfig) -> None:
    w = start_worker(cfg)
    mark = trace.mark if w.rank == 0 else lambda run, event: None
    mark(w.run, "worker_start")
    t = build_training(cfg, w)
    start_epoch, teacher_val = restore(cfg, w, t)
    if start_epoch >= cfg.students.epochs:
        return  # it had finished: `restore` reported its last epoch again
    hint = divergence_hint(cfg.students.lr, t.loss_settings)
    for epoch in range(start_epoch, cfg.students.epochs):
        mark(w.run, "epoch_start")
        metrics, bad = run_epoch(cfg, w, t, epoch, hint)
        plain, predictions, teacher_val = validate(cfg, w, t, epoch, metrics, bad, teacher_val, hint)
        mark(w.run, "epoch_end")
        checkpoint_and_report(cfg, w, t, epoch, metrics, plain, predictions)
        mark(w.run, "reported")


def restore_rank_rng(state: dict, rank: int, world: int, device, run: str) -> None:
    """This rank's random state as it was at the checkpoint: the next epoch draws as if the run had never
    stopped. A checkpoint of another number of workers cannot give that: the ranks keep fresh streams."""
    rngs = state.get("rngs") or []
    if len(rngs) == world:
        distributed.restore_rng(rngs[rank], device)
    elif rank == 0:
        log.warning(
            f"{run}: the checkpoint holds the random state of {len(rngs)} worker(s), this run has {world}: "
            "training continues, but not as the uninterrupted run would have"
        )


def report_final_again(checkpoint, state: dict, rank: int) -> None:
    """A run that finished before its driver was lost reports its final epoch again, so that Tune sees it end."""
    with tempfile.TemporaryDirectory(prefix="ckpt-") as copy:
        final = None
        if rank == 0:
            with checkpoint.as_directory() as d:
                shutil.copytree(d, copy, dirs_exist_ok=True)
            final = ray.train.Checkpoint.from_directory(copy)
        ray.train.report(state["metrics"] if rank == 0 else {}, checkpoint=final)
