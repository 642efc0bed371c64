"""A driver that never touches the data: sizes and classes of an image folder come from the workers.

The driver runs as tests/driver_without_data.py, in which building an image-folder dataset raises; the
Ray workers, other processes, read the real tree. The run trains the teacher, builds its bank and
trains the students on it.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from orchestrator.execution import scaling_config
from orchestrator.spec import validate_spec
from orchestrator.teacher import ensure_teacher, teacher_cache
from tests.conftest import tiny_spec_dict
from tests.driver_without_data import REFUSAL, refuse
from tests.test_bank import make_jpeg_tree
from trainables.models import build_model
from trainables.teacher_cache import read_meta

WRAPPER = Path(__file__).with_name("driver_without_data.py")


def test_the_wrapper_really_keeps_the_driver_from_the_data(tmp_path):
    root = make_jpeg_tree(tmp_path / "images")
    (tmp_path / "opens_data.py").write_text(
        "from trainables.config import DataConfig\nfrom trainables.data import build_datasets\n"
        f"build_datasets(DataConfig(name='imagefolder', root={str(root)!r}), 0)\n"
    )
    proc = subprocess.run(
        [sys.executable, str(WRAPPER), "opens_data"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
    )
    assert proc.returncode != 0 and REFUSAL in proc.stderr, proc.stderr[-2000:]


def test_a_given_checkpoint_is_sized_from_its_last_layer_without_the_data(tmp_path, monkeypatch):
    monkeypatch.setattr("trainables.data._imagefolder", refuse)
    torch.save(build_model("resnet18", 5, 16).state_dict(), tmp_path / "teacher.pt")
    spec = validate_spec(
        tiny_spec_dict(
            tmp_path,
            data={"name": "imagefolder", "root": str(tmp_path / "nowhere"), "image_size": 16, "train_subset": None},
            teacher={"checkpoint": str(tmp_path / "teacher.pt")},
        )
    )
    folder = ensure_teacher(spec.run_config(), teacher_cache(spec), scaling_config(spec.resources))
    assert read_meta(folder)["num_classes"] == 5


@pytest.mark.slow
def test_train_with_a_driver_that_cannot_open_the_data_trains_the_teacher_and_uses_the_bank(tmp_path):
    root = make_jpeg_tree(tmp_path / "images", per_class=6, classes=("a", "b", "c", "d"))
    raw = tiny_spec_dict(
        tmp_path,
        name="no-data-driver",
        data={"name": "imagefolder", "root": str(root), "image_size": 16, "train_subset": None},
        teacher={"epochs": 1, "batch_size": 8},
        students={"epochs": 1, "batch_size": 8},
        mlflow={"experiment": "no-data-driver", "tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, str(WRAPPER), "orchestrator.train", str(spec_path), "--skip-data-check"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert REFUSAL not in proc.stderr
    out = proc.stdout
    assert "teacher: cache miss, training resnet18" in out and "teacher: building a soft-label bank" in out

    top1 = float(out.split("teacher: trained, val top-1 ")[1].split()[0])
    assert ("WARNING: the teacher resnet18 reaches val top-1" in out) == (top1 < 2 / 4), out  # chance: 1/4

    (bank_meta,) = (tmp_path / "runs" / "teachers").glob("resnet18-*/banks/*/bank.json")
    meta = json.loads(bank_meta.read_text())
    assert (meta["images"], meta["num_classes"]) == (24, 4)  # what the workers found
    (teacher_meta,) = (tmp_path / "runs" / "teachers").glob("resnet18-*/meta.json")
    assert json.loads(teacher_meta.read_text())["num_classes"] == 4

    client = MlflowClient(tracking_uri=raw["mlflow"]["tracking_uri"])
    (run,) = client.search_runs([client.get_experiment_by_name("no-data-driver").experiment_id])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["teacher_forwards"] == 0  # the students read the bank, not a live teacher
