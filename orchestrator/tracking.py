"""MLflow: one parent run per sweep, one nested child run per trial, logged from the driver.

Logging from the driver (a Tune callback) works on a multi-node cluster where only the head node can
write a sqlite store, and with an `http://` tracking server. Runs are found again by tags, so a
resumed sweep keeps its parent run and a restarted trial keeps its child run: each trial once.
"""

from __future__ import annotations

import os
import re
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from trainables import storage
from trainables.config import ConfigError
from trainables.loop import PREDICTIONS_FILE
from trainables.metric_names import BAD_IMAGES_KEY

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SWEEP_TAG = "dualkd.sweep"
TRIAL_TAG = "dualkd.trial_id"
PARENT_TAG = "mlflow.parentRunId"
MAX_PARAM_LENGTH = 6000


def tracking_uri(configured: Optional[str]) -> str:
    return configured or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def sqlite_path(uri: str) -> Optional[Path]:
    """The database file of a `sqlite:///` URI, else None."""
    return Path(uri.removeprefix("sqlite:///")).resolve() if uri.startswith("sqlite:///") else None


def open_client(uri: str) -> MlflowClient:
    """A client whose store exists: a new sqlite store is created by one process at a time.

    MLflow creates a sqlite store's schema on first use; two processes doing that at once (two sweeps
    started together in a fresh folder) collide (`duplicate column name: step`). A file lock beside the
    database serialises that first use; a store that exists passes the lock in milliseconds.
    """
    db = sqlite_path(uri)
    if db is None:
        return MlflowClient(tracking_uri=uri)
    db.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{db}.lock", timeout=300):
        return MlflowClient(tracking_uri=uri)  # its store creates or upgrades the schema: under the lock


def experiment_id(client: MlflowClient, name: str, artifact_location: Optional[str]) -> str:
    """The experiment's id, created when missing; another driver may create it at the same moment."""
    found = client.get_experiment_by_name(name)
    if found:
        return found.experiment_id
    try:
        return client.create_experiment(name, artifact_location=artifact_location)
    except MlflowException:
        found = client.get_experiment_by_name(name)
        if found is None:
            raise
        return found.experiment_id


