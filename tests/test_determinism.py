"""The same spec and seed train to the same per-epoch metrics twice on the CPU (real Ray Train runs)."""

import json
import sys

import pandas as pd
import pytest
import ray
import torch
from ray.train import UserCallback

from orchestrator.execution import build_trainer
from orchestrator.spec import validate_spec
from orchestrator.teacher import prepare_teacher
from tests.conftest import tiny_spec_dict
from trainables.loop import use_deterministic_algorithms
from trainables.metric_names import epoch_metric_names

TIMING = {"images_per_s", "epoch_seconds"}


class WriteReports(UserCallback):
    """Every epoch's report as a JSON line (the callback runs in Ray Train's controller, not in the test)."""

    def __init__(self, path: str):
        self.path = path

    def after_report(self, run_context, metrics: list[dict], checkpoint=None):
        with open(self.path, "a") as f:
            f.write(json.dumps(metrics[0]) + "\n")


ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the controller cannot import this test module


@pytest.mark.slow
def test_same_spec_and_seed_give_identical_epochs(ray_local, tmp_path):
    # augmented data and a live teacher forward: the random shifts and the batch order must repeat too
    spec = validate_spec(tiny_spec_dict(tmp_path, data={"augment": True}, students={"epochs": 2}, seed=3))
    run_cfg = prepare_teacher(spec)
    keys = sorted(set(epoch_metric_names(spec.run_config())) - TIMING)

    def epochs(name: str) -> pd.DataFrame:
        reports = tmp_path / f"{name}.jsonl"
        build_trainer(
            spec, run_cfg, name=name, storage_path=str(tmp_path / "runs-det"), callbacks=[WriteReports(str(reports))]
        ).fit()
        return pd.read_json(reports, lines=True)[keys]

    first, second = epochs("first"), epochs("second")
    assert len(first) == 2 and first["resnet18/train_kd"].gt(0).all()
    pd.testing.assert_frame_equal(first, second, check_exact=True)


def test_deterministic_setting_switches_torch_to_deterministic_kernels():
    assert not torch.are_deterministic_algorithms_enabled()
    try:
        use_deterministic_algorithms()
        assert torch.are_deterministic_algorithms_enabled() and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(False)
