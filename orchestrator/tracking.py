"""MLflow: one parent run per sweep, one nested child run per trial, logged from the driver.

Logging from the driver (a Tune callback) works on a multi-node cluster where only the head node can
write a sqlite store, and with an `http://` tracking server. Runs are found again by tags, so a
resumed sweep keeps its parent run and a restarted trial keeps its child run: each trial once.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from filelock import FileLock
from mlflow import MlflowClient
from mlflow.entities import DatasetInput, InputTag, Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from ray.train import UserCallback
from ray.tune import Callback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY

from orchestrator.journal import JOURNAL_FOLDER, PARENT_TAG, Journal, open_journal
from orchestrator.sender import Sender
from trainables import storage
from trainables.config import ConfigError
from trainables.files import PREDICTIONS_FILE
from trainables.metric_names import BAD_IMAGES_KEY, TEACHER_FORWARDS_KEY

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
SWEEP_TAG = "dualkd.sweep"
TRIAL_TAG = "dualkd.trial_id"
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


def error_text(trial) -> str:
    """The traceback Tune wrote for a failed trial ("" when there is none)."""
    error_file = Path(trial.error_file or "/nonexistent")
    return error_file.read_text(errors="replace") if error_file.is_file() else ""


def artifact_location(uri: str) -> Optional[str]:
    """A sqlite store's artifacts go beside its database file, not into `./mlruns` of whichever folder
    the driver runs in (MLflow's default: a Ray job's temporary folder, or a second machine's)."""
    db = sqlite_path(uri)
    if db is None:
        return None  # a tracking server decides (and serves) where artifacts go
    return (db.parent / "mlruns").as_uri()


def absolute_uri(uri: str) -> str:
    """A relative sqlite store made absolute, for processes that run in other folders."""
    db = sqlite_path(uri)
    return f"sqlite:///{db}" if db else uri


def where_to_look(uri: str, experiment_id: str) -> str:
    """How to open the experiment's runs table. MLflow 3.17's UI opens an experiment on its GenAI overview in
    a browser that never chose "Model training", whatever the experiment's kind tag says: link the table."""
    page = f"#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    if uri.startswith(("http://", "https://")):
        return f"{uri.rstrip('/')}/{page}"
    return f"mlflow ui --backend-store-uri {uri}, then http://127.0.0.1:5000/{page}"


def git_commit() -> Optional[str]:
    """The commit of the checkout the command runs in. A `ray job submit` upload has no .git (and its
    folder may be replaced while Ray starts): the submitter can pass the commit as DUALKD_GIT_COMMIT."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.getcwd(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0:
        return out.stdout.strip()
    return os.environ.get("DUALKD_GIT_COMMIT") or None


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


RUN_METRICS = (
    "epoch",
    "val_top1_mean",
    "teacher_weight",
    "gated",
    "images_per_s",
    "epoch_seconds",
    "lr",
    BAD_IMAGES_KEY,
    TEACHER_FORWARDS_KEY,
)
PROFILE_SUFFIXES = ("/params", "/params_1000", "/flops")
EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}  # the UI opens on the runs table
# Searched settings as they read in a run name: `t07 tau=0.68 T=3.6 a=0.58 b=1.09`.
SHORT_NAMES = {"loss.threshold": "tau", "loss.temperature": "T", "loss.alpha": "a", "loss.beta": "b"}


def is_constant(key: str) -> bool:
    """A figure that never changes during a run (model sizes, the frozen teacher's accuracy): a param, not a curve."""
    return key.startswith("teacher/") or key.endswith(PROFILE_SUFFIXES)


def _reported(result: dict) -> dict[str, float]:
    """What the loop reported (per-student keys hold a '/'), without Tune's bookkeeping."""
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and ("/" in k or k in RUN_METRICS)
    }


def numeric_metrics(result: dict) -> dict[str, float]:
    """The reported figures that change over epochs: the run's metric histories."""
    return {k: v for k, v in _reported(result).items() if not is_constant(k)}


def constant_figures(result: dict) -> dict[str, str]:
    """The constants as param values: counts as integers, accuracies as they are."""
    return {k: str(int(v)) if v.is_integer() else repr(v) for k, v in _reported(result).items() if is_constant(k)}


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_name(number: int, values: dict[str, Any]) -> str:
    """A comparison trial is `ua_dual seed 1`; a sweep trial its number and searched values."""
    if set(values) == {"loss.method", "seed"}:
        return f"{values['loss.method']} seed {values['seed']}"
    order = list(SHORT_NAMES)  # the loss's four first, as the paper names them; then the rest as given
    keys = sorted(values, key=lambda k: order.index(k) if k in order else len(order))
    return " ".join(
        [f"t{number:02d}", *(f"{SHORT_NAMES.get(k, k.rsplit('.', 1)[-1])}={_short(values[k])}" for k in keys)]
    )


def ensure_experiment(client: MlflowClient, name: str, uri: str) -> str:
    """The experiment's id, created if missing (another driver may create it at the same moment), tagged
    so that the UI opens it on its runs table."""
    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            return client.create_experiment(name, artifact_location=artifact_location(uri), tags=EXPERIMENT_KIND)
        except MlflowException:  # another driver created it at the same moment
            found = client.get_experiment_by_name(name)
            if found is None:
                raise
    for key, value in EXPERIMENT_KIND.items():
        if found.tags.get(key) != value:
            client.set_experiment_tag(found.experiment_id, key, value)
    return found.experiment_id


def dataset_input(data: dict) -> DatasetInput:
    """The run's data as an MLflow dataset input: its name, where it comes from, and a digest of its settings."""
    from mlflow.data.code_dataset_source import CodeDatasetSource
    from mlflow.data.meta_dataset import MetaDataset

    settings = {k: v for k, v in data.items() if k != "loader_workers"}
    source = CodeDatasetSource({"dataset": data["name"], "root": str(data.get("root") or "embedded")})
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:8]
    name = data["name"] if not data.get("root") else f"{data['name']}:{Path(data['root']).name}"
    entity = MetaDataset(source, name=name, digest=digest)._to_mlflow_entity()
    return DatasetInput(entity, tags=[InputTag("mlflow.data.context", "training")])


