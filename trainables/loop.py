"""`train_loop_per_worker`: the dual-student loop that a Ray Train `TorchTrainer` runs on each worker.

One step shares the batch, the data loading and one teacher forward (or a lookup of cached teacher
logits) between both students; one optimizer steps both, since L_a + L_b has disjoint parameters.
With beta = 0 the two students are two independent runs that happen to see the same batches.
Only rank 0 evaluates, reports metrics and writes checkpoints; every rank calls `ray.train.report`.
"""

from __future__ import annotations

import logging
import math
import os
import shutil
import tempfile
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Optional

import ray
import ray.train
import ray.train.torch
import torch
from torch import nn

from trainables import failures
from trainables.bank import Bank
from trainables.config import ConfigError, OptimConfig, RunConfig
from trainables.data import build_datasets, collate_skipping_none
from trainables.decode import device_batch, resolve_decode
from trainables.divergence import FiniteGuard, LossDiverged, divergence_hint
from trainables.live_metrics import LiveMetrics
from trainables.losses import needs_teacher, peer_warmup_factor, resolve_method, students_loss
from trainables.metric_names import BAD_IMAGES_KEY, MEAN_KEY, TEACHER_FORWARDS_KEY, VAL_KEYS, train_key
from trainables.metrics import expected_calibration_error, topk_correct
from trainables.models import build_model, model_profile
from trainables.teacher import load_soft_labels, load_teacher

log = logging.getLogger(__name__)  # Ray Train forwards worker logs; its patched print() would echo twice
STATE_FILE = "state.pt"
PREDICTIONS_FILE = "val_predictions.pt"
# How often (steps) the loss is checked for NaN/inf on a GPU, where a check synchronises with the host,
# and the live images/s gauge is updated.
FINITE_CHECK_EVERY = LIVE_EVERY_STEPS = 50


def build_optimizer(params, cfg: OptimConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.momentum > 0)
    return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def lr_factor(step: int, steps_per_epoch: int, cfg: OptimConfig) -> float:
    """Learning-rate multiplier at an optimizer step: linear warm-up, then cosine, step (x0.1 at 1/2 and 3/4) or flat."""
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
def evaluate(models: dict[str, nn.Module], loader, device, autocast, teacher=None, epoch: Optional[int] = None,
             hint: str = "") -> tuple[dict, dict]:
    """Val top-1/top-5/ECE per model, and per-sample records (confidence, correctness, teacher certainty).

    A model whose outputs are not finite raises `LossDiverged` before any metric sees them.
    """
    records = {name: {"confidence": [], "correct": []} for name in models}
    labels_all, teacher_logits_all = [], []
    for m in models.values():
        m.eval()
    for batch in loader:
        if batch is None:  # every image of the batch was unreadable and skipped
            continue
        images, labels, _ = batch
        images, labels = images.to(device, non_blocking=True), labels.to(device, non_blocking=True)
        labels_all.append(labels.cpu())
        with autocast:
            if teacher is not None:
                teacher_logits_all.append(teacher(images).float().cpu())
            for name, m in models.items():
                logits = m(images).float()
                probs = logits.softmax(1)
                records[name]["confidence"].append(probs.max(1).values.cpu())
                records[name]["correct"].append(topk_correct(logits, labels, 1).cpu())
                records[name].setdefault("top5", []).append(topk_correct(logits, labels, 5).cpu())
    metrics, predictions = {}, {"labels": torch.cat(labels_all)}
    if teacher_logits_all:
        predictions["teacher_logits"] = torch.cat(teacher_logits_all)
    for name, rec in records.items():
        conf, correct, top5 = (torch.cat(rec[k]) for k in ("confidence", "correct", "top5"))
        if not bool(torch.isfinite(conf).all()):
            where = f"loss diverged in epoch {epoch}: " if epoch else ""
            raise LossDiverged(f"{where}{name} gives NaN or inf outputs on the validation set (its weights are not "
                               "finite)" + (f"; {hint}" if hint else ""))
        values = (correct.float().mean().item(), top5.float().mean().item(), expected_calibration_error(conf, correct))
        metrics.update({f"{name}/{key}": value for key, value in zip(VAL_KEYS, values)})
        predictions[name] = {"confidence": conf, "correct": correct}
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
    failures.raise_recorded(cfg.failure_file)
    try:
        _train(cfg)
    except ConfigError as err:
        line = failures.one_line(err)
        failures.record(cfg.failure_file, line)
        raise (type(err)(line) if isinstance(err, failures.RunFailed) else failures.RunFailed(line)) from None


def _skipped(expected: int, seen: int, device, world: int) -> int:
    """Images skipped as unreadable: those a full epoch expects minus those that came, over all workers."""
    count = torch.tensor([expected - seen], device=device)
    if world > 1:
        torch.distributed.all_reduce(count)
    return int(count.item())


