"""Bad teachers stop before any trial: non-finite logits end the sweep with one line naming the teacher,
a teacher at chance says so, and a sweep whose every trial failed exits non-zero with its causes.
Also: the teacher and bank runs restart after a lost worker (`FailureConfig`)."""

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import yaml
from mlflow import MlflowClient

from orchestrator.search import failure_summary
from orchestrator.spec import validate_spec
from orchestrator.teacher import chance_warning, ensure_teacher, prepare_teacher
from orchestrator.teacher import preparation as preparation_module
from orchestrator.tracking import TRIAL_TAG
from tests.conftest import tiny_spec_dict
from tests.test_bank import make_jpeg_tree
from trainables import failures
from trainables.bank import DATA_FILE, Bank, build_shards, write_meta
from trainables.config import RunConfig
from trainables.failures import RunFailed
from trainables.models import build_model, output_classes
from trainables.teacher import load_teacher, write_teacher
from trainables.teacher_cache import META_FILE, WEIGHTS_FILE, is_cached, teacher_dir


def bank_setup(tmp_path, bias):
    """A 2-class JPEG tree and a ResNet-18 teacher whose classifier bias is `bias` (its logits, near enough)."""
    root = make_jpeg_tree(tmp_path / "images")
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    torch.manual_seed(0)
    model = build_model("resnet18", 2, 16)
    with torch.no_grad():
        model.fc.bias.copy_(torch.tensor(bias))
    torch.save(model.state_dict(), teacher_dir / WEIGHTS_FILE)
    cfg = RunConfig.model_validate(
        {
            "data": {"name": "imagefolder", "root": str(root), "image_size": 16},
            "teacher": {"arch": "resnet18", "bank_epochs": 1},
            "students": {"epochs": 1, "batch_size": 4},
            "teacher_dir": str(teacher_dir),
        }
    )
    return cfg, str(tmp_path / "bank")


def test_a_bank_keeps_logits_beyond_the_fp16_range_and_takes_its_sizes_from_the_workers(tmp_path):
    cfg, out = bank_setup(tmp_path, [1e6, -1e6])  # an fp16 bank held inf in every row of such a teacher
    assert build_shards(cfg, 0, 1, torch.device("cpu"), out) == 8
    assert json.loads((tmp_path / "bank" / DATA_FILE).read_text()) == {"images": 8, "num_classes": 2}
    write_meta(out, cfg, 1, {"test": True})
    _, logits = Bank(out).epoch(0)
    assert torch.isfinite(logits).all() and logits.float().abs().max() > 65504
    assert torch.isinf(logits.float().half()).all()  # what fp16 would have stored


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_bank_of_a_diverged_teacher_stops_with_one_line_naming_it(tmp_path, bad):
    cfg, out = bank_setup(tmp_path, [bad, 0.0])
    with pytest.raises(RunFailed) as err:
        build_shards(cfg, 0, 1, torch.device("cpu"), out)
    assert str(err.value) == (
        f"the teacher resnet18 ({cfg.teacher_dir}) gives non-finite logits on 8 of 8 training images: it "
        "diverged; train it again with a lower teacher.lr or more teacher.warmup_epochs, or give a working "
        "teacher.checkpoint"
    )
    assert not list((tmp_path / "bank").glob("epoch-*"))  # nothing that looks like a bank is left


def test_cached_soft_labels_of_a_diverged_teacher_stop_before_the_entry_is_cached(tmp_path):
    cfg = RunConfig.model_validate(
        {"data": {"name": "digits", "image_size": 8, "train_subset": 240}, "teacher": {"arch": "resnet18"}}
    )
    state = build_model("resnet18", 10, 8).state_dict()
    state["fc.bias"][3] = float("inf")
    folder = str(tmp_path / "teachers" / "resnet18-x")
    with pytest.raises(
        RunFailed,
        match=r"^the teacher resnet18 \(.*resnet18-x\) gives non-finite logits on 240 of "
        r"240 training images: it diverged; .*teacher\.lr",
    ):
        write_teacher(folder, state, cfg, {"source": "test"}, cache_soft_labels=True)
    assert not is_cached(folder)  # the next run trains (or loads) it again instead of reusing it


