"""What the fault tests share: a tiny sweep spec run as a subprocess, and the checks that every trial
ended exactly once (in Tune's table, in MLflow with each epoch once, and in the Optuna study)."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.tracking import PARENT_TAG, TRIAL_TAG
from tests.conftest import tiny_spec_dict
from tests.servers import Process, base_env

EPOCHS = 3


def write_spec(tmp_path: Path, storage: Path, name: str, uri: str, trials: int, images: int = 240, **resources) -> Path:
    """A sweep of `trials` tiny trials of EPOCHS epochs on `images` training digits, every one run to the end (FIFO).
    The default is `tiny_spec_dict`'s, so its teacher is the one the session's other tiny sweeps share."""
    raw = tiny_spec_dict(
        tmp_path,
        name=name,
        data={"train_subset": images},
        students={"epochs": EPOCHS},
        search={"loss.alpha": {"type": "float", "low": 0.2, "high": 0.8}},
        tune={"num_trials": trials, "max_concurrent_trials": 2, "scheduler": "fifo"},
        resources=resources,
        mlflow={"experiment": name, "tracking_uri": uri},
    )
    raw["storage"] = str(storage)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def start_sweep(spec: Path, tmp_path: Path) -> Process:
    return Process(
        [sys.executable, "-m", "orchestrator.sweep", str(spec)], tmp_path / f"{spec.stem}.log", base_env(), cwd=tmp_path
    )


def wait_for(sweep: Process, timeout: float = 600) -> None:
    try:
        sweep.proc.wait(timeout=timeout)
    finally:
        sweep.stop(grace=5)  # whatever of its Ray is left
    assert sweep.proc.returncode == 0, sweep.tail()


def trial_runs(client: MlflowClient, experiment: str) -> list:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(PARENT_TAG)]


def logged_epoch(client: MlflowClient, experiment: str) -> int:
    """The highest epoch any trial of the sweep has in MLflow (0 before the first)."""
    return max((int(r.data.metrics.get("epoch", 0)) for r in trial_runs(client, experiment)), default=0)


def wait_for_epoch(sweep: Process, client: MlflowClient, experiment: str, timeout: float = 400) -> int:
    """Wait until some trial of the running sweep has an epoch in MLflow (or the sweep ends); that epoch."""
    deadline = time.time() + timeout
    while time.time() < deadline and sweep.proc.poll() is None and logged_epoch(client, experiment) < 1:
        time.sleep(0.5)
    return logged_epoch(client, experiment)


def check_every_trial_once(
    client: MlflowClient, experiment: str, storage: Path, trials: int, epochs: int = EPOCHS
) -> list:
    """Tune's table, MLflow and the Optuna study each hold every trial once, each epoch once in MLflow."""
    folder = next((storage / "sweeps").glob(f"{experiment}-*"))
    table = pd.read_csv(folder / "results.csv", dtype={"trial_id": str})  # an id like 1234e567 is no number
    assert len(table) == trials and table["trial_id"].is_unique
    assert set(table["state"]) == {"completed"}

    runs = trial_runs(client, experiment)
    assert sorted(r.data.tags[TRIAL_TAG] for r in runs) == sorted(table["trial_id"])
    for run in runs:
        assert run.info.status == "FINISHED", run.data.tags
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "epoch")]
        assert sorted(steps) == list(range(1, epochs + 1)), (run.data.tags[TRIAL_TAG], steps)
    exp = client.get_experiment_by_name(experiment)
    parents = [r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(TRIAL_TAG) == "parent"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"

    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * trials
    assert sorted(t.value for t in study.trials) == pytest.approx(sorted(r.data.metrics["val_top1_mean"] for r in runs))
    return runs


def trials_wall(runs: list) -> float:
    """Seconds from the first trial's start to the last one's end (Ray start-up and the teacher left out)."""
    return (max(r.info.end_time for r in runs) - min(r.info.start_time for r in runs)) / 1000
