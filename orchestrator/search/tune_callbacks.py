"""The sweep's own Tune callbacks: the Optuna study published to a bucket as trials start and end, a stop
(StorageFailed) at the first trial that fails because its storage is full or read-only, and the trials' start and
end in the phase trace of `benchmarks/overhead.py` (`trainables.trace`).
"""

from __future__ import annotations

from ray.tune import Callback

from orchestrator.execution import SweepFolder, probe, reason_in, storage_failure
from orchestrator.search.searcher import OPTUNA_DB
from orchestrator.tracking import error_text
from trainables import trace


class PublishStudy(Callback):
    """Uploads the Optuna study when a trial starts (Optuna has just asked for it) or ends, when the sweep
    lives in a bucket: a driver resumed elsewhere finds every trial that Tune's saved state knows."""

    def __init__(self, folder: SweepFolder):
        self.folder = folder

    def on_trial_start(self, iteration, trials, trial, **info):
        self.folder.publish(self.folder.local / OPTUNA_DB)

    on_trial_complete = on_trial_error = on_trial_start


class StorageGuard(Callback):
    """Stops the sweep (StorageFailed) when a trial fails because its storage is full or read-only."""

    def __init__(self, location: str):
        self.location = location

    def _check(self, trial) -> None:
        reason = probe(self.location) or reason_in(error_text(trial))
        if reason is not None:
            raise storage_failure(self.location, f"{reason}; trial {trial.trial_id} failed on it")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)


class TraceTrials(Callback):
    """A trial's start and end as the driver sees them, in the phase trace (nothing unless `DUALKD_TRACE` is set)."""

    def setup(self, **info):
        trace.mark("", "tune_start")

    def on_trial_start(self, iteration, trials, trial, **info):
        trace.mark(trial.trial_id, "trial_start")

    def on_trial_complete(self, iteration, trials, trial, **info):
        trace.mark(trial.trial_id, "trial_end")