def test_a_teacher_that_does_not_fit_the_data_is_one_line_in_the_worker(tmp_path):
    torch.save(build_model("resnet18", 3, 16).state_dict(), tmp_path / WEIGHTS_FILE)
    with pytest.raises(RunFailed) as err:
        load_teacher(tmp_path, "resnet18", 2, 16)
    line = str(err.value)
    assert "\n" not in line and line.startswith(
        f"the teacher at {tmp_path} does not fit a resnet18 with this data's 2 classes at 16 px ("
    )
    assert line.endswith("check teacher.arch and teacher.checkpoint")


def test_output_classes_reads_the_classifier_of_every_registered_model():
    assert output_classes(build_model("resnet18", 7, 16).state_dict()) == 7
    assert output_classes(build_model("mobilenet_v2", 100, 224).state_dict()) == 100
    with pytest.raises(ValueError, match="no classifier"):
        output_classes({"bn.weight": torch.ones(3)})


def test_a_teacher_at_chance_says_so_with_the_figure_and_the_chance_level():
    line = chance_warning("resnet50", 0.0100, 100)
    assert line.startswith(
        "WARNING: the teacher resnet50 reaches val top-1 0.0100, not clearly above chance level 0.0100 (1/100 classes)"
    )
    assert "teacher.lr" in line and "\n" not in line
    assert chance_warning("resnet50", 0.0199, 100) is not None
    assert chance_warning("resnet50", 0.02, 100) is None and chance_warning("resnet18", 0.95, 10) is None
    assert chance_warning("resnet18", None, 10) is None  # no figure, no claim


def test_a_cached_teacher_at_chance_says_so_again_on_every_reuse(tmp_path):
    cfg = RunConfig.model_validate({"teacher": {"arch": "resnet18"}})
    folder = Path(teacher_dir(str(tmp_path), cfg))
    folder.mkdir()
    (folder / WEIGHTS_FILE).write_bytes(b"")
    warning = chance_warning("resnet18", 0.11, 10)
    (folder / META_FILE).write_text(json.dumps({"source": "trained", "val_top1": 0.11, "warning": warning}))
    lines = []
    assert ensure_teacher(cfg, str(tmp_path), scaling=None, log=lines.append) == str(folder)
    assert lines == [f"teacher: cache hit, reusing {folder}", warning]


def test_a_recorded_failure_stops_the_restart_at_once(tmp_path):
    location = str(tmp_path / "run" / "failure.txt")
    with pytest.raises(RunFailed, match="^bad teacher$"):
        with failures.recording_failures(location):
            raise failures.RunFailed("bad teacher\n")
    ran = []
    with pytest.raises(RunFailed, match="^bad teacher$"):
        with failures.recording_failures(location):
            ran.append(True)
    assert not ran


def result(error=None):
    return SimpleNamespace(error=error)


def test_the_summary_counts_each_distinct_cause_only_when_every_trial_failed():
    diverged = RuntimeError("Traceback ...\ntrainables.divergence.LossDiverged: loss diverged in epoch 1, step 1")
    oom = RuntimeError("Traceback ...\nMemoryError: out of memory")
    assert failure_summary([result(diverged), result(oom), result(diverged)]) == (
        "every trial failed (3 of 3): 2 x loss diverged in epoch 1, step 1 | 1 x MemoryError: out of memory"
    )
    assert failure_summary([result(diverged), result()]) is None  # one finished: the sweep measured something
    assert failure_summary([]) is None


class Captured(Exception):
    """Raised instead of fitting: the test wanted the trainer, not the run."""


