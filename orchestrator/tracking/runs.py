"""The MLflow runs a command writes: one parent run per sweep (or one run of `orchestrator.train`), and the writes
of each run (per-epoch curves, constants as params, predictions), all through the journal.

Logging from the driver works on a multi-node cluster where only the head node can write a sqlite store,
and with an `http://` tracking server. Runs are found again by tags, so a resumed sweep keeps its parent
run and a restarted trial keeps its child run: each trial once. The Ray callbacks that write the trials'
runs are `orchestrator.tracking.callbacks`.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Optional

from mlflow.entities import Metric, Param, RunTag

from orchestrator.tracking.client import ensure_experiment, open_client
from orchestrator.tracking.journal import JOURNAL_FOLDER, PARENT_TAG, Journal, open_journal
from orchestrator.tracking.records import (
    MAX_PARAM_LENGTH,
    SWEEP_TAG,
    TRIAL_TAG,
    constant_figures,
    numeric_metrics,
    settings_params,
)
from orchestrator.tracking.sender import Sender
from trainables import storage
from trainables.files import PREDICTIONS_FILE


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
        self.journal.name_experiment(self.experiment_id, experiment)  # another server finds it by this name
        self.sender = Sender(self.journal.files, uri).start()
        self.run_id = ""
        self.spec_dict: dict = {}  # the resolved spec, once logged: what a sweep's trial runs log beside their values

    def create(self, run_name: str, tags: dict) -> None:
        self.run_id = self.journal.create_run(self.experiment_id, run_name, {**self.tags, **tags})
        self.journal.log_data(self.run_id, self.data)

    def log_spec(self, spec_dict: dict, spec_yaml: str, commit: Optional[str]) -> None:
        """Every resolved setting as a param (searched ones are left for `log_best`; one a resumed run logged
        already keeps its value, as MLflow refuses another), the spec as artifacts."""
        self.spec_dict = spec_dict
        searched = set(spec_dict.get("search") or {})
        existing = self.journal.runs[self.run_id].params
        params = settings_params(spec_dict)
        log_params(self.journal, self.run_id, {k: v for k, v in params.items() if k not in searched | set(existing)})
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


_live_trackers: dict[str, SweepTracker] = {}  # sweep id -> this process's tracker of it


def live_tracker(sweep_id: str) -> Optional[SweepTracker]:
    """This process's tracker of the sweep, if it runs here: what a callback Tune restored writes through."""
    return _live_trackers.get(sweep_id)
