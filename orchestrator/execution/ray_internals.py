"""Every place the driver leans on Ray's internals, checked against Ray 2.60.0 (and Optuna 5.0.0).

pyproject.toml pins Ray to 2.60.x because of what is here; `tests/test_ray_internals.py` fails at once on a
Ray or Optuna that moved one of them (instead of a sweep that hangs or mis-tells a trial). Before raising
the pin, run that test and read each item below against the new sources.

- `hand_over_last_report`: Ray Train v1's private session (`ray.train._internal.session`) and its
  `_inter_actor_queue`, to work around a deadlock of a Tune trainable whose function returns early.
- `TuneReportCallback`, `CHECKPOINT_PATH_KEY` (ray.tune.integration.ray_train) and `UserCallback`
  (ray.train): developer APIs ("may change across minor releases") that the trials and the epoch
  logger are built on.
- `experiment_folders`: a Tune trial's `StorageContext` (ray.train._internal.storage), whose paths
  `orchestrator.search.tune_state` copies Tune's state files between.
- `OPTUNA_SEARCH_FIELDS`: the protected fields of Ray's `OptunaSearch` that `orchestrator.search.searcher.SweepSearch`
  reads and replaces (the Tune-trial-to-Optuna-trial map, the study, its storage, the told trials), and
  Optuna's `Trial._trial_id` / `optuna.Trial(study, trial_id)`.
- `SearchGenerator`'s state dict and its key `finished` (ray.tune.search), which `orchestrator.search.
  searcher.SweepGenerator` clears on restore so that a resumed sweep's searcher decides anew on the spec's trial count.
- `LeanTorchTrainer`: a `TorchTrainer` whose private `_create_default_callbacks` (ray.train.v2's
  `DataParallelTrainer`) leaves out the `DatasetsCallback` when the run has no Ray Datasets (ours never do):
  that callback starts a `DatasetManager` actor per run, a fresh process importing Ray Data, seconds of CPU
  that a trial's start-up on a small machine waits behind.
- The worker side has one more, kept beside its use because workers never import the driver:
  `trainables.loop` quiets Ray Train v2's per-report log through the logger named after
  `ray.train.v2._internal.execution.context`.
"""

from __future__ import annotations

import time
from pathlib import Path

from ray.train import UserCallback
from ray.train._internal.session import get_session
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.tune.integration.ray_train import CHECKPOINT_PATH_KEY, TuneReportCallback

CHECKED_AGAINST = {"ray": "2.60.0", "optuna": "5.0.0"}
OPTUNA_SEARCH_FIELDS = ("_ot_trials", "_ot_study", "_storage", "_completed_trials")

__all__ = [
    "CHECKPOINT_PATH_KEY",
    "LeanTorchTrainer",
    "TuneReportCallback",
    "UserCallback",
    "experiment_folders",
    "hand_over_last_report",
]


class LeanTorchTrainer(TorchTrainer):
    """A `TorchTrainer` that starts no `DatasetManager` actor for a run without Ray Datasets (see the notes above)."""

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        if self.datasets:
            return callbacks
        return [c for c in callbacks if not isinstance(c, DatasetsCallback)]


def hand_over_last_report(poll_s: float = 0.1) -> None:
    """Return only once Tune's trainable has passed on the TorchTrainer's last report.

    In Ray 2.60 a Tune trainable deadlocks when its function returns while that report still waits in
    the queue between Train and Tune: the function's end takes the one result slot the report needs.
    The report waits there whenever the driver is slow to ask for it (an MLflow server down, a slow
    bucket). An empty item put after it, which the trainable skips, is taken only once the report
    before it has been passed on.
    """
    queue = getattr(get_session(), "_inter_actor_queue", None)
    if queue is None:
        return
    queue.put({})
    while not queue.empty():
        time.sleep(poll_s)


def experiment_folders(trial) -> tuple[bool, Path, Path]:
    """(on a local filesystem, the experiment's storage folder, the driver's staging folder) of a Tune trial."""
    context = trial.storage
    return (
        context.storage_filesystem.type_name == "local",
        Path(context.experiment_fs_path),
        Path(context.experiment_driver_staging_path),
    )
