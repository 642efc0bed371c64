"""A Tune trial whose TorchTrainer reports twice while the driver is busy (a callback that blocks on the
first result for DRIVER_BUSY_S, as a driver waiting for a down MLflow server does). Run as a script by
tests/test_faults.py, under a timeout: in Ray 2.60 such a trial deadlocks unless it hands over its last
report (`orchestrator.execution.ray_internals.hand_over_last_report`). Argument: `hand-over` or `plain`."""

import sys
import tempfile
import time

import ray
import ray.train
import ray.tune
from ray.train.torch import TorchTrainer
from ray.tune.integration.ray_train import TuneReportCallback

from orchestrator.execution import hand_over_last_report

DRIVER_BUSY_S = 15


def loop(config):
    for epoch in range(2):
        ray.train.report({"epoch": epoch + 1})


def trial(config):
    run = ray.train.RunConfig(name=ray.tune.get_context().get_trial_id(), callbacks=[TuneReportCallback()])
    TorchTrainer(loop, scaling_config=ray.train.ScalingConfig(num_workers=1), run_config=run).fit()
    if config["mode"] == "hand-over":
        hand_over_last_report()


class BusyDriver(ray.tune.Callback):
    def on_trial_result(self, iteration, trials, trial, result, **info):
        if result.get("epoch") == 1:
            time.sleep(DRIVER_BUSY_S)  # meanwhile the trainer reports epoch 2 and returns


if __name__ == "__main__":
    ray.init(num_cpus=2, resources={"TRAIN_DRIVER": 1}, include_dashboard=False)
    tuner = ray.tune.Tuner(
        ray.tune.with_resources(trial, {"TRAIN_DRIVER": 1}),
        param_space={"mode": sys.argv[1]},
        run_config=ray.tune.RunConfig(storage_path=tempfile.mkdtemp(), callbacks=[BusyDriver()], verbose=0),
    )
    grid = tuner.fit()
    epochs = [r.metrics.get("epoch") for r in grid]
    print(f"trials ended: {grid.num_terminated}, last epochs: {epochs}")
    sys.exit(0 if grid.num_terminated == 1 and epochs == [2] else 1)
