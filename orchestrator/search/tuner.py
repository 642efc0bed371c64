"""The Tune experiment of a sweep or of a comparison's round: its `Tuner` (Optuna or a grid, ASHA or FIFO, the
progress table), run or restored on --resume (`run_tuner`), and the settings Tune reads from the environment.
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import ray.tune
from ray.tune import CLIReporter
from ray.tune.error import TuneError
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from orchestrator.execution import SweepFolder, found_in
from orchestrator.search.searcher import SweepSearch, sweep_search_alg
from orchestrator.search.tune_state import repair_state
from orchestrator.spec import Spec, optuna_space
from orchestrator.tracking import SweepTracker

TUNE_ENVIRONMENT = {
    # Tune saves its experiment state at least this often (seconds), so a killed driver loses little.
    "TUNE_GLOBAL_CHECKPOINT_S": "5",
    # Tune's classic progress table, whose columns we choose (the newer one lists every metric).
    "RAY_AIR_NEW_OUTPUT": "0",
}


def set_tune_environment() -> None:
    """Tune's settings (`TUNE_ENVIRONMENT`) where the user set none: Tune's driver reads them when a Tuner runs."""
    for key, value in TUNE_ENVIRONMENT.items():
        os.environ.setdefault(key, value)


class LastEpochASHA(ASHAScheduler):
    """ASHA that lets a trial's last epoch end the trial by itself instead of stopping it there.

    Tune's stop of a trial at its last report ends the trial's actor while its TorchTrainer is still shutting
    its workers down: they die mid-shutdown, and Ray Train logs a failed health check, a traceback and a
    worker group started for nothing. A result at the last epoch joins its bracket when the trial completes
    (`on_trial_complete`), as it does under ASHA's own stop.
    """

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        if result.get(self._time_attr, 0) >= self._max_t:
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)


class TrialsReporter(CLIReporter):
    """Tune's progress table without the "/infinite" of a search whose trial count the searcher keeps."""

    def set_total_samples(self, total_samples: Optional[int]):
        super().set_total_samples(None if total_samples and total_samples >= sys.maxsize else total_samples)


def progress_reporter(spec: Spec) -> CLIReporter:
    """Epoch, each student's top-1 and the sweep metric, per trial with its searched values."""
    metrics = {
        "epoch": "epoch",
        **{f"{n}/val_top1": f"{n} top-1" for n in spec.students.names},
        **{metric: metric for metric, _ in spec.tune.objectives},
    }
    keys = list(spec.search) or (["loss.method", "seed"] if spec.compare else [])
    params = {key: key.split(".")[-1] for key in keys}
    return TrialsReporter(
        metric_columns=metrics, parameter_columns=params, max_report_frequency=30, sort_by_metric=True
    )  # by TuneConfig's metric and mode: `TuneSettings.rank_metric`


def asha_grace(spec: Spec) -> int:
    """ASHA's grace period, at most the run's epochs (a short rehearsal of a long spec stops nothing early)."""
    return min(spec.tune.grace_period, spec.students.epochs)


def build_tuner(
    spec: Spec,
    folder: SweepFolder,
    trainable,
    callbacks: list,
    seeds: Optional[list[int]] = None,
    name: Optional[str] = None,
) -> ray.tune.Tuner:
    """A sweep: Optuna proposes every trial (on several objectives, its multi-objective TPE). A comparison: a
    grid of fixed (method, seed) trials, run to the end. Tune itself (ASHA, the progress table) follows one
    metric: `TuneSettings.rank_metric`. A comparison's added seed is a round of its own: `seeds`, and `name`
    (a folder inside the sweep folder)."""
    t = spec.tune
    rank_metric, rank_mode = t.rank_metric
    search_alg, param_space = None, None
    if spec.compare:
        param_space = {
            "loss.method": ray.tune.grid_search(spec.compare.methods),
            "seed": ray.tune.grid_search(seeds or spec.compare.seeds),
        }
    else:
        searcher = SweepSearch(
            folder,
            spec.students.epochs,
            spec.resources.units,
            t.budget_hours,
            t.num_trials,
            space=optuna_space(spec),
            metric=t.metric,
            mode=t.mode,
            seed=t.seed,
        )
        search_alg = sweep_search_alg(searcher, t.max_concurrent_trials)
    stops_early = t.scheduler == "asha" and not spec.compare
    if stops_early:
        scheduler = LastEpochASHA(
            time_attr="epoch",
            max_t=spec.students.epochs,
            grace_period=asha_grace(spec),
            reduction_factor=t.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return ray.tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(
            metric=rank_metric,
            mode=rank_mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=1 if spec.compare else -1,  # the searcher stops at tune.num_trials (a resume may change it)
            max_concurrent_trials=t.max_concurrent_trials if spec.compare else None,  # a search's: in search_alg
            # a trial that ended hands its actor (Ray and the project imported) to the next; one ASHA stopped too:
            # its run is aborted on the stop (`LeanTorchTrainer`), so its thread has ended when Tune resets it
            reuse_actors=True,
        ),
        run_config=ray.tune.RunConfig(
            name=name or folder.name,
            storage_path=folder.location if name else folder.root,
            callbacks=callbacks,
            progress_reporter=progress_reporter(spec),
            verbose=1,
            # Ray Train's restarts of a trial's workers (resources.max_failures) cover a worker or node lost while
            # they train; one lost while their group starts ends the run with a controller error that Train does
            # not retry (Ray 2.60 launches the train function outside its start-up's retry). Tune restarts such a
            # trial once, from its checkpoint; a recorded failure (a divergence) stops that restart at once.
            failure_config=ray.tune.FailureConfig(max_failures=1),
        ),
    )


def run_tuner(tracker: SweepTracker, location: str, resume: bool, trainable, build) -> ray.tune.ResultGrid:
    """Tune's run of the experiment at `location`: restored from there on --resume when it exists, else
    `build()`; a storage that stopped taking writes ends it with one line (StorageFailed)."""
    if resume and ray.tune.Tuner.can_restore(location):
        print(f"resuming {location}")
        repaired = repair_state(location)
        if repaired:
            print(repaired)
        tuner = ray.tune.Tuner.restore(location, trainable, resume_errored=True)
    else:
        tuner = build()
    try:
        return tuner.fit()
    except TuneError as err:
        failure = found_in(err)
        if failure is None:
            raise
        tracker.journal.set_tag(tracker.parent_id, "error", str(failure))
        tracker.finish("FAILED")
        raise failure from None
