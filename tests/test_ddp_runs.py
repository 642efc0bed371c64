"""Two gloo workers per run, on augmented imagefolder data (real Ray Train runs on the CPU).

- Two undisturbed runs of one seed are equal, bit for bit; another seed trains in another order.
- A worker SIGKILLed after the first epoch: Ray Train restarts the group from the last checkpoint and
  every epoch's figures equal the undisturbed run's, bit for bit, with the bank and with a live teacher
  (each rank's random state is in the checkpoint).
- A rank whose whole batch is unreadable does not hang its peer: the ranks agree to skip the step.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
import torch

from orchestrator.execution import build_trainer
from orchestrator.spec import validate_spec
from orchestrator.teacher import prepare_teacher
from tests.conftest import tiny_spec_dict
from tests.test_bad_images import truncate
from tests.test_bank import make_jpeg_tree
from tests.test_determinism import TIMING, WriteReports
from tests.test_faults import train_workers
from trainables import distributed
from trainables.metric_names import epoch_metric_names
from trainables.models import build_model

pytestmark = pytest.mark.slow
EPOCHS = 3
CLASSES = ("a", "b", "c", "d")


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    """4 classes x 10 JPEGs of different sizes per split, and a random ResNet-18 teacher for them."""
    root = tmp_path_factory.mktemp("ddp-images")
    make_jpeg_tree(root / "tree", per_class=10, classes=CLASSES)
    torch.manual_seed(0)
    torch.save(build_model("resnet18", len(CLASSES), 16).state_dict(), root / "teacher.pt")
    return root


def two_worker_spec(tmp_path: Path, images: Path, live_teacher: bool = False, **data):
    return validate_spec(
        tiny_spec_dict(
            tmp_path,
            data={"name": "imagefolder", "root": str(images / "tree"), "image_size": 16, "train_subset": None, **data},
            teacher={"checkpoint": str(images / "teacher.pt"), "cache_soft_labels": not live_teacher},
            students={"epochs": EPOCHS, "batch_size": 4},
            resources={"num_workers": 2, "max_failures": 1},
        )
    )


class KillAfterFirstEpoch(threading.Thread):
    """SIGKILLs one train worker once the run has reported its first epoch (so, in epoch 2)."""

    def __init__(self, reports: Path):
        super().__init__(daemon=True)
        self.reports, self.reports_at_kill, self.done = reports, None, threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            lines = self.reports.read_text().count("\n") if self.reports.exists() else 0
            workers = train_workers(os.getpid())  # this session's local Ray runs under it
            if lines >= 1 and workers:
                time.sleep(0.3)
                victim = workers[-1]
                self.reports_at_kill = self.reports.read_text().count("\n")
                os.kill(victim, signal.SIGKILL)
                return
            time.sleep(0.05)


def epochs(spec, run_cfg, tmp_path: Path, name: str, kill: bool = False) -> pd.DataFrame:
    """Each epoch's reported figures (the last report of each epoch, after any restart), timing left out."""
    reports = tmp_path / f"{name}.jsonl"
    killer = KillAfterFirstEpoch(reports) if kill else None
    if killer:
        killer.start()
    try:
        build_trainer(
            spec, run_cfg, name=name, storage_path=str(tmp_path / "ddp-runs"), callbacks=[WriteReports(str(reports))]
        ).fit()
    finally:
        if killer:
            killer.done.set()
    if killer:
        assert killer.reports_at_kill is not None and killer.reports_at_kill < EPOCHS, "the kill came too late"
    keys = sorted(set(epoch_metric_names(spec.run_config())) - TIMING)
    table = pd.read_json(reports, lines=True)
    return table.drop_duplicates("epoch", keep="last").reset_index(drop=True)[keys]


def test_two_workers_repeat_exactly_and_resume_exactly_with_the_bank(ray_local, tmp_path, images):
    spec = two_worker_spec(tmp_path, images)
    run_cfg = prepare_teacher(spec)
    assert run_cfg.bank_dir
    first = epochs(spec, run_cfg, tmp_path, "first")
    assert list(first["epoch"]) == [1, 2, 3] and first["teacher_forwards"].eq(0).all()
    pd.testing.assert_frame_equal(epochs(spec, run_cfg, tmp_path, "second"), first, check_exact=True)

    killed = epochs(spec, run_cfg, tmp_path, "killed", kill=True)
    pd.testing.assert_frame_equal(killed, first, check_exact=True)

    other_spec = validate_spec({**spec.model_dump(), "seed": 1})
    other_cfg = prepare_teacher(other_spec)
    assert other_cfg.bank_dir != run_cfg.bank_dir  # each seed replays its own views
    other = epochs(other_spec, other_cfg, tmp_path, "seed1")
    assert (other["resnet18/train_ce"] != first["resnet18/train_ce"]).all()


def test_two_workers_resume_exactly_with_a_live_teacher(ray_local, tmp_path, images):
    spec = two_worker_spec(tmp_path, images, live_teacher=True)
    run_cfg = prepare_teacher(spec)
    assert run_cfg.bank_dir is None
    calm = epochs(spec, run_cfg, tmp_path, "calm")
    assert calm["teacher_forwards"].gt(0).all()
    pd.testing.assert_frame_equal(epochs(spec, run_cfg, tmp_path, "killed-live", kill=True), calm, check_exact=True)


def test_a_rank_whose_whole_batch_is_unreadable_does_not_hang_its_peer(ray_local, tmp_path, images):
    tree = tmp_path / "tree"
    make_jpeg_tree(tree, per_class=6, classes=("a", "b"))
    bad = sorted((tree / "train").rglob("*.jpg"))[::2]  # half the training images unreadable
    for path in bad:
        truncate(path)
    spec = validate_spec(
        tiny_spec_dict(
            tmp_path,
            data={
                "name": "imagefolder",
                "root": str(tree),
                "image_size": 16,
                "train_subset": None,
                "skip_bad_images": True,
            },
            loss={"method": "dml"},
            students={"epochs": 1, "batch_size": 2},
            resources={"num_workers": 2},
        )
    )
    # The precondition, from the run's own order: in some step one rank's batch is all unreadable, the other's not.
    from torchvision.datasets import ImageFolder

    paths = [Path(p) for p, _ in ImageFolder(str(tree / "train")).samples]
    unreadable = {i for i, p in enumerate(paths) if p in set(bad)}
    batches = []
    for rank in range(2):
        sampler = distributed.train_sampler(paths, spec.seed, rank, 2)
        sampler.set_epoch(0)
        order = list(sampler)
        batches.append([set(order[i : i + 2]) <= unreadable for i in range(0, len(order) - 1, 2)])
    assert any(a != b for a, b in zip(*batches)), "no step where only one rank's batch is unreadable"

    outcome = {}
    thread = threading.Thread(
        target=lambda: outcome.setdefault(
            "result",
            build_trainer(spec, prepare_teacher(spec), name="half-bad", storage_path=str(tmp_path / "bad-runs")).fit(),
        ),
        daemon=True,
    )
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive(), "the run hung: a rank skipped a step its peer took"
    m = outcome["result"].metrics
    assert m["epoch"] == 1 and m["bad_images"] == len(bad)
