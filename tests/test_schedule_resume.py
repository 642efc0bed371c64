"""A resume with another worker count (so other steps per epoch) continues the learning-rate schedule from
the completed epochs: every later step takes the rate the schedule gives there, as an uninterrupted run of
the new worker count would. With the same count the saved state loads as it is (an exact resume)."""

from __future__ import annotations

import pandas as pd
import pytest
import ray.train
import torch

from orchestrator.execution import build_trainer
from orchestrator.spec import validate_spec
from tests.conftest import tiny_spec_dict
from tests.test_ddp_runs import KillAfterFirstEpoch
from tests.test_determinism import WriteReports
from trainables.config import OptimConfig
from trainables.loop import build_optimizer, load_schedule, lr_factor, resume_line, schedule_position

COSINE = OptimConfig(epochs=10, lr=0.1, warmup_epochs=1, schedule="cosine")
ONE_WORKER_STEPS, TWO_WORKER_STEPS = 8, 4  # one worker takes twice the steps per epoch of two


def schedule(steps_per_epoch: int, cfg: OptimConfig = COSINE):
    """An optimizer of one parameter and the loop's LambdaLR over it."""
    optimizer = build_optimizer([torch.nn.Parameter(torch.zeros(1))], cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, steps_per_epoch, cfg))
    return optimizer, scheduler


def step_lrs(optimizer, scheduler, steps: int) -> list[float]:
    """The learning rate each of the next `steps` optimizer steps takes."""
    lrs = []
    for _ in range(steps):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return lrs


def checkpoint_after(epochs: int, steps_per_epoch: int, workers: int, cfg: OptimConfig = COSINE) -> dict:
    """The state a run of `workers` workers saves after `epochs` epochs (the schedule's part)."""
    optimizer, scheduler = schedule(steps_per_epoch, cfg)
    step_lrs(optimizer, scheduler, epochs * steps_per_epoch)
    return {
        "epoch": epochs - 1,
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict(),
        "rngs": [{}] * workers,
        "workers": workers,
        "steps_per_epoch": steps_per_epoch,
    }


@pytest.mark.parametrize(
    "old,new", [((1, ONE_WORKER_STEPS), (2, TWO_WORKER_STEPS)), ((2, TWO_WORKER_STEPS), (1, ONE_WORKER_STEPS))]
)
@pytest.mark.parametrize("legacy", [False, True], ids=["stored", "older-checkpoint"])
def test_another_worker_count_continues_the_schedule_from_the_completed_epochs(old, new, legacy):
    (old_workers, old_steps), (new_workers, new_steps) = old, new
    state = checkpoint_after(5, old_steps, old_workers)
    if legacy:  # written before the worker count and steps per epoch were stored: its random states tell
        del state["workers"], state["steps_per_epoch"]
    optimizer, scheduler = schedule(new_steps)
    assert load_schedule(optimizer, scheduler, state, new_steps, new_workers)

    start = schedule_position(5, new_steps)
    resumed = step_lrs(optimizer, scheduler, 5 * new_steps)
    expected = [COSINE.lr * lr_factor(start + i, new_steps, COSINE) for i in range(5 * new_steps)]
    assert resumed == pytest.approx(expected, rel=1e-12, abs=1e-15)
    assert resumed[0] == pytest.approx(0.1 * 0.5868, rel=1e-3) and resumed[-1] < resumed[0] / 50
    uninterrupted = step_lrs(*schedule(new_steps), 10 * new_steps)[start:]
    assert resumed == uninterrupted  # bit for bit: the rates of a run that had the new count throughout


def test_the_same_worker_count_loads_the_saved_schedule_as_it_is():
    state = checkpoint_after(5, ONE_WORKER_STEPS, 1)
    optimizer, scheduler = schedule(ONE_WORKER_STEPS)
    state["scheduler"]["last_epoch"] -= 1  # as after a skipped step: not the completed epochs' count
    assert not load_schedule(optimizer, scheduler, state, ONE_WORKER_STEPS, 1)
    assert scheduler.last_epoch == 5 * ONE_WORKER_STEPS - 1
    assert optimizer.param_groups[0]["lr"] == state["optimizer"]["param_groups"][0]["lr"]


def test_the_resume_line_names_the_change_of_worker_count():
    state = checkpoint_after(5, ONE_WORKER_STEPS, 1)
    assert resume_line("r", 5, 2, state, TWO_WORKER_STEPS, True) == (
        "r: resumed from the checkpoint of epoch 5, continuing at epoch 6 with 2 worker(s) (checkpoint written "
        "by 1): learning-rate schedule continued from epoch 5"
    )
    assert resume_line("r", 5, 1, state, ONE_WORKER_STEPS, False) == (
        "r: resumed from the checkpoint of epoch 5, continuing at epoch 6"
    )
    assert resume_line("r", 5, 1, state, 6, True).endswith(
        "continuing at epoch 6 with 6 steps per epoch (checkpoint: 8): learning-rate schedule continued from epoch 5"
    )


E2E_EPOCHS = 6  # enough that a leg cut short after its first report does not reach the end


def e2e_spec(tmp_path, workers: int):
    """Tiny digits without a teacher; 240 images in batches of 24: 10 steps per epoch on one worker, 5 on two.
    No restart inside a fit: each leg is cut short and the next one resumes it, with its own worker count."""
    return validate_spec(
        tiny_spec_dict(
            tmp_path,
            loss={"method": "dml", "beta": 1.0},
            students={"epochs": E2E_EPOCHS, "batch_size": 24, "warmup_epochs": 1},
            resources={"num_workers": workers, "cpus_per_worker": 1, "max_failures": 0},  # the test resumes
        )
    )


def fit_cut_short(spec, tmp_path, name: str, reports) -> None:
    """Runs `name` (resuming it if it has a checkpoint) until a worker is killed after its first report."""
    killer = KillAfterFirstEpoch(reports)
    killer.start()
    try:
        with pytest.raises(ray.train.TrainingFailedError):
            build_trainer(spec, spec.run_config(), name, str(tmp_path / "runs"), [WriteReports(str(reports))]).fit()
    finally:
        killer.done.set()


@pytest.mark.slow
def test_real_runs_continue_the_schedule_when_resumed_with_another_worker_count(ray_local, tmp_path):
    """1 worker cut short, resumed with 2 (cut short again), resumed with 1: each epoch's reported `lr` (the
    rate after its last step) is the schedule's at that epoch's end, at that run's steps per epoch."""
    legs = [(1, 10), (2, 5), (1, 10)]
    tables = []
    for leg, (workers, _) in enumerate(legs):
        reports = tmp_path / f"leg{leg}.jsonl"
        spec = e2e_spec(tmp_path, workers)
        if leg < len(legs) - 1:
            fit_cut_short(spec, tmp_path, "switch", reports)
        else:
            build_trainer(spec, spec.run_config(), "switch", str(tmp_path / "runs"), [WriteReports(str(reports))]).fit()
        tables.append(pd.read_json(reports, lines=True))
    cfg = e2e_spec(tmp_path, 1).run_config().students
    assert tables[1]["epoch"].iloc[0] > 1 and tables[2]["epoch"].iloc[-1] == E2E_EPOCHS  # each leg resumed
    for table, (_, steps) in zip(tables, legs):
        for epoch, lr in zip(table["epoch"], table["lr"]):
            assert lr == pytest.approx(cfg.lr * lr_factor(epoch * steps, steps, cfg), rel=1e-9, abs=1e-12), epoch
