"""The teacher and its soft-label banks, prepared once on the driver before any trial: trained by a Ray
Train run (or found in the cache), checked, and handed to the trials as cache folders."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import ray.train
import torch

from orchestrator.execution import LeanTorchTrainer, attempt_failure_location, fit, scaling_config
from orchestrator.spec import Spec
from trainables import bank, failures, storage
from trainables.config import ConfigError, RunConfig
from trainables.data import build_datasets
from trainables.files import STATE_FILE
from trainables.loop import train_loop_per_worker
from trainables.methods import needs_teacher, resolve_method
from trainables.models import build_model, output_classes
from trainables.teacher import read_state_dict, teacher_training_config, write_teacher
from trainables.teacher_cache import META_FILE as TEACHER_META
from trainables.teacher_cache import is_cached, teacher_dir

# A teacher whose val top-1 is below this many times chance (1/classes) has learned next to nothing.
CHANCE_MARGIN = 2.0


def teacher_cache(spec: Spec) -> str:
    return storage.join(spec.storage_location, "teachers")


def chance_warning(arch: str, top1: Optional[float], num_classes: int) -> Optional[str]:
    """A loud line when the teacher's val top-1 is not clearly above chance: its soft labels would be noise,
    and the students' figures would look like a failure of the method."""
    chance = 1.0 / num_classes
    if top1 is None or top1 >= CHANCE_MARGIN * chance:
        return None
    return (
        f"WARNING: the teacher {arch} reaches val top-1 {top1:.4f}, not clearly above chance level {chance:.4f} "
        f"(1/{num_classes} classes): it learned next to nothing and the students will distil noise; check "
        "teacher.lr, teacher.warmup_epochs and teacher.epochs, or give a teacher.checkpoint"
    )


def warn_if_at_chance(folder: str, log=print) -> None:
    """Repeat a cached teacher's chance-level warning (kept in its meta file): every sweep reusing it says so.

    Reads the meta file alone: a bucket's teacher folder is not downloaded for it."""
    warning = json.loads(storage.read_text(storage.join(folder, TEACHER_META)) or "{}").get("warning")
    if warning:
        log(warning)


def checkpoint_classes(cfg: RunConfig, state: dict) -> int:
    """The class count of a given teacher checkpoint, from its last layer, not from the data (the driver may
    not see them). Checked against the data here only for the embedded datasets, which ship with the package;
    for an image folder the workers check it when they load the teacher."""
    try:
        num_classes = output_classes(state)
        build_model(cfg.teacher.arch, num_classes, cfg.data.image_size).load_state_dict(state)
    except (ValueError, RuntimeError) as err:
        raise ConfigError(
            f"teacher.checkpoint does not fit a {cfg.teacher.arch} at {cfg.data.image_size} px "
            f"({str(err).splitlines()[0]}): check teacher.arch"
        ) from None
    if cfg.data.name != "imagefolder":
        _, _, data_classes = build_datasets(cfg.data, cfg.data.split_seed)
        if data_classes != num_classes:
            raise ConfigError(
                f"teacher.checkpoint {cfg.teacher.checkpoint} has {num_classes} classes and the data "
                f"{data_classes}: give a teacher trained on this data"
            )
    return num_classes


def ensure_teacher(
    cfg: RunConfig,
    cache_root: str,
    scaling: ray.train.ScalingConfig,
    log=print,
    force: bool = False,
    max_failures: int = 0,
) -> Optional[str]:
    """The prepared teacher's location: a cache hit, a loaded checkpoint, or a fresh Ray Train run.

    Returns None when the method uses no teacher (unless `force`: a comparison's other methods may).
    Call it once on the driver, before any trial. The training run restarts from its last epoch up to
    `max_failures` times after a lost worker. The driver never opens an image folder's data.
    """
    if not force and not needs_teacher(resolve_method(cfg.loss.settings())):
        return None
    folder = teacher_dir(cache_root, cfg)
    if is_cached(folder):
        log(f"teacher: cache hit, reusing {folder}")
        warn_if_at_chance(folder, log)
        return folder
    if cfg.teacher.checkpoint:
        log(f"teacher: loading {cfg.teacher.checkpoint}")
        state = read_state_dict(cfg.teacher.checkpoint)
        checkpoint_classes(cfg, state)
        write_teacher(folder, state, cfg, {"source": str(cfg.teacher.checkpoint)}, cfg.teacher.cache_soft_labels)
        return folder
    epochs = f"{cfg.teacher.epochs} epoch{'' if cfg.teacher.epochs == 1 else 's'}"
    log(f"teacher: cache miss, training {cfg.teacher.arch} for {epochs} into {folder}")
    name, runs = f"teacher-{storage.basename(folder)}", storage.join(cache_root, "runs")
    training = teacher_training_config(cfg).model_copy(update={"failure_file": attempt_failure_location(runs, name)})
    trainer = LeanTorchTrainer(
        train_loop_per_worker,
        train_loop_config=training.model_dump(),
        scaling_config=scaling,
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=runs,
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=max_failures),
        ),
    )
    try:
        result = fit(trainer)
    except failures.RunFailed as err:  # the loop names the students' settings; the teacher trains with its own
        raise failures.RunFailed(f"training the teacher: {str(err).replace('students.', 'teacher.')}") from None
    with result.checkpoint.as_directory() as d:
        state = torch.load(Path(d) / STATE_FILE, map_location="cpu", weights_only=True)
    student_state = next(iter(state["students"].values()))
    num_classes = state.get("num_classes") or output_classes(student_state)  # the workers', from the data
    top1 = {k.split("/", 1)[1]: v for k, v in result.metrics.items() if k.endswith(("val_top1", "val_top5"))}
    warning = chance_warning(cfg.teacher.arch, top1.get("val_top1"), num_classes)
    meta = {"source": "trained", **top1, **({"warning": warning} if warning else {})}
    write_teacher(folder, student_state, cfg, meta, cfg.teacher.cache_soft_labels)
    log(f"teacher: trained, val top-1 {top1.get('val_top1', float('nan')):.4f}")
    if warning:
        log(warning)
    return folder


