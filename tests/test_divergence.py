"""A diverging loss stops the run with one line (epoch, step, student, term, what to try); no metric sees NaN.

The guard and the failure records as plain functions; then real Ray: a TorchTrainer whose learning
rate diverges, a sweep in which one trial diverges (FAILED in MLflow and Optuna, the sweep goes on),
and `orchestrator.train` ending with the line.
"""

import math
import os
import subprocess
import sys

import optuna
import pytest
import torch
import yaml
from mlflow import MlflowClient
from torch import nn

from orchestrator.execution import build_trainer, failure_location, worker_failure
from orchestrator.spec import validate_spec
from orchestrator.teacher import prepare_teacher
from orchestrator.tracking import PARENT_TAG, error_line
from tests.conftest import tiny_spec_dict
from trainables import failures
from trainables.divergence import FiniteGuard, LossDiverged, divergence_hint
from trainables.loop import _Averager, evaluate

NAMES = ("resnet18", "mobilenet_v2")
HINT = "try a lower students.lr (now 8)"


def parts(**values):
    """A `students_loss`-shaped dict with the given terms (others 1.0)."""
    out = {f"{n}/{t}": torch.tensor(1.0) for n in NAMES for t in ("ce", "kd", "peer", "total")}
    out.update({k.replace("__", "/"): torch.tensor(v) for k, v in values.items()})
    out["teacher_weight"], out["gated"] = torch.tensor(0.5), torch.tensor(0.0)
    return out


def test_guard_names_the_first_bad_step_and_term():
    guard = FiniteGuard(epoch=2, steps=7, every=4, hint=HINT)
    guard.update(1, parts())
    guard.update(2, parts(mobilenet_v2__peer=math.inf))  # noted on the device, not yet looked at
    guard.update(3, parts(resnet18__ce=math.nan, mobilenet_v2__peer=math.nan))
    with pytest.raises(LossDiverged) as err:
        guard.update(4, parts(resnet18__ce=math.nan))  # the 4th step is a check
    assert str(err.value) == (
        "loss diverged in epoch 2, step 2 of 7: mobilenet_v2's peer loss is inf; try a lower students.lr (now 8)"
    )
    assert "\n" not in str(err.value)


def test_guard_lists_every_term_bad_at_that_step_and_checks_at_the_last_step():
    guard = FiniteGuard(epoch=1, steps=3, every=50, hint=HINT)
    guard.update(1, parts())
    guard.update(2, parts(resnet18__kd=math.nan, resnet18__total=math.nan, mobilenet_v2__ce=-math.inf))
    with pytest.raises(
        LossDiverged,
        match=r"step 2 of 3: mobilenet_v2's ce loss is -inf "
        r"\(also resnet18/kd, resnet18/total\)",
    ):
        guard.update(3, parts())  # the epoch's last step is always checked
    quiet = FiniteGuard(epoch=1, steps=3, every=1, hint=HINT)
    for step in (1, 2, 3):
        quiet.update(step, parts())
    quiet.check()  # all finite: nothing raised


def test_hint_names_only_the_settings_that_act():
    assert divergence_hint(8.0, {"alpha": 0.0, "beta": 0.0, "temperature": 4.0}) == "try a lower students.lr (now 8)"
    assert divergence_hint(0.5, {"alpha": 0.5, "beta": 0.0, "temperature": 4.0}) == (
        "try a lower students.lr (now 0.5) or loss.temperature (now 4)"
    )
    assert divergence_hint(0.5, {"alpha": 0.5, "beta": 1.5, "temperature": 2.0}) == (
        "try a lower students.lr (now 0.5), loss.beta (now 1.5) or loss.temperature (now 2)"
    )


def test_averager_keeps_sums_on_the_device_until_the_epoch_ends():
    avg = _Averager()
    avg.add({"a": torch.tensor(1.0), "b": torch.tensor(4.0)}, 2)
    avg.add({"a": torch.tensor(3.0), "b": torch.tensor(0.0)}, 2)
    assert isinstance(avg.sums["a"], torch.Tensor)
    assert avg.means() == {"a": 2.0, "b": 2.0}


class Broken(nn.Module):
    def forward(self, x):
        return torch.full((x.shape[0], 3), math.nan)


def test_evaluate_refuses_nan_outputs_before_any_metric():
    batches = [(torch.zeros(4, 3, 8, 8), torch.tensor([0, 1, 2, 0]), torch.arange(4))]
    with pytest.raises(
        LossDiverged,
        match=r"^loss diverged in epoch 3: broken gives NaN or inf outputs on the "
        r"validation set \(its weights are not finite\); try a lower",
    ):
        evaluate({"broken": Broken()}, batches, "cpu", torch.autocast("cpu", enabled=False), epoch=3, hint=HINT)