def _user_error_names() -> set[str]:
    """Class names of the one-line user errors (ConfigError and its subclasses)."""
    names, todo = set(), [ConfigError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def error_line(text: str) -> str:
    """The line that says why a trial failed: the last line of its error text, which is the exception.

    For our one-line user errors (a diverged loss, an unreadable image) the exception's class is
    dropped, leaving the message the user reads on the command line.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "failed"
    match = re.match(r"^(?:\w+\.)*(\w+): (.*)$", lines[-1].strip())
    if match and match.group(1) in _user_error_names():
        return match.group(2)
    return lines[-1].strip()


def artifact_location(uri: str) -> Optional[str]:
    """A sqlite store's artifacts go beside its database file, not into `./mlruns` of whichever folder
    the driver runs in (MLflow's default: a Ray job's temporary folder, or a second machine's)."""
    db = sqlite_path(uri)
    if db is None:
        return None  # a tracking server decides (and serves) where artifacts go
    return (db.parent / "mlruns").as_uri()


def git_commit(path: Path) -> Optional[str]:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=path, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


RUN_METRICS = ("epoch", "val_top1_mean", "teacher_weight", "gated", "images_per_s", "epoch_seconds", "lr",
               BAD_IMAGES_KEY)


def numeric_metrics(result: dict) -> dict[str, float]:
    """What the loop reported (per-student keys hold a '/'), without Tune's bookkeeping."""
    return {k: float(v) for k, v in result.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and ("/" in k or k in RUN_METRICS)}


class SweepTracker:
    """The parent run of one sweep: created once, found again by its sweep-folder tag on resume."""

    def __init__(self, uri: str, experiment: str, sweep_id: str):
        self.client = open_client(uri)
        self.uri = uri
        self.experiment_id = experiment_id(self.client, experiment, artifact_location(uri))
        self.sweep_id = sweep_id
        runs = self.client.search_runs([self.experiment_id], f"tags.`{SWEEP_TAG}` = '{sweep_id}' "
                                       f"and tags.`{TRIAL_TAG}` = 'parent'", max_results=1)
        if runs:
            self.parent_id = runs[0].info.run_id
            self.client.update_run(self.parent_id, status="RUNNING")
        else:
            run = self.client.create_run(self.experiment_id, run_name=sweep_id,
                                         tags={SWEEP_TAG: sweep_id, TRIAL_TAG: "parent"})
            self.parent_id = run.info.run_id

    def log_spec(self, spec_dict: dict, spec_yaml: str, commit: Optional[str]) -> None:
        params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in flatten(spec_dict).items()
                  if not k.startswith("search.")]
        existing = self.client.get_run(self.parent_id).data.params
        params = [p for p in params if p.key not in existing]
        tags = [RunTag("mlflow.source.git.commit", commit)] if commit else []
        self.client.log_batch(self.parent_id, params=params[:100], tags=tags)
        for i in range(100, len(params), 100):
            self.client.log_batch(self.parent_id, params=params[i:i + 100])
        self.client.log_text(self.parent_id, spec_yaml, "spec.yaml")
        self.client.log_dict(self.parent_id, spec_dict, "resolved_config.json")

    def log_artifacts(self, files: list[Path]) -> None:
        for path in files:
            self.client.log_artifact(self.parent_id, str(path))

    def finish(self, status: str = "FINISHED") -> None:
        self.client.set_terminated(self.parent_id, status=status)

    def callback(self, epochs: int, storage_location: str) -> "TrialTracker":
        return TrialTracker(self.uri, self.experiment_id, self.parent_id, self.sweep_id, epochs, storage_location)


class TrialTracker(Callback):
    """Tune callback on the driver: a child run per trial, its params, and every reported epoch."""

    def __init__(self, uri: str, experiment_id: str, parent_id: str, sweep_id: str, epochs: int,
                 storage_location: str):
        self.uri, self.experiment_id, self.parent_id, self.sweep_id = uri, experiment_id, parent_id, sweep_id
        self.epochs = epochs
        self.storage = storage_location  # where the trials' checkpoints are: a folder or a bucket
        self.client = MlflowClient(tracking_uri=uri)
        self.runs: dict[str, str] = {}

    def __getstate__(self):  # Tune pickles callbacks into its experiment state; the client is rebuilt
        return {k: v for k, v in self.__dict__.items() if k != "client"}

    def __setstate__(self, state):
        self.__dict__.update(state)
        self.client = MlflowClient(tracking_uri=self.uri)

    def run_id(self, trial) -> str:
        if trial.trial_id in self.runs:
            return self.runs[trial.trial_id]
        found = self.client.search_runs([self.experiment_id], f"tags.`{SWEEP_TAG}` = '{self.sweep_id}' "
                                        f"and tags.`{TRIAL_TAG}` = '{trial.trial_id}'", max_results=1)
        if found:
            run_id = found[0].info.run_id
        else:
            run = self.client.create_run(self.experiment_id, run_name=str(trial),
                                         tags={PARENT_TAG: self.parent_id, SWEEP_TAG: self.sweep_id,
                                               TRIAL_TAG: trial.trial_id})
            run_id = run.info.run_id
            params = [Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in flatten(trial.config).items()]
            self.client.log_batch(run_id, params=params)
        self.runs[trial.trial_id] = run_id
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.client.update_run(self.run_id(trial), status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        ts = int(result.get("timestamp", 0) * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in numeric_metrics(result).items()]
        self.client.log_batch(self.run_id(trial), metrics=metrics)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epochs = int(last.get("epoch", 0))
        checkpoint = last.get(CHECKPOINT_PATH_KEY)
        if checkpoint:  # the last epoch's per-sample records, for the uncertainty analysis
            self.log_predictions(trial, storage.join(storage.on_same_filesystem(checkpoint, self.storage),
                                                     PREDICTIONS_FILE))
        self.client.set_tag(self.run_id(trial), "state", "completed" if epochs >= self.epochs else "stopped early")
        self.client.set_terminated(self.run_id(trial), status="FINISHED")

    def log_predictions(self, trial, location: str) -> None:
        if not storage.exists(location):  # the final epoch is the one that writes them
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / PREDICTIONS_FILE
            storage.download(location, local)
            self.client.log_artifact(self.run_id(trial), str(local))

    def on_trial_error(self, iteration, trials, trial, **info):
        error_file = Path(trial.error_file or "/nonexistent")
        text = error_file.read_text() if error_file.is_file() else ""
        self.client.set_tag(self.run_id(trial), "error", error_line(text)[:500])
        self.client.set_terminated(self.run_id(trial), status="FAILED")
