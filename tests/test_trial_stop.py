"""A trial Tune stops mid-run (as ASHA does) ends its run at once, and its actor goes on to the next trial.

Real Ray Tune and Train: Tune's stop of a running trial sets the trial's stop event; `LeanTorchTrainer` aborts the
run's controller on it, so the trial's thread has ended when Tune resets the actor for the next trial. Without the
abort the thread is still inside `fit()`, the reset waits in vain and the next trial fails ("reset_config").
"""

import ray.tune
import torch

from orchestrator.search.trial import trial_trainable
from orchestrator.spec import validate_spec
from tests.conftest import tiny_spec_dict
from trainables.files import STATE_FILE

EPOCHS = 6


def test_a_trial_stopped_mid_run_hands_its_actor_to_the_next_trial(ray_local, tmp_path):
    spec = validate_spec(tiny_spec_dict(tmp_path, students={"epochs": EPOCHS}, loss={"method": "dml", "beta": 1.0}))
    tuner = ray.tune.Tuner(
        trial_trainable(spec, None, str(tmp_path / "train")),
        param_space={"seed": ray.tune.grid_search([0, 1])},
        tune_config=ray.tune.TuneConfig(max_concurrent_trials=1, reuse_actors=True, time_budget_s=600),
        run_config=ray.tune.RunConfig(name="stops", storage_path=str(tmp_path / "tune"), stop={"epoch": 1}),
    )
    results = tuner.fit()  # without the abort it hangs (the budget ends it)

    assert not results.errors, results.errors
    assert [r.metrics["epoch"] for r in results] == [1, 1]  # each stopped after its first epoch
    assert len({r.metrics["pid"] for r in results}) == 1  # the second trial ran in the first one's actor
    for result in results:  # and its run did not train on to its last epoch after the stop (a tiny epoch: ~1 s)
        (saved,) = (tmp_path / "train" / result.metrics["trial_id"]).glob(f"checkpoint_*/{STATE_FILE}")
        assert torch.load(saved, weights_only=False)["epoch"] + 1 < EPOCHS
