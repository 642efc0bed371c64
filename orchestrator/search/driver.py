"""Runs a validated sweep: Ray, the MLflow parent run, the teacher once, then the search or the comparison.

`python -m orchestrator.sweep` comes here once the spec is read, resolved and checked (`launch`).
"""

from __future__ import annotations

from typing import Optional

import ray
import yaml

from orchestrator.execution import SPEC_FILE, SweepFolder, start_ray, stop_own_ray
from orchestrator.search.comparison_rounds import run_comparison
from orchestrator.search.search_loop import run_search
from orchestrator.search.searcher import OPTUNA_DB
from orchestrator.search.teacher_logging import log_teacher_gating, log_teacher_uncertainty
from orchestrator.search.tune_callbacks import PublishStudy, StorageGuard, TraceTrials
from orchestrator.search.tune_state import KeepTuneState
from orchestrator.search.tuner import set_tune_environment
from orchestrator.spec import Spec, SpecError
from orchestrator.teacher import prepare_teacher_and_banks, run_seeds
from orchestrator.tracking import SweepTracker, trial_tracker, where_to_look
from trainables import failures, storage


def check_driver_slots() -> None:
    if ray.cluster_resources().get("TRAIN_DRIVER", 0) < 1:
        raise SpecError(
            "the Ray cluster has no TRAIN_DRIVER resource for trial drivers: start its head with "
            "ray start --head --resources='{\"TRAIN_DRIVER\": 8}'"
        )


def run_sweep(
    spec: Spec,
    folder: SweepFolder,
    uri: str,
    spec_text: str,
    commit: Optional[str],
    address: Optional[str] = None,
    resume: bool = False,
) -> int:
    """Runs a resolved, pre-flight-checked spec (absolute paths, fixed storage: see `Spec.resolved`)."""
    folder.local.mkdir(parents=True, exist_ok=True)
    train_storage = storage.join(folder.location, "train")
    if resume:
        folder.fetch(OPTUNA_DB)
        failures.clear_recorded(train_storage)  # --resume retries errored trials: the user may have fixed the cause
    set_tune_environment()
    dashboard = start_ray(address, driver_slots=spec.tune.max_concurrent_trials)
    check_driver_slots()
    experiment = spec.mlflow.experiment or spec.name
    tracker = SweepTracker(uri, experiment, folder.name, spec.data.model_dump(), folder.local, spec.mlflow.tags)
    try:
        code = tracked_sweep(spec, folder, tracker, spec_text, commit, dashboard, train_storage, resume)
    except BaseException:
        tracker.close(5, folder.local)
        raise
    stop_own_ray()  # Ray prints its last lines as it disconnects: before the line on MLflow's unsent writes
    tracker.close(spec.mlflow.send_timeout_s, folder.local)
    return code


def tracked_sweep(
    spec: Spec,
    folder: SweepFolder,
    tracker: SweepTracker,
    spec_text: str,
    commit: Optional[str],
    dashboard: Optional[str],
    train_storage: str,
    resume: bool,
) -> int:
    """The sweep or comparison, once Ray runs and its MLflow parent run (journaled) exists."""
    experiment = spec.mlflow.experiment or spec.name
    spec_yaml = yaml.safe_dump(spec.model_dump(), sort_keys=False)
    (folder.local / SPEC_FILE).write_text(spec_yaml)
    folder.publish(folder.local / SPEC_FILE)
    tracker.log_spec(spec.model_dump(), spec_text, commit)
    print(
        f"\nwatch it:\n  Ray dashboard: {dashboard or '(see the Ray cluster)'}"
        "  (token: run `ray get-auth-token`)\n"
        f"  MLflow: {where_to_look(tracker.uri, tracker.experiment_id)}"
        f"   (parent run '{folder.name}' in '{experiment}')\n"
    )

    run_cfg, banks = prepare_teacher_and_banks(spec, run_seeds(spec))
    log_teacher_uncertainty(tracker, run_cfg.teacher_dir, spec.loss.threshold)
    log_teacher_gating(tracker, spec, run_cfg.teacher_dir)
    callbacks = [
        trial_tracker(tracker, spec.students.epochs, spec.storage_location),
        PublishStudy(folder),
        StorageGuard(folder.location),
        KeepTuneState(),
        TraceTrials(),
    ]
    if spec.compare:
        return run_comparison(spec, folder, tracker, run_cfg.teacher_dir, train_storage, banks, resume, callbacks)
    return run_search(spec, folder, tracker, run_cfg.teacher_dir, train_storage, banks, resume, callbacks)