def ensure_bank(
    cfg: RunConfig,
    teacher_folder: Optional[str],
    cache_root: str,
    scaling: ray.train.ScalingConfig,
    log=print,
    max_failures: int = 0,
) -> Optional[str]:
    """The teacher's soft-label bank for augmented data (`trainables.bank`): a cache hit or a fresh Ray Train run.

    None when there is no teacher, `teacher.cache_soft_labels` is off or the data need no bank.
    """
    if not teacher_folder or not cfg.teacher.cache_soft_labels or not bank.applies(cfg.data):
        return None
    identity = bank.bank_identity(cfg, teacher_folder, scaling.use_gpu)
    folder = bank.bank_location(cfg, teacher_folder, scaling.use_gpu)
    epochs = bank.bank_epochs(cfg)
    if bank.is_built(folder):
        log(f"teacher: bank cache hit, reusing {folder}")
    else:
        log(
            f"teacher: building a soft-label bank of {epochs} epochs of augmented views on "
            f"{scaling.num_workers} worker(s) into {folder}"
        )
        trainer = LeanTorchTrainer(
            bank.build_bank_per_worker,
            train_loop_config=cfg.model_copy(
                update={
                    "teacher_dir": teacher_folder,
                    "bank_dir": folder,
                    "failure_file": attempt_failure_location(
                        storage.join(cache_root, "runs"), f"bank-{storage.basename(folder)}"
                    ),
                }
            ).model_dump(),
            scaling_config=scaling,
            run_config=ray.train.RunConfig(
                name=f"bank-{storage.basename(folder)}",
                storage_path=storage.join(cache_root, "runs"),
                failure_config=ray.train.FailureConfig(max_failures=max_failures),
            ),
        )
        try:
            fit(trainer)
        except failures.RunFailed as err:
            raise failures.RunFailed(f"building the soft-label bank: {err}") from None
        bank.write_meta(folder, cfg, scaling.num_workers, identity)
    if cfg.students.epochs > epochs:
        log(
            f"teacher: the bank holds {epochs} epochs of views and the students train {cfg.students.epochs}: "
            f"it is reused cyclically (set teacher.bank_epochs to avoid it)"
        )
    return folder


def run_seeds(spec: Spec) -> list[int]:
    """The seeds the spec's runs train with: a comparison's, else the spec's own."""
    return list(spec.compare.seeds) if spec.compare else [spec.seed]


def prepare_teacher(spec: Spec) -> RunConfig:
    """The run config with `teacher_dir` (and `bank_dir`) set: teacher and bank are made once, before any
    student run."""
    run_cfg, banks = prepare_teacher_and_banks(spec, [spec.seed])
    return run_cfg.model_copy(update={"bank_dir": banks[spec.seed]})


def prepare_teacher_and_banks(spec: Spec, seeds: list[int]) -> tuple[RunConfig, dict[int, Optional[str]]]:
    """The teacher (once) and one soft-label bank per seed (None where the data need none).

    A bank's views follow its run's seed unless `teacher.bank_seed` is set, so each seed of a comparison
    sees its own views; every method and trial of that seed shares its bank. The banks are built by the
    trials' own resources, split across their workers.
    """
    run_cfg = spec.run_config()
    teacher_resources = spec.teacher_resources or spec.resources
    folder = ensure_teacher(
        run_cfg,
        teacher_cache(spec),
        scaling_config(teacher_resources),
        force=spec.compare is not None,
        max_failures=teacher_resources.max_failures,
    )
    banks = {
        seed: ensure_bank(
            run_cfg.model_copy(update={"seed": seed}),
            folder,
            teacher_cache(spec),
            scaling_config(spec.resources),
            max_failures=spec.resources.max_failures,
        )
        for seed in seeds
    }
    return run_cfg.model_copy(update={"teacher_dir": folder}), banks