class RunLog:
    """One MLflow run's writes: per-epoch curves, constant figures as params, predictions."""

    def __init__(self, journal: Journal, run_id: str):
        self.journal, self.run_id = journal, run_id

    def log_result(self, result: dict) -> None:
        """An epoch's report. Constants come again with every epoch: MLflow keeps a param of the same value."""
        step = int(result.get("epoch", result.get("training_iteration", 0)))
        ts = int(result.get("timestamp", time.time()) * 1000)
        metrics = [Metric(k, v, ts, step) for k, v in numeric_metrics(result).items()]
        params = [Param(k, v) for k, v in constant_figures(result).items()]
        self.journal.log_batch(self.run_id, metrics=metrics, params=params)

    def log_predictions(self, checkpoint_path: str, storage_location: str) -> None:
        """The last epoch's per-sample records (the uncertainty analysis) from the checkpoint Ray reported,
        whose path lies on the filesystem of the run's storage (a folder or a bucket)."""
        location = storage.join(storage.on_same_filesystem(checkpoint_path, storage_location), PREDICTIONS_FILE)
        if not storage.exists(location):  # the final epoch is the one that writes them
            return
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(tmp) / PREDICTIONS_FILE
            storage.download(location, local)
            self.journal.log_artifact(self.run_id, str(local))


def log_params(journal: Journal, run_id: str, values: dict[str, Any]) -> None:
    journal.log_batch(run_id, params=[Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in values.items()])