def capture_fits(monkeypatch):
    trainers = []

    def fake_fit(trainer):
        trainers.append(trainer)
        raise Captured()

    monkeypatch.setattr(preparation_module, "fit", fake_fit)
    return trainers


def test_the_teacher_run_restarts_as_often_as_teacher_resources_allow(tmp_path, monkeypatch):
    trainers = capture_fits(monkeypatch)
    spec = validate_spec(
        tiny_spec_dict(tmp_path, resources={"max_failures": 1}, teacher_resources={"num_workers": 2, "max_failures": 3})
    )
    with pytest.raises(Captured):
        prepare_teacher(spec)
    (teacher_run,) = trainers
    assert teacher_run.run_config.failure_config.max_failures == 3
    assert teacher_run.scaling_config.num_workers == 2
    failure_file = teacher_run.train_loop_config["failure_file"]  # restarts stop at a failure they cannot fix
    assert failure_file.startswith(str(tmp_path / "runs" / "teachers" / "runs" / teacher_run.run_config.name))


def test_the_bank_run_restarts_as_often_as_its_resources_allow(tmp_path, monkeypatch):
    trainers = capture_fits(monkeypatch)
    root = make_jpeg_tree(tmp_path / "images")
    torch.save(build_model("resnet18", 2, 16).state_dict(), tmp_path / "teacher.pt")  # no teacher run
    spec = validate_spec(
        tiny_spec_dict(
            tmp_path,
            data={"name": "imagefolder", "root": str(root), "image_size": 16, "train_subset": None},
            teacher={"checkpoint": str(tmp_path / "teacher.pt")},
            resources={"max_failures": 2},
            teacher_resources={"max_failures": 5},
        )
    )
    with pytest.raises(Captured):
        prepare_teacher(spec)
    (bank_run,) = trainers
    assert bank_run.run_config.name.startswith("bank-")
    assert bank_run.run_config.failure_config.max_failures == 2  # the bank runs on the trials' resources
    assert bank_run.train_loop_config["failure_file"].endswith(".txt")


SWEEP_ENV = {**os.environ, "RAY_DEDUP_LOGS": "0"}


