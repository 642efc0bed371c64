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
  that a trial's start-up on a small machine waits behind. In a Tune trial, its copy of the private
  `_initialize_and_run_controller` aborts the run's `TrainController` (its `abort`, which the driver's Ctrl-C
  calls) once Tune stops the trial: Tune v1's session (`_TrainSession.stop_event`, set by its `finish`, with
  `reset_config` waiting `TUNE_FUNCTION_THREAD_TIMEOUT_S` for the trial's thread) then finds the thread ended.
  In a driver's main thread it puts back the Ctrl-C handler that the parent's method replaces with one holding
  the run's controller.
- The worker side has one more, kept beside its use because workers never import the driver:
  `trainables.loop` quiets Ray Train v2's per-report log through the logger named after
  `ray.train.v2._internal.execution.context`.
"""

from __future__ import annotations

import signal
import threading
import time
from pathlib import Path

import ray
from ray._common.constants import RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_ENV_VAR as WARN_KEY
from ray.exceptions import RayActorError
from ray.train import UserCallback
from ray.train._internal.session import get_session
from ray.train.torch import TorchTrainer
from ray.train.v2._internal.callbacks import DatasetsCallback
from ray.train.v2._internal.constants import DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE, get_env_vars_to_propagate
from ray.train.v2._internal.execution.controller import TrainController
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


class TrialStopped(SystemExit):
    """Tune stopped the trial and its run was aborted: the trial's thread ends quietly (Tune's runner thread takes
    `SystemExit(0)` as a clean end, as Tune's own session does on a stop)."""

    def __init__(self):
        super().__init__(0)


class LeanTorchTrainer(TorchTrainer):
    """A `TorchTrainer` that starts no `DatasetManager` actor for a run without Ray Datasets, and whose run ends at
    once when Tune stops its trial (see the notes above).

    Without the abort, a trial ASHA stops kept training in its actor until Tune killed that actor (its workers
    dying mid-step, with Ray's tracebacks in the log), and the actor could not be handed to the next trial.
    """

    def _create_default_callbacks(self):
        callbacks = super()._create_default_callbacks()
        if self.datasets:
            return callbacks
        return [c for c in callbacks if not isinstance(c, DatasetsCallback)]

    def _initialize_and_run_controller(self, **controller_init_kwargs):
        stop = getattr(get_session(), "stop_event", None)  # Tune's, in a trial's thread; None in a driver
        if stop is None:  # the teacher's run, a bank's, `orchestrator.train`'s
            return _restoring_sigint(super()._initialize_and_run_controller, **controller_init_kwargs)
        # DataParallelTrainer._initialize_and_run_controller of Ray 2.60, with the watcher added
        env_vars = get_env_vars_to_propagate()
        env_vars.setdefault(WARN_KEY, DEFAULT_RAY_WARN_BLOCKING_GET_INSIDE_ASYNC_VALUE)
        controller = ray.remote(
            num_cpus=0,
            label_selector={ray._raylet.RAY_NODE_ID_KEY: ray.get_runtime_context().get_node_id()},
            runtime_env={"env_vars": env_vars},
        )(TrainController).remote(**controller_init_kwargs)
        finished = threading.Event()
        threading.Thread(target=_abort_on_stop, args=(stop, finished, controller), daemon=True).start()
        try:
            ray.get(controller.run.remote())
            return ray.get(controller.get_result.remote())
        except RayActorError:
            if stop.is_set():
                raise TrialStopped() from None
            raise
        finally:
            finished.set()


def _restoring_sigint(run_controller, **controller_init_kwargs):
    """Ray's run in a driver's main thread, with the driver's Ctrl-C handler back afterwards: Ray's handler for
    the run holds its controller's handle, so left installed it kept the finished run's controller process (about
    700 MB) alive for the rest of the command, and sent a later Ctrl-C to that dead run."""
    handler = signal.getsignal(signal.SIGINT)
    try:
        return run_controller(**controller_init_kwargs)
    finally:
        if handler is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)


def _abort_on_stop(stop: threading.Event, finished: threading.Event, controller, poll_s: float = 0.1) -> None:
    """Abort the run's controller (its workers, its placement group) once Tune sets the trial's stop event."""
    while not finished.is_set():
        if stop.wait(poll_s):
            if not finished.is_set():
                controller.abort.remote()
            return


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
