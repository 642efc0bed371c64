"""The Ray callbacks that write runs from the driver: a Tune callback for a sweep's trials (a child run each), a Ray
Train callback for the epochs of `orchestrator.train`'s one run. Each writes into the run's journal.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from ray.tune import Callback

from orchestrator.execution import CHECKPOINT_PATH_KEY, UserCallback
from orchestrator.tracking.errors import error_line, error_text
from orchestrator.tracking.journal import PARENT_TAG, open_journal
from orchestrator.tracking.records import SWEEP_TAG, TRIAL_TAG, flatten, run_name, settings_params
from orchestrator.tracking.runs import RunLog, live_tracker, log_params

if TYPE_CHECKING:
    from orchestrator.tracking.runs import SweepTracker


class EpochLogger(UserCallback):
    """Ray Train callback for a single run: each epoch rank 0 reports, into the run's journal.

    It runs in Ray Train's controller, which Ray places on the driver's node: it appends to the driver's
    journal file, whose sender (in the driver) sends the lines."""

    def __init__(self, uri: str, journal_folder: Path, run_id: str):
        self.uri, self.journal_folder, self.run_id = uri, journal_folder, run_id

    def after_report(self, run_context, metrics: list[dict], checkpoint=None):
        RunLog(open_journal(self.journal_folder, self.uri), self.run_id).log_result(metrics[0])


class TrialTracker(Callback):
    """Tune callback on the driver: a child run per trial, its params (every setting it trains with: the sweep's
    resolved spec and its own values), and every reported epoch, journaled."""

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
        spec_dict: dict,
    ):
        self.uri, self.journal_folder = uri, journal_folder
        self.experiment_id, self.parent_id, self.sweep_id = experiment_id, parent_id, sweep_id
        self.epochs = epochs
        self.storage = storage_location  # where the trials' checkpoints are: a folder or a bucket
        self.data, self.tags, self.spec_dict = data, tags, spec_dict
        self.journal = open_journal(journal_folder, uri)

    def __getstate__(self):  # Tune pickles callbacks into its experiment state; the journal is opened again
        return {k: v for k, v in self.__dict__.items() if k != "journal"}

    def __setstate__(self, state):
        """A callback Tune restores from an earlier driver's state writes through this driver's tracker: a
        sweep resumed on another machine has its journal elsewhere and its parent run under another key."""
        self.__dict__.update(state)
        self.spec_dict = state.get("spec_dict", {})  # a state saved before trial runs logged every setting
        live = live_tracker(self.sweep_id)
        if live is not None:
            self.journal_folder, self.parent_id = live.journal.folder, live.run_id
            self.experiment_id, self.spec_dict = live.experiment_id, live.spec_dict or self.spec_dict
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
        log_params(self.journal, run_id, settings_params(self.spec_dict, values))
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


def trial_tracker(sweep: "SweepTracker", epochs: int, storage_location: str) -> TrialTracker:
    """The Tune callback that writes the trials of `sweep` as its parent's child runs."""
    return TrialTracker(
        sweep.uri,
        sweep.journal.folder,
        sweep.experiment_id,
        sweep.run_id,
        sweep.sweep_id,
        epochs,
        storage_location,
        sweep.data,
        sweep.tags,
        sweep.spec_dict,
    )
