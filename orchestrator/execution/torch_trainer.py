"""The Ray Train `TorchTrainer` of one run (a trial, the teacher, a bank), and its `fit()` that turns a
worker's one-line failure back into that line and sets Ray Train's settings (`TRAIN_ENVIRONMENT`).
A trial's trainer is a `LeanTorchTrainer`: no Ray Data actor per run, since no run uses Ray Datasets."""

from __future__ import annotations

import os
import uuid
from typing import Optional

import ray.train
from ray.train.torch import TorchTrainer

from orchestrator.execution.ray_internals import LeanTorchTrainer
from orchestrator.execution.storage_faults import StorageFailed, probe, reason_in, storage_failure
from orchestrator.spec import Resources, Spec
from trainables import failures, storage
from trainables.config import ConfigError, RunConfig
from trainables.loop import train_loop_per_worker

TRAIN_ENVIRONMENT = {
    # A run's controller asks its workers how they are this often (seconds): it sees an epoch's report, the
    # end of the run and a failure that much sooner (Ray's default, 2 s, is paid at each step of a run; 0.2
    # against 0.5 took a trial's tear-down from 2.4 s to 1.0 s, median of 5 each, benchmarks/overhead.py).
    "RAY_TRAIN_HEALTH_CHECK_INTERVAL_S": "0.2",
    # No actor per run watching for drained nodes: it only logs them, and its start costs each trial seconds.
    "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER": "0",
}


def set_train_environment() -> None:
    """Ray Train's settings (`TRAIN_ENVIRONMENT`) where the user set none: the controller that `fit()` starts
    gets them from the process calling it."""
    for key, value in TRAIN_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


def scaling_config(r: Resources) -> ray.train.ScalingConfig:
    per_worker = {"CPU": r.cpus_per_worker}
    if r.use_gpu:
        per_worker["GPU"] = r.gpus_per_worker
    return ray.train.ScalingConfig(num_workers=r.num_workers, use_gpu=r.use_gpu, resources_per_worker=per_worker)


def failure_location(storage_path: str, name: str) -> str:
    """Where the workers of run `name` record a failure that a restart cannot fix: in the run's own folder."""
    return storage.join(storage_path, name, failures.FAILURE_FILE)


def attempt_failure_location(storage_path: str, name: str) -> str:
    """A failure file of its own for one `fit()` of a run that is never resumed (the teacher, the bank): the
    restarts of that fit stop at its line, and a later fit, once the user fixed the cause, starts clean."""
    return storage.join(storage_path, name, f"failure-{uuid.uuid4().hex[:12]}.txt")


def worker_failure(err: ray.train.TrainingFailedError, storage_path: str) -> Optional[ConfigError]:
    """The one-line error behind a failed `fit()`, if any: the workers' own (divergence, an unreadable image,
    ...) or a full or read-only storage."""
    for failure in getattr(err, "worker_failures", {}).values():
        if isinstance(failure, ConfigError):
            return failure
    reason = probe(storage_path) or reason_in(str(err))
    return storage_failure(storage_path, reason) if reason else None


def fit(trainer: TorchTrainer) -> ray.train.Result:
    """`trainer.fit()`, where a worker's one-line error comes back as `RunFailed` with that line alone."""
    set_train_environment()
    try:
        return trainer.fit()
    except ray.train.TrainingFailedError as err:
        failure = worker_failure(err, trainer.run_config.storage_path)
        if failure is None:
            raise
        if isinstance(failure, StorageFailed):
            raise failure from None
        raise failures.RunFailed(failures.one_line(failure)) from None


def build_trainer(
    spec: Spec, run_cfg: RunConfig, name: str, storage_path: str, callbacks: Optional[list] = None
) -> TorchTrainer:
    """The students' run `name` under `storage_path`; its workers record unfixable failures in its folder."""
    run_cfg = run_cfg.model_copy(update={"failure_file": failure_location(storage_path, name)})
    return LeanTorchTrainer(
        train_loop_per_worker,
        train_loop_config=run_cfg.model_dump(),
        scaling_config=scaling_config(spec.resources),
        run_config=ray.train.RunConfig(
            name=name,
            storage_path=storage_path,
            callbacks=callbacks or [],
            checkpoint_config=ray.train.CheckpointConfig(num_to_keep=1),
            failure_config=ray.train.FailureConfig(max_failures=spec.resources.max_failures),
        ),
    )