def test_failure_records_are_one_line_and_found_again(tmp_path):
    location = str(tmp_path / "run" / failures.FAILURE_FILE)
    assert failures.recorded(location) is None
    failures.raise_recorded(location)  # nothing recorded: nothing raised
    wrapped = LossDiverged(
        "Caught LossDiverged in DataLoader worker process 0.\nOriginal Traceback:\n  File x\n"
        "trainables.divergence.LossDiverged: loss diverged in epoch 1"
    )
    assert failures.one_line(wrapped) == "loss diverged in epoch 1"
    failures.record(location, "loss diverged in epoch 1")
    with pytest.raises(failures.RunFailed, match="^loss diverged in epoch 1$"):
        failures.raise_recorded(location)
    failures.clear_recorded(str(tmp_path))
    assert failures.recorded(location) is None


def test_error_tag_is_the_message_of_our_errors_and_the_last_line_of_others():
    text = (
        'Failure # 1\nTraceback (most recent call last):\n  File "x", line 1\n'
        "trainables.failures.RunFailed: loss diverged in epoch 2, step 3 of 7: ...\n"
    )
    assert error_line(text) == "loss diverged in epoch 2, step 3 of 7: ..."
    assert error_line("Traceback\nValueError: bad\n") == "ValueError: bad"
    assert error_line("") == "failed"


# DML (no teacher to train) at lr 8 and beta 10: the loss grows to NaN within the first 10 steps of the 15 (at
# beta 1 one seed and temperature stayed finite through the epoch once MobileNetV2 ran channels-last on CPU).
DIVERGING = {
    "loss": {"method": "dml", "beta": 10.0},
    "students": {"epochs": 1, "lr": 8.0},
    "data": {"train_subset": 480},
}


def test_a_diverging_run_fails_with_one_line_and_its_restart_fails_at_once(ray_local, tmp_path):
    import ray.train

    # no restart inside a fit (the default restarts, which stop at once as the second fit below does)
    spec = validate_spec(tiny_spec_dict(tmp_path, resources={"max_failures": 0}, **DIVERGING))
    run_cfg = prepare_teacher(spec)  # dml: no teacher
    storage_path = str(tmp_path / "single")
    with pytest.raises(ray.train.TrainingFailedError) as err:
        build_trainer(spec, run_cfg, name="diverges", storage_path=storage_path).fit()
    failure = worker_failure(err.value, storage_path)
    assert isinstance(failure, LossDiverged)
    line = str(failure)
    assert line.startswith("loss diverged in epoch 1, step ") and "\n" not in line
    assert "'s ce loss is nan" in line or "'s peer loss is nan" in line, line
    assert line.endswith("try a lower students.lr (now 8), loss.beta (now 10) or loss.temperature (now 4)")
    assert failures.recorded(failure_location(storage_path, "diverges")) == line

    # A restart of the same run (what Ray Train's or Tune's retry does) stops at once with the same line.
    with pytest.raises(ray.train.TrainingFailedError) as again:
        build_trainer(spec, run_cfg, name="diverges", storage_path=storage_path).fit()
    assert str(worker_failure(again.value, storage_path)) == line


@pytest.mark.slow
def test_a_diverging_trial_fails_and_the_sweep_goes_on(tmp_path):
    raw = tiny_spec_dict(
        tmp_path,
        name="diverge-sweep",
        resources={"max_failures": 0},  # no restart (its stop at once: tested apart)
        **DIVERGING,
        search={"students.lr": {"type": "categorical", "choices": [0.02, 8.0]}},
        tune={"num_trials": 2, "max_concurrent_trials": 1, "scheduler": "fifo", "seed": 0},
        mlflow={"experiment": "diverge-sweep", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    client = MlflowClient(tracking_uri=raw["mlflow"]["tracking_uri"])
    exp = client.get_experiment_by_name("diverge-sweep")
    children = {
        r.data.params["students.lr"]: r for r in client.search_runs([exp.experiment_id]) if r.data.tags.get(PARENT_TAG)
    }
    assert set(children) == {"0.02", "8.0"}, "the seed must draw both learning rates"
    failed, good = children["8.0"], children["0.02"]
    assert failed.info.status == "FAILED" and good.info.status == "FINISHED"
    assert failed.data.tags["error"].startswith("loss diverged in epoch 1, step ")
    assert "try a lower students.lr (now 8)" in failed.data.tags["error"]
    assert "resnet18/val_top1" in good.data.metrics

    folder = next((tmp_path / "runs" / "sweeps").glob("diverge-sweep-*"))
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}")
    states = {t.params["students.lr"]: t.state for t in study.trials}
    assert states == {8.0: optuna.trial.TrialState.FAIL, 0.02: optuna.trial.TrialState.COMPLETE}
    assert "best.yaml" in {p.name for p in folder.iterdir()}  # the good trial is the best one


@pytest.mark.slow
def test_train_cli_ends_with_the_divergence_line(tmp_path):
    # no restart (its stop at once: tested apart)
    raw = tiny_spec_dict(tmp_path, resources={"max_failures": 0}, **DIVERGING)
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.train", str(spec_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: loss diverged in epoch 1, step ") and "students.lr (now 8)" in last, last
    assert "bincount" not in proc.stderr  # no metric ever saw NaN