def write_spec(tmp_path, raw):
    raw["mlflow"] = {"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    return spec_path


@pytest.mark.slow
def test_a_sweep_with_a_diverged_teacher_ends_before_any_trial_with_one_line(tmp_path):
    state = build_model("resnet18", 10, 8).state_dict()
    state["fc.bias"][0] = float("nan")
    torch.save(state, tmp_path / "teacher.pt")
    spec_path = write_spec(
        tmp_path,
        tiny_spec_dict(
            tmp_path,
            teacher={"checkpoint": str(tmp_path / "teacher.pt")},
            search={"loss.alpha": {"type": "float", "low": 0.1, "high": 0.9}},
            tune={"num_trials": 2},
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=SWEEP_ENV,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the teacher resnet18 (") and "gives non-finite logits on 240 of 240" in last, last
    assert "teacher.lr" in last and "teacher.checkpoint" in last
    assert not list((tmp_path / "runs" / "sweeps").glob("*/train/*"))  # no trial started


@pytest.mark.slow
def test_a_sweep_whose_every_trial_fails_exits_non_zero_with_their_causes(tmp_path):
    # DML at lr 8 and beta 10 (no teacher to train): every trial's loss is nan within its first 10 steps.
    spec_path = write_spec(
        tmp_path,
        tiny_spec_dict(
            tmp_path,
            name="all-fail",
            resources={"max_failures": 0},  # no restart (its stop at once: tested apart)
            loss={"method": "dml", "beta": 10.0},
            students={"epochs": 1, "lr": 8.0},
            data={"train_subset": 480},
            search={"loss.temperature": {"type": "categorical", "choices": [3.0, 4.0]}},
            tune={  # a Pareto search: its front of no completed trial must not end in a traceback
                "num_trials": 2,
                "max_concurrent_trials": 2,
                "scheduler": "fifo",
                "metric": ["resnet18/val_top1", "mobilenet_v2/val_top1"],
                "mode": ["max", "max"],
            },
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=SWEEP_ENV,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every trial failed (2 of 2): "), last
    summary = last.removeprefix("error: every trial failed (2 of 2): ").rsplit(" (outputs in ", 1)[0]
    causes = {part.split(" x ", 1)[1]: int(part.split(" x ", 1)[0]) for part in summary.split(" | ")}
    assert sum(causes.values()) == 2, causes  # the two temperatures name themselves in the hint: two causes
    assert all(cause.startswith("loss diverged in epoch 1, step ") for cause in causes), causes
    folder = next((tmp_path / "runs" / "sweeps").glob("all-fail-*"))
    assert {"results.csv", "pareto.csv"} <= {p.name for p in folder.iterdir()}
    assert "KeyError" not in proc.stderr  # (the workers' own tracebacks are in it: Ray forwards them)
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = [
        r
        for r in client.search_runs([client.get_experiment_by_name("all-fail").experiment_id])
        if r.data.tags.get(TRIAL_TAG) == "parent"
    ]
    assert parent.info.status == "FAILED"

    report = subprocess.run(
        [sys.executable, "-m", "orchestrator.report", folder.name],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env=SWEEP_ENV,
    )
    assert report.returncode == 1 and "Traceback" not in report.stderr, report.stderr[-3000:]
    last = report.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: sweep {folder.name}: every trial failed (2 of 2): ") and "loss diverged" in last


@pytest.mark.slow
def test_a_comparison_whose_every_trial_fails_exits_non_zero_with_their_causes(tmp_path):
    torch.save(build_model("resnet18", 10, 8).state_dict(), tmp_path / "teacher.pt")  # a comparison needs one
    spec_path = write_spec(
        tmp_path,
        tiny_spec_dict(
            tmp_path,
            name="all-fail-compare",
            resources={"max_failures": 0},  # no restart (its stop at once: tested apart)
            loss={"method": "dml", "beta": 10.0},
            students={"epochs": 1, "lr": 8.0},
            data={"train_subset": 480},
            teacher={"checkpoint": str(tmp_path / "teacher.pt")},
            compare={"methods": ["dml"], "seeds": [0]},
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=SWEEP_ENV,
    )
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: every trial failed (1 of 1): 1 x loss diverged in epoch 1, step "), last
    assert "comparison finished" not in proc.stdout


@pytest.mark.slow
def test_a_bank_of_a_diverged_teacher_ends_the_run_with_one_line_and_its_restart_stops_at_once(tmp_path):
    root = make_jpeg_tree(tmp_path / "images")
    model = build_model("resnet18", 2, 16)
    with torch.no_grad():
        model.fc.bias.fill_(float("inf"))
    torch.save(model.state_dict(), tmp_path / "teacher.pt")
    spec_path = write_spec(
        tmp_path,
        tiny_spec_dict(
            tmp_path,
            data={"name": "imagefolder", "root": str(root), "image_size": 16, "train_subset": None},
            teacher={"checkpoint": str(tmp_path / "teacher.pt")},
            resources={"max_failures": 1},
        ),
    )
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.train", str(spec_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env=SWEEP_ENV,
    )
    assert proc.returncode == 2, proc.stdout[-3000:] + proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    teacher = next((tmp_path / "runs" / "teachers").glob("resnet18-*"))
    assert last == (
        f"error: building the soft-label bank: the teacher resnet18 ({teacher}) gives non-finite "
        "logits on 8 of 8 training images: it diverged; train it again with a lower teacher.lr or more "
        "teacher.warmup_epochs, or give a working teacher.checkpoint"
    ), last
    (recorded,) = (tmp_path / "runs" / "teachers" / "runs").glob("bank-*/failure-*.txt")
    assert recorded.read_text().strip() == last.removeprefix("error: building the soft-label bank: ")
    assert "MLflow: run" not in proc.stdout  # stopped before the students' run
