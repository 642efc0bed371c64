"""The sweep's Optuna searcher: Ray's `OptunaSearch` with the study in the sweep folder, trials ASHA stopped told
as pruned, a resource-hour budget, and a study that stays right across resumes.

It reads and replaces protected fields of `OptunaSearch` (see `orchestrator.execution.ray_internals`, checked against
Ray 2.60.0 and Optuna 5.0.0).
"""

from __future__ import annotations

import json
from typing import Optional

import optuna
from ray.tune.search import ConcurrencyLimiter, Searcher, SearchGenerator
from ray.tune.search.optuna import OptunaSearch

from orchestrator.execution import SweepFolder

OPTUNA_DB = "optuna.db"
LIMITS_FILE = "search_limits.json"  # the trial count and budget of the spec as it is now: what a resume takes


def optuna_storage(folder: SweepFolder) -> optuna.storages.RDBStorage:
    return optuna.storages.RDBStorage(f"sqlite:///{folder.local / OPTUNA_DB}")


class SweepSearch(OptunaSearch):
    """OptunaSearch whose study is the sweep folder's sqlite on the machine that runs the driver.

    Tune pickles the searcher with its study's database path; a sweep in a bucket may be resumed on
    another machine, so a restored searcher re-opens the study at this machine's copy of the file.
    Tune's saved state can be seconds older than the study (a killed driver): a trial the study already
    holds as finished is re-run by Tune, but the study keeps its first ending and ignores the re-run; a
    trial asked for after that state was saved is marked failed, as Tune will ask for another. When no Tune
    state reached the storage at all (it filled up first), the resumed sweep starts Tune afresh: the study's
    trials that were running then are marked failed before the first new one is asked for.

    Pruned is pruned: a trial that ends (without error) before `epochs` was stopped by ASHA, and Optuna
    is told PRUNED, with its per-epoch values as intermediate values at their epochs (Tune's own searcher
    tells COMPLETE with the value of the epoch it stopped at, so TPE would model an epoch-1 accuracy as a
    final one). Intermediate values are keyed by epoch, not by Tune's iteration, which counts on after a
    restart from a checkpoint; an epoch reported twice keeps its first value.

    A budget (`tune.budget_hours`): each trial's wall time so far (Tune's `time_total_s`) times its
    `units` (GPUs, else CPUs); once they add up to the budget no trial is proposed, and Tune lets the
    running ones finish. The clock is saved with the searcher, so a resumed sweep keeps it.

    The trial count (`tune.num_trials`) is this searcher's to keep, not Tune's `num_samples`, which Tune saves
    with its state: a resumed sweep takes the count, budget and units of the spec as it is now, which the driver
    writes to `LIMITS_FILE` before Tune restores the searcher (and `SweepGenerator` lets it decide anew).
    """

    def __init__(
        self,
        folder: SweepFolder,
        epochs: int,
        units: float = 1.0,
        budget_hours: Optional[float] = None,
        num_trials: Optional[int] = None,
        **kwargs,
    ):
        super().__init__(study_name=folder.name, storage=optuna_storage(folder), **kwargs)
        self.folder = folder
        self.epochs = epochs
        self.units, self.budget_hours, self.num_trials = units, budget_hours, num_trials
        self.seconds: dict[str, float] = {}
        self.orphans_failed = False

    @property
    def hours_used(self) -> float:
        return sum(self.seconds.values()) * self.units / 3600

    def suggest(self, trial_id: str):
        if self.budget_hours is not None and self.hours_used >= self.budget_hours:
            return Searcher.FINISHED
        if self.num_trials is not None and trial_id not in self._ot_trials and len(self._ot_trials) >= self.num_trials:
            return Searcher.FINISHED
        if not self.orphans_failed:
            self._fail_orphans()
        return super().suggest(trial_id)

    def _fail_orphans(self) -> None:
        """Running trials of the study that this searcher did not ask for: a driver that is gone asked for them
        after Tune's state was saved (or none was), and Tune will ask for others in their place."""
        known = {t._trial_id for t in self._ot_trials.values()}
        for orphan in self._ot_study.get_trials(deepcopy=False, states=[optuna.trial.TrialState.RUNNING]):
            if orphan._trial_id not in known:
                self._storage.set_trial_state_values(orphan._trial_id, optuna.trial.TrialState.FAIL)
        self.orphans_failed = True

    def _clock(self, trial_id: str, result: Optional[dict]) -> None:
        if result and "time_total_s" in result:
            self.seconds[trial_id] = float(result["time_total_s"])

    def on_trial_result(self, trial_id: str, result: dict):
        self._clock(trial_id, result)
        if trial_id not in self._completed_trials:
            self._report(trial_id, result)

    def _report(self, trial_id: str, result: dict) -> None:
        if isinstance(self.metric, list) or self.metric not in result:
            return  # Optuna keeps no intermediate values of several objectives
        trial = self._ot_trials[trial_id]
        epoch = int(result.get("epoch", 0))
        if epoch and epoch not in self._storage.get_trial(trial._trial_id).intermediate_values:
            trial.report(result[self.metric], epoch)

    def on_trial_complete(self, trial_id: str, result: Optional[dict] = None, error: bool = False):
        self._clock(trial_id, result)
        if error or not result or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        self._report(trial_id, result)  # a trial ASHA stops hands its last result to this call only
        if not 0 < int(result.get("epoch", 0)) < self.epochs:  # ran every epoch (or reported none)
            return super().on_trial_complete(trial_id, result, error)
        self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
        self._completed_trials.add(trial_id)

    def restore(self, checkpoint_path: str):
        super().restore(checkpoint_path)
        limits = self.folder.local / LIMITS_FILE
        if limits.is_file():
            vars(self).update(json.loads(limits.read_text()))
        self._storage = optuna_storage(self.folder)
        self._ot_study = optuna.load_study(
            study_name=self.folder.name,
            storage=self._storage,
            sampler=self._ot_study.sampler,
            pruner=self._ot_study.pruner,
        )
        for tune_id, old in list(self._ot_trials.items()):
            if self._storage.get_trial(old._trial_id).state.is_finished():
                self._completed_trials.add(tune_id)
            else:
                self._ot_trials[tune_id] = optuna.Trial(self._ot_study, old._trial_id)
        self._fail_orphans()


class SweepGenerator(SearchGenerator):
    """Tune's wrapper of a searcher, whose saved "finished" does not outlive the spec: a sweep interrupted after
    its last trial was proposed, resumed with more trials or a larger budget, asks its searcher again
    (`SearchGenerator`'s state keys: see `orchestrator.execution.ray_internals`)."""

    def set_state(self, state: dict):
        super().set_state({**state, "finished": False})


def sweep_search_alg(searcher: SweepSearch, max_concurrent: int) -> SweepGenerator:
    """The search algorithm of a sweep: at most `max_concurrent` trials at once (Tune's own wrapping, done here
    so that the generator is ours)."""
    return SweepGenerator(ConcurrencyLimiter(searcher, max_concurrent=max_concurrent))


def write_limits(folder: SweepFolder, num_trials: int, units: float, budget_hours: Optional[float]) -> None:
    """What a resumed searcher takes from the spec as it is now (`SweepSearch.restore`)."""
    limits = {"num_trials": num_trials, "units": units, "budget_hours": budget_hours}
    (folder.local / LIMITS_FILE).write_text(json.dumps(limits))
