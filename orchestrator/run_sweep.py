"""Runs a validated sweep: Ray, the teacher once, `tune.Tuner` with Optuna and ASHA, MLflow, results."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

import optuna
import ray
import ray.tune
import yaml
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
from ray.tune.search.optuna import OptunaSearch

from orchestrator.cli import start_ray
from orchestrator.spec import Spec, SpecError, optuna_space
from orchestrator.tables import format_table, trials_table, write_results
from orchestrator.tracking import SweepTracker, git_commit
from orchestrator.trainer import prepare_teacher
from orchestrator.trial import trial_trainable

OPTUNA_DB = "optuna.db"
# Tune saves its experiment state at least this often (seconds), so a killed driver loses little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")


def optuna_storage(folder: Path) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{folder / OPTUNA_DB}")


def build_tuner(spec: Spec, folder: Path, trainable, callback) -> ray.tune.Tuner:
    t = spec.tune
    searcher = OptunaSearch(space=optuna_space(spec), metric=t.metric, mode=t.mode, seed=t.seed,
                            study_name=folder.name, storage=optuna_storage(folder))
    if t.scheduler == "asha":
        scheduler = ASHAScheduler(time_attr="epoch", max_t=spec.students.epochs, grace_period=t.grace_period,
                                  reduction_factor=t.reduction_factor)
    else:
        scheduler = FIFOScheduler()
    return ray.tune.Tuner(
        trainable,
        tune_config=ray.tune.TuneConfig(metric=t.metric, mode=t.mode, search_alg=searcher, scheduler=scheduler,
                                        num_samples=t.num_trials, max_concurrent_trials=t.max_concurrent_trials),
        run_config=ray.tune.RunConfig(name=folder.name, storage_path=str(folder.parent), callbacks=[callback],
                                      failure_config=ray.tune.FailureConfig(max_failures=1)),
    )


def trial_records(grid) -> list[dict]:
    """What the tables need of each Tune result: its sampled values, last metrics and error."""
    records = []
    for result in grid:
        config = dict(result.config or {})
        metrics = dict(result.metrics or {})
        records.append({"trial_id": metrics.get("trial_id") or Path(result.path or "?").name,
                        "params": config, "metrics": metrics,
                        "error": str(result.error).splitlines()[0] if result.error else None})
    return records


def check_driver_slots() -> None:
    if ray.cluster_resources().get("TRAIN_DRIVER", 0) < 1:
        raise SpecError("the Ray cluster has no TRAIN_DRIVER resource for trial drivers: start its head with "
                        "ray start --head --resources='{\"TRAIN_DRIVER\": 8}'")


def run_sweep(spec: Spec, folder: Path, uri: str, spec_path: str, address: Optional[str] = None,
              resume: bool = False) -> int:
    folder.mkdir(parents=True, exist_ok=True)
    dashboard = start_ray(address, driver_slots=spec.tune.max_concurrent_trials)
    check_driver_slots()
    experiment = spec.mlflow.experiment or spec.name
    tracker = SweepTracker(uri, experiment, folder.name)
    spec_yaml = yaml.safe_dump(spec.model_dump(), sort_keys=False)
    (folder / "spec.yaml").write_text(spec_yaml)
    tracker.log_spec(spec.model_dump(), Path(spec_path).read_text(), git_commit(Path.cwd()))
    print(f"\nwatch it:\n  Ray dashboard: {dashboard or '(see the Ray cluster)'}"
          "  (token: run `ray get-auth-token`)\n"
          f"  MLflow: mlflow ui --backend-store-uri {uri}   (parent run '{folder.name}' in '{experiment}')\n")

    run_cfg = prepare_teacher(spec)
    trainable = trial_trainable(spec, run_cfg.teacher_dir, str(folder / "train"))
    if resume and ray.tune.Tuner.can_restore(str(folder)):
        print(f"resuming {folder}")
        tuner = ray.tune.Tuner.restore(str(folder), trainable, resume_errored=True)
    else:
        tuner = build_tuner(spec, folder, trainable, tracker.callback(spec.students.epochs))
    grid = tuner.fit()

    records = trial_records(grid)
    finished = sum(1 for r in grid if r.metrics or r.error)
    if len(records) < spec.tune.num_trials or finished < spec.tune.num_trials:
        print(f"sweep interrupted after {finished} of {spec.tune.num_trials} trials: "
              f"continue it with --resume ({folder})")
        tracker.finish("KILLED")
        return 130
    df = trials_table(records, spec)
    study = optuna.load_study(study_name=folder.name, storage=optuna_storage(folder))
    files = write_results(df, spec, folder, study)
    tracker.log_artifacts(list(files.values()))
    tracker.finish()
    print("\n" + format_table(df))
    stopped = int((df["state"] == "stopped early").sum())
    print(f"\n{len(df)} trials, {stopped} stopped early by ASHA; results in {folder}")
    if "best.yaml" in files:
        print(f"best configuration: python -m orchestrator.train {files['best.yaml']}")
    return 0
