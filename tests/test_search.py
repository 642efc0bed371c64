"""What the sweep's searcher tells Optuna, trial by trial (no Ray: Tune's calls made directly)."""

import sys

import optuna
import pytest
from optuna.distributions import FloatDistribution

from orchestrator.execution import SweepFolder
from orchestrator.search import SweepSearch

EPOCHS = 4
SPACE = {"loss.alpha": FloatDistribution(0.2, 0.8)}
State = optuna.trial.TrialState


def searcher(tmp_path, **kwargs) -> SweepSearch:
    folder = SweepFolder(str(tmp_path), "sweep")
    folder.local.mkdir(exist_ok=True)
    return SweepSearch(folder, EPOCHS, space=SPACE, metric="val", mode="max", seed=0, **kwargs)


def study(tmp_path) -> optuna.Study:
    return optuna.load_study(study_name="sweep", storage=f"sqlite:///{tmp_path / 'sweep' / 'optuna.db'}")


def run(search: SweepSearch, trial_id: str, values: list[float], **ending) -> None:
    """A trial that reports `values` at epochs 1, 2, ... and then ends as Tune 2.60 ends it: a trial ASHA
    stops has its last result in on_trial_complete only (`_process_trial_result`), an errored one none."""
    search.suggest(trial_id)
    results = [{"val": value, "epoch": epoch, "training_iteration": epoch} for epoch, value in enumerate(values, 1)]
    for result in results[:-1]:
        search.on_trial_result(trial_id, result)
    stopped = len(values) < EPOCHS and not ending
    if not stopped:  # Tune hands the last result of a trial ASHA stops to on_trial_complete only
        search.on_trial_result(trial_id, results[-1])
    search.on_trial_complete(trial_id, None if ending.get("error") else results[-1], **ending)


def test_a_trial_stopped_before_its_last_epoch_is_pruned_with_its_epochs_as_intermediate_values(tmp_path):
    search = searcher(tmp_path)
    run(search, "full", [0.3, 0.5, 0.6, 0.7])
    run(search, "stopped", [0.2, 0.25])  # ASHA stopped it after epoch 2
    run(search, "failed", [0.1], error=True)
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [State.COMPLETE, State.PRUNED, State.FAIL]
    assert trials[0].value == 0.7 and trials[0].intermediate_values == {1: 0.3, 2: 0.5, 3: 0.6, 4: 0.7}
    assert trials[1].intermediate_values == {1: 0.2, 2: 0.25}
    assert trials[1].value == 0.25  # Optuna's own rule: a pruned trial's last intermediate value


def test_intermediate_values_are_keyed_by_epoch_and_a_repeated_epoch_keeps_its_first_value(tmp_path):
    """A worker group restarted from epoch 1's checkpoint reports epoch 2 with Tune's iteration 3."""
    search = searcher(tmp_path)
    search.suggest("t")
    for iteration, (epoch, value) in enumerate([(1, 0.3), (2, 0.4), (2, 0.9), (3, 0.5), (4, 0.6)], start=1):
        search.on_trial_result("t", {"val": value, "epoch": epoch, "training_iteration": iteration})
    search.on_trial_complete("t", {"val": 0.6, "epoch": 4})
    (trial,) = study(tmp_path).trials
    assert trial.state == State.COMPLETE and trial.intermediate_values == {1: 0.3, 2: 0.4, 3: 0.5, 4: 0.6}