class TrackedRun:
    """One top-level MLflow run: a sweep's parent, or a single `orchestrator.train` run.

    Every write goes through the journal in `folder` (`orchestrator.journal`) and a sender thread; the server
    is asked directly only at the start (the experiment, and runs an earlier driver made)."""

    def __init__(self, uri: str, experiment: str, data: dict, folder: Path, tags: Optional[dict] = None):
        self.client = open_client(uri)
        self.uri = uri
        self.experiment_id = ensure_experiment(self.client, experiment, uri)
        self.data, self.tags = data, dict(tags or {})
        self.journal = open_journal(folder / JOURNAL_FOLDER, uri)
        self.sender = Sender(self.journal.files, uri).start()
        self.run_id = ""

    def create(self, run_name: str, tags: dict) -> None:
        self.run_id = self.journal.create_run(self.experiment_id, run_name, {**self.tags, **tags})
        self.journal.log_data(self.run_id, self.data)

    def log_spec(self, spec_dict: dict, spec_yaml: str, commit: Optional[str]) -> None:
        """The fixed settings as params (searched ones are left for `log_best`), the spec as artifacts."""
        searched = set(spec_dict.get("search") or {})
        existing = self.journal.runs[self.run_id].params
        log_params(
            self.journal,
            self.run_id,
            {
                k: v
                for k, v in flatten(spec_dict).items()
                if not k.startswith("search.") and k not in searched | set(existing)
            },
        )
        if commit:
            self.journal.set_tag(self.run_id, "mlflow.source.git.commit", commit)
        self.journal.log_text(self.run_id, spec_yaml, "spec.yaml")
        self.journal.log_dict(self.run_id, spec_dict, "resolved_config.json")

    def log_metrics(self, values: dict[str, float], step: int = 0) -> None:
        now = int(time.time() * 1000)
        self.journal.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_artifacts(self, files: dict[str, Path]) -> None:
        """name -> file; a name with a folder (`pareto/t03.yaml`) keeps it among the run's artifacts."""
        for name, path in files.items():
            folder = str(Path(name).parent)
            self.journal.log_artifact(self.run_id, str(path), None if folder == "." else folder)

    def finish(self, status: str = "FINISHED") -> None:
        self.journal.set_terminated(self.run_id, status=status)

    def wait_sent(self, timeout: Optional[float]) -> int:
        """Wait until the server has every write (at most `timeout` seconds; None: as long as it takes);
        how many are still unsent."""
        return self.sender.wait(timeout)

    def close(self, timeout: float, folder: Path) -> int:
        """Stop sending, after up to `timeout` seconds for what is unsent; the last line says what is kept."""
        unsent = self.sender.drain(timeout)
        if unsent:
            sys.stdout.flush()
            print(
                f"MLflow has not taken {unsent} writes yet ({self.sender.failing or 'still sending'}): they are "
                f"kept in {self.journal.folder}; send them with: python -m orchestrator.sync {folder}",
                flush=True,
            )
        return unsent


class SweepTracker(TrackedRun):
    """The parent run of one sweep: created once, found again in the journal (or on the server) on resume."""

    def __init__(self, uri: str, experiment: str, sweep_id: str, data: dict, folder: Path, tags: Optional[dict] = None):
        super().__init__(uri, experiment, data, folder, tags)
        self.sweep_id = sweep_id
        parent = {SWEEP_TAG: sweep_id, TRIAL_TAG: "parent"}
        self.run_id = self.journal.find(parent) or self.adopt_from_server() or ""
        if self.run_id:
            self.journal.update_run(self.run_id, status="RUNNING")
            if "error" in self.journal.runs[self.run_id].tags:  # what stopped it before (a full disk, ...) is over
                self.journal.delete_tag(self.run_id, "error")
        else:
            self.create(sweep_id, parent)
        _live_trackers[sweep_id] = self

    def adopt_from_server(self) -> Optional[str]:
        """A sweep whose journal is not on this machine (resumed elsewhere): its parent and trial runs, from the
        server, into the journal."""
        runs = self.client.search_runs(
            [self.experiment_id], f"tags.`{SWEEP_TAG}` = '{self.sweep_id}'", max_results=5000
        )
        parents = [run for run in runs if run.data.tags.get(TRIAL_TAG) == "parent"]
        if not parents:
            return None
        parent = self.journal.adopt(parents[0])
        for run in runs:
            if run.data.tags.get(PARENT_TAG) == parents[0].info.run_id:
                self.journal.adopt(run, parent=parent)
        return parent

    @property
    def parent_id(self) -> str:
        return self.run_id

    def log_best(self, trial_id: str, values: dict[str, Any], result: dict) -> None:
        """The best trial's values as params and its final figures under the same names as the trials',
        so parent runs of different sweeps compare in the runs table."""
        log_params(self.journal, self.run_id, {**values, **constant_figures(result)})
        step = int(result.get("epoch", 0))
        metrics = [Metric(k, v, int(time.time() * 1000), step) for k, v in numeric_metrics(result).items()]
        self.journal.log_batch(self.run_id, metrics=metrics, tags=[RunTag("best_trial", trial_id)])

    def trial_names(self) -> dict[str, str]:
        """Tune trial id -> the number its MLflow run's name starts with (`t03`): how users name trials."""
        return {
            self.journal.runs[key].tags[TRIAL_TAG]: self.journal.runs[key].name.split()[0]
            for key in self.journal.children(self.run_id)
        }

    def callback(self, epochs: int, storage_location: str) -> "TrialTracker":
        return TrialTracker(
            self.uri,
            self.journal.folder,
            self.experiment_id,
            self.run_id,
            self.sweep_id,
            epochs,
            storage_location,
            self.data,
            self.tags,
        )


