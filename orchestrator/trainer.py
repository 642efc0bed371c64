"""Builds what one run needs on the driver: the prepared teacher and the `TorchTrainer`."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import ray.train
from ray.train.torch import TorchTrainer

from orchestrator.spec import Resources, Spec
from trainables.config import RunConfig
from trainables.loop import train_loop_per_worker
from trainables.teacher import ensure_teacher


def scaling_config(r: Resources) -> ray.train.ScalingConfig:
    per_worker = {"CPU": r.cpus_per_worker}
    if r.use_gpu:
        per_worker["GPU"] = r.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=per_worker)


def teacher_cache(spec: Spec) -> Path:
    return spec.storage_path / "teachers"


def prepare_teacher(spec: Spec) -> RunConfig:
    """The run config with `teacher_dir` set: train or load the teacher once, before any student run."""
    run_cfg = spec.run_config()
    folder = ensure_teacher(run_cfg, teacher_cache(spec), scaling_config(spec.teacher_resources or spec.resources),
                            str(spec.storage_path / "teachers" / "runs"), force=spec.compare is not None)
    return run_cfg.model_copy(update={"teacher_dir": str(folder) if folder else None})


def build_trainer(spec: Spec, run_cfg: RunConfig, name: str, storage_path: str,
                  callbacks: Optional[list] = None) -> TorchTrainer:
    return TorchTrainer(
        train_loop_per_worker,
        train_loop_config=run_cfg.model_dump(),
        scaling_config=scaling_config(spec.resources),
        run_config=ray.train.RunConfig(
            name=name, storage_path=storage_path, callbacks=callbacks or [],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=spec.resources.max_failures)),
    )