def test_a_restored_searcher_keeps_pruned_and_completed_trials_as_they_were(tmp_path):
    search = searcher(tmp_path)
    run(search, "a", [0.2])
    search.suggest("b")
    search.on_trial_result("b", {"val": 0.3, "epoch": 1})
    search.save(str(tmp_path / "searcher.pkl"))
    restored = searcher(tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("a", {"val": 0.9, "epoch": EPOCHS})  # Tune re-runs a: the study keeps its ending
    restored.on_trial_result("b", {"val": 0.35, "epoch": 2})
    restored.on_trial_complete("b", {"val": 0.35, "epoch": 2})
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [State.PRUNED, State.PRUNED]
    assert trials[0].value == 0.2 and trials[1].intermediate_values == {1: 0.3, 2: 0.35}


@pytest.mark.parametrize("ending", [{"result": None}, {"result": {"val": 0.5, "epoch": EPOCHS}}])
def test_a_trial_that_ran_every_epoch_or_reported_nothing_is_told_as_tune_tells_it(tmp_path, ending):
    search = searcher(tmp_path)
    search.suggest("t")
    search.on_trial_complete("t", **ending)
    (trial,) = study(tmp_path).trials
    assert trial.state == (State.COMPLETE if ending["result"] else State.PRUNED)


def test_trials_running_when_the_driver_died_are_failed_when_a_new_searcher_asks(tmp_path):
    """A storage that filled before Tune saved any state: the resumed sweep starts Tune afresh on the same
    study, so the trial the dead driver ran is failed (no ending would ever come) before another is asked."""
    searcher(tmp_path).suggest("lost")
    search = searcher(tmp_path)  # the resumed driver's, built anew
    run(search, "again", [0.3, 0.5, 0.6, 0.7])
    trials = study(tmp_path).trials
    assert [t.state for t in trials] == [State.FAIL, State.COMPLETE]


def test_a_trial_asked_for_after_the_saved_state_is_failed_on_restore(tmp_path):
    search = searcher(tmp_path)
    search.suggest("saved")
    search.save(str(tmp_path / "searcher.pkl"))
    search.suggest("unsaved")  # the driver dies before Tune saves again
    restored = searcher(tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))
    restored.on_trial_complete("saved", {"val": 0.7, "epoch": EPOCHS})
    assert [t.state for t in study(tmp_path).trials] == [State.COMPLETE, State.FAIL]


def test_the_trial_count_is_the_searchers_and_a_restore_takes_the_spec_as_it_is_now(tmp_path):
    """Tune's num_samples is saved with its state; the searcher keeps tune.num_trials, and a restored one reads
    the count, budget and units the driver wrote from the spec it resumes with."""
    from ray.tune.search import Searcher

    from orchestrator.search import write_limits

    first = searcher(tmp_path, num_trials=2, budget_hours=5.0)
    assert isinstance(first.suggest("a"), dict) and isinstance(first.suggest("b"), dict)
    assert first.suggest("c") == Searcher.FINISHED
    first.save(str(tmp_path / "searcher.pkl"))

    write_limits(first.folder, num_trials=3, units=2.0, budget_hours=8.0)
    restored = searcher(tmp_path)
    restored.restore(str(tmp_path / "searcher.pkl"))
    assert (restored.num_trials, restored.units, restored.budget_hours) == (3, 2.0, 8.0)
    assert isinstance(restored.suggest("c"), dict) and restored.suggest("d") == Searcher.FINISHED


def test_a_restored_generator_asks_its_searcher_again(tmp_path):
    """A sweep interrupted after its last trial was proposed has a saved 'finished' generator: resumed with more
    trials, it must not stay finished."""
    from orchestrator.search import SweepGenerator, sweep_search_alg

    generator = sweep_search_alg(searcher(tmp_path, num_trials=1), max_concurrent=2)
    generator._finished, generator._total_samples = True, sys.maxsize  # saved once the searcher said FINISHED
    state = generator.get_state()
    assert state["finished"] is True
    restored = SweepGenerator(searcher(tmp_path, num_trials=2))
    restored.set_state(state)
    assert not restored.is_finished()


def test_asha_stops_a_weak_trial_early_but_lets_a_trial_end_its_last_epoch_by_itself():
    """Tune's stop at the last report races the TorchTrainer's own shutdown of its workers (a traceback, a worker
    group started for nothing); the trial ends there anyway, so ASHA answers CONTINUE."""
    from types import SimpleNamespace

    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    from orchestrator.search.tuner import LastEpochASHA

    def scheduler(cls):
        asha = cls(time_attr="epoch", metric="val", mode="max", max_t=EPOCHS, grace_period=1, reduction_factor=2)
        for trial in (strong, weak):
            asha.on_trial_add(None, trial)
        return asha

    strong, weak = SimpleNamespace(trial_id="strong"), SimpleNamespace(trial_id="weak")
    for cls, last in ((ASHAScheduler, TrialScheduler.STOP), (LastEpochASHA, TrialScheduler.CONTINUE)):
        asha = scheduler(cls)
        assert asha.on_trial_result(None, strong, {"epoch": 1, "val": 0.9}) == TrialScheduler.CONTINUE
        assert asha.on_trial_result(None, weak, {"epoch": 1, "val": 0.1}) == TrialScheduler.STOP
        for epoch in range(2, EPOCHS):
            assert asha.on_trial_result(None, strong, {"epoch": epoch, "val": 0.9}) == TrialScheduler.CONTINUE
        assert asha.on_trial_result(None, strong, {"epoch": EPOCHS, "val": 0.9}) == last