_live_trackers: dict[str, SweepTracker] = {}  # sweep id -> this process's tracker of it


class EpochLogger(UserCallback):
    """Ray Train callback for a single run: each epoch rank 0 reports, into the run's journal.

    It runs in Ray Train's controller, which Ray places on the driver's node: it appends to the driver's
    journal file, whose sender (in the driver) sends the lines."""

    def __init__(self, uri: str, journal_folder: Path, run_id: str):
        self.uri, self.journal_folder, self.run_id = uri, journal_folder, run_id

    def after_report(self, run_context, metrics: list[dict], checkpoint=None):
        RunLog(open_journal(self.journal_folder, self.uri), self.run_id).log_result(metrics[0])


class TrialTracker(Callback):
    """Tune callback on the driver: a child run per trial, its params, and every reported epoch, journaled."""

    def __init__(
        self,
        uri: str,
        journal_folder: Path,
        experiment_id: str,
        parent_id: str,
        sweep_id: str,
        epochs: int,
        storage_location: str,
        data: dict,
        tags: dict,
    ):
        self.uri, self.journal_folder = uri, journal_folder
        self.experiment_id, self.parent_id, self.sweep_id = experiment_id, parent_id, sweep_id
        self.epochs = epochs
        self.storage = storage_location  # where the trials' checkpoints are: a folder or a bucket
        self.data, self.tags = data, tags
        self.journal = open_journal(journal_folder, uri)

    def __getstate__(self):  # Tune pickles callbacks into its experiment state; the journal is opened again
        return {k: v for k, v in self.__dict__.items() if k != "journal"}

    def __setstate__(self, state):
        """A callback Tune restores from an earlier driver's state writes through this driver's tracker: a
        sweep resumed on another machine has its journal elsewhere and its parent run under another key."""
        self.__dict__.update(state)
        live = _live_trackers.get(self.sweep_id)
        if live is not None:
            self.journal_folder, self.parent_id = live.journal.folder, live.run_id
            self.experiment_id = live.experiment_id
        self.journal = open_journal(self.journal_folder, self.uri)

    def run_id(self, trial) -> str:
        found = self.journal.find({SWEEP_TAG: self.sweep_id, TRIAL_TAG: trial.trial_id})
        if found:
            return found
        values = flatten(trial.config)
        number = len(self.journal.children(self.parent_id)) + 1
        run_id = self.journal.create_run(
            self.experiment_id,
            run_name(number, values),
            {**self.tags, PARENT_TAG: self.parent_id, SWEEP_TAG: self.sweep_id, TRIAL_TAG: trial.trial_id},
        )
        log_params(self.journal, run_id, values)
        self.journal.log_data(run_id, self.data)
        return run_id

    def on_trial_start(self, iteration, trials, trial, **info):
        self.journal.update_run(self.run_id(trial), status="RUNNING")

    def on_trial_result(self, iteration, trials, trial, result, **info):
        run_id, epoch = self.run_id(trial), int(result.get("epoch", 0))
        if epoch and epoch <= int(self.journal.runs[run_id].metrics.get("epoch", 0)):
            return  # a restart that found its run finished reports the final epoch again: logged already
        RunLog(self.journal, run_id).log_result(result)

    def on_trial_complete(self, iteration, trials, trial, **info):
        last = trial.last_result or {}
        epochs = int(last.get("epoch", 0))
        checkpoint = last.get(CHECKPOINT_PATH_KEY)
        run_id = self.run_id(trial)
        if checkpoint:
            RunLog(self.journal, run_id).log_predictions(checkpoint, self.storage)
        self.journal.set_tag(run_id, "state", "completed" if epochs >= self.epochs else "pruned")
        self.journal.set_terminated(run_id, status="FINISHED")

    def on_trial_error(self, iteration, trials, trial, **info):
        run_id = self.run_id(trial)
        self.journal.set_tag(run_id, "error", error_line(error_text(trial))[:500])
        self.journal.set_terminated(run_id, status="FAILED")