def use_deterministic_algorithms() -> None:
    """torch's deterministic kernels (an error where one has none) and cuBLAS's fixed workspace; no cuDNN autotuning."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # read when cuBLAS starts: before any CUDA op
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False


def rng_state(shuffle: torch.Generator, device: torch.device) -> dict[str, torch.Tensor]:
    """The random state an epoch draws from (rank 0's): the loader's order, dropout, the GPU's."""
    state = {"shuffle": shuffle.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def restore_rng(state: dict[str, torch.Tensor], shuffle: torch.Generator, device: torch.device) -> None:
    shuffle.set_state(state["shuffle"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _train(cfg: RunConfig) -> None:
    _quiet_ray_report_log()
    cpus = ray.get_runtime_context().get_assigned_resources().get("CPU", 1)
    torch.set_num_threads(max(1, int(cpus)))
    ctx = ray.train.get_context()
    rank, world = ctx.get_world_rank(), ctx.get_world_size()
    run = ctx.get_experiment_name()  # the trial id in a sweep, the run's name otherwise
    live = LiveMetrics(run) if rank == 0 else None
    device = ray.train.torch.get_device()
    on_gpu = device.type == "cuda"
    torch.manual_seed(cfg.seed)
    if cfg.deterministic:
        use_deterministic_algorithms()
    autocast = (torch.autocast("cuda", dtype=torch.bfloat16) if on_gpu and cfg.students.amp else nullcontext())
    memory_format = torch.channels_last if on_gpu and cfg.students.channels_last else torch.contiguous_format

    loss_settings = resolve_method(cfg.loss.settings())
    # data.decode gpu: the loaders read file bytes; decode_batch below decodes and augments on the device.
    raw_bytes = cfg.data.name == "imagefolder" and resolve_decode(cfg.data.decode, on_gpu) == "gpu"
    train_ds, val_ds, num_classes = build_datasets(cfg.data, cfg.data.split_seed, raw_bytes=raw_bytes)
    sc = cfg.students
    names = sc.names
    models = {}
    for name, arch in zip(names, sc.archs):
        model = build_model(arch, num_classes, cfg.data.image_size, sc.init_weights.get(arch))
        if sc.compile:
            model.compile()  # in place: the module, its state_dict keys and DDP's wrapping stay as they are
        models[name] = ray.train.torch.prepare_model(model.to(memory_format=memory_format))

    teacher, soft_labels, bank = None, None, None
    teacher_forwards = [0]  # counted by a hook, so a forward from anywhere in a training step shows
    if needs_teacher(loss_settings):
        if not cfg.teacher_dir:
            raise ValueError("this method needs a teacher but no teacher_dir was given: prepare it first")
        soft_labels = load_soft_labels(cfg.teacher_dir)
        if soft_labels is None and cfg.bank_dir:
            bank = Bank(cfg.bank_dir)
            bank.check(len(train_ds), num_classes)
            if sc.epochs > bank.epochs and rank == 0:
                log.warning(f"{run}: the soft-label bank holds {bank.epochs} epochs of views, this run trains "
                            f"{sc.epochs}: epoch e replays bank epoch e mod {bank.epochs}")
        teacher = load_teacher(cfg.teacher_dir, cfg.teacher.arch, num_classes, cfg.data.image_size, device)
        teacher = teacher.to(memory_format=memory_format)
        teacher.register_forward_pre_hook(lambda *_: teacher_forwards.__setitem__(0, teacher_forwards[0] + 1))

    loader_kw = dict(num_workers=cfg.data.loader_workers, pin_memory=on_gpu,
                     persistent_workers=cfg.data.loader_workers > 0, collate_fn=collate_skipping_none)
    shuffle = torch.Generator().manual_seed(cfg.seed)  # the data order: checkpointed with the global RNG
    train_loader = ray.train.torch.prepare_data_loader(
        torch.utils.data.DataLoader(train_ds, batch_size=sc.batch_size, shuffle=True, drop_last=True,
                                    generator=shuffle, **loader_kw),
        move_to_device=not raw_bytes)  # decode_jpeg takes the bytes from host memory
    val_loader = torch.utils.data.DataLoader(val_ds, batch_size=sc.batch_size * 2, shuffle=False, **loader_kw)

    params = [p for m in models.values() for p in m.parameters()]
    optimizer = build_optimizer(params, sc)
    steps_per_epoch = len(train_loader)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps_per_epoch, sc))

    start_epoch = 0
    checkpoint = ray.train.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as d:
            state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
        for name, m in models.items():
            unwrap(m).load_state_dict(state["students"][name])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if "rng" in state:  # the next epoch's order and dropout as if the run had never stopped
            restore_rng(state["rng"], shuffle, device)
        start_epoch = state["epoch"] + 1
        if start_epoch >= sc.epochs:
            # Finished before its driver was lost: report the final epoch again so Tune sees it end.
            with tempfile.TemporaryDirectory(prefix="ckpt-") as copy:
                final = None
                if rank == 0:
                    with checkpoint.as_directory() as d:
                        shutil.copytree(d, copy, dirs_exist_ok=True)
                    final = ray.train.Checkpoint.from_directory(copy)
                ray.train.report(state["metrics"] if rank == 0 else {}, checkpoint=final)
            return
        if rank == 0:
            log.info(f"{run}: resumed from the checkpoint of epoch {start_epoch}, continuing at epoch {start_epoch + 1}")

    hint = divergence_hint(sc.lr, loss_settings)
    teacher_val = None  # the frozen teacher's val figures, measured once
    if start_epoch:  # from the checkpoint: evaluating again would draw on the random state the run restored
        teacher_val = {k: v for k, v in state["metrics"].items() if k.startswith("teacher/")} or None
    for epoch in range(start_epoch, sc.epochs):
        if world > 1 and hasattr(train_loader, "sampler") and hasattr(train_loader.sampler, "set_epoch"):
            train_loader.sampler.set_epoch(epoch)
        for m in models.values():
            m.train()
        bank_views, bank_logits = bank.epoch(epoch) if bank is not None else (None, None)
        if bank is not None:
            bank_logits = bank_logits.to(device)  # one copy per epoch (25 MB on ImageNet-100), no host sync per step
            if not raw_bytes:
                train_ds.replay(bank_views)  # before the epoch's loader iterator starts
        teacher_forwards[0] = 0
        avg = _Averager()
        guard = FiniteGuard(epoch + 1, steps_per_epoch, 1 if device.type == "cpu" else FINITE_CHECK_EVERY, hint)
        seen, started = 0, time.perf_counter()
        for step, batch in enumerate(train_loader, start=1):
            if batch is None:  # every image of the batch was unreadable and skipped
                continue
            if raw_bytes:
                batch = device_batch(batch, train_ds, device, cfg.data.image_size, bank_views)
                if batch is None:
                    continue
            images, labels, index = batch
            images = images.to(device, non_blocking=True).to(memory_format=memory_format)
            labels = labels.to(device, non_blocking=True)
            with autocast:
                teacher_logits = None
                if teacher is not None:
                    if soft_labels is not None:
                        teacher_logits = soft_labels[index.cpu()].to(device)
                    elif bank_logits is not None:
                        teacher_logits = bank_logits[index.to(device)].float()
                    else:
                        with torch.no_grad():
                            teacher_logits = teacher(images).float()
                logits = [m(images).float() for m in models.values()]
            ramp = peer_warmup_factor(epoch + (step - 1) / steps_per_epoch, cfg.loss.peer_warmup_epochs)
            parts = students_loss(logits, labels, teacher_logits, names=names, label_smoothing=sc.label_smoothing,
                                  **{**loss_settings, "beta": loss_settings["beta"] * ramp})
            guard.update(step, parts)  # before the step: NaN never reaches the weights unnoticed for long
            optimizer.zero_grad(set_to_none=True)
            parts["total"].backward()
            optimizer.step()
            scheduler.step()
            avg.add({k: v for k, v in parts.items() if k != "total"}, labels.shape[0])
            seen += labels.shape[0]
            if live is not None and step % LIVE_EVERY_STEPS == 0:
                live.throughput(seen * world / (time.perf_counter() - started))
        guard.check()
        train_seconds = time.perf_counter() - started

        metrics = {"epoch": epoch + 1, "lr": scheduler.get_last_lr()[0],
                   "images_per_s": seen * world / max(train_seconds, 1e-9), "epoch_seconds": train_seconds,
                   TEACHER_FORWARDS_KEY: teacher_forwards[0]}
        metrics.update({train_key(k): v for k, v in avg.means().items()})
        if cfg.data.skip_bad_images:
            metrics[BAD_IMAGES_KEY] = _skipped(steps_per_epoch * sc.batch_size, seen, device, world)
        with tempfile.TemporaryDirectory(prefix="ckpt-") as checkpoint_dir:
            checkpoint = None
            if rank == 0:
                plain = {name: unwrap(m) for name, m in models.items()}
                if teacher is not None and teacher_val is None:
                    teacher_val, _ = evaluate({"teacher": teacher}, val_loader, device, autocast)
                last = epoch + 1 == sc.epochs
                val, predictions = evaluate(plain, val_loader, device, autocast, teacher if last else None,
                                            epoch=epoch + 1, hint=hint)
                metrics.update(val)
                metrics.update(teacher_val or {})
                metrics[MEAN_KEY] = sum(val[f"{n}/val_top1"] for n in names) / len(names)
                if cfg.data.skip_bad_images:
                    metrics[BAD_IMAGES_KEY] += len(val_ds) - len(predictions["labels"])
                if last:
                    torch.save(predictions, Path(checkpoint_dir) / PREDICTIONS_FILE)
                    metrics.update(model_profiles(cfg, num_classes, teacher is not None))
                torch.save({"epoch": epoch, "students": {n: m.state_dict() for n, m in plain.items()},
                            "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                            "rng": rng_state(shuffle, device), "metrics": metrics}, Path(checkpoint_dir) / STATE_FILE)
                checkpoint = ray.train.Checkpoint.from_directory(checkpoint_dir)
                log.info(f"{run}: " + epoch_line(metrics, names, sc.epochs, teacher is not None))
                live.end_of_epoch(metrics)
            ray.train.report(metrics, checkpoint=checkpoint)
