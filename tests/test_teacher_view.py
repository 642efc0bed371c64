"""A teacher with blind spots (`teacher.data`): only the teacher's training labels change, and its figures say
whether it is unsure where it errs (no Ray: the teacher's cache entry is written from hand-made weights)."""

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from orchestrator.spec import SpecError, validate_spec
from orchestrator.teacher import error_auroc, teacher_val_summary
from tests.conftest import tiny_spec_dict
from trainables.config import DataConfig, RunConfig
from trainables.data import build_datasets
from trainables.models import build_model
from trainables.teacher import load_soft_labels, teacher_training_config, write_teacher
from trainables.teacher_cache import read_meta, teacher_identity

GROUP = [3, 5, 8]


def digits(**view) -> DataConfig:
    return DataConfig(name="digits", image_size=8, **view)


def test_confused_classes_redraw_only_their_labels_within_the_group():
    clean, clean_val, _ = build_datasets(digits(), 0)
    confused, confused_val, _ = build_datasets(digits(confused_classes=[GROUP]), 0)
    members = torch.isin(clean.labels, torch.tensor(GROUP))
    assert torch.equal(confused.labels[~members], clean.labels[~members])  # other classes untouched
    assert torch.isin(confused.labels[members], torch.tensor(GROUP)).all()  # drawn within the group
    counts = torch.bincount(confused.labels[members], minlength=10)[GROUP]
    assert counts.min() > 0.25 * members.sum()  # about a third each: the labels no longer tell them apart
    assert (confused.labels[members] == clean.labels[members]).double().mean() < 0.5
    assert torch.equal(confused_val.labels, clean_val.labels)  # validation stays clean
    again, _, _ = build_datasets(digits(confused_classes=[GROUP]), 0)
    assert torch.equal(again.labels, confused.labels)  # fixed by the split seed


def test_rare_classes_keep_their_share_and_items_are_indexed_anew():
    clean, _, _ = build_datasets(digits(), 0)
    rare, _, _ = build_datasets(digits(rare_classes=GROUP, rare_keep=0.05), 0)
    before, after = torch.bincount(clean.labels, minlength=10), torch.bincount(rare.labels, minlength=10)
    for c in range(10):
        assert after[c] == (max(1, round(0.05 * before[c].item())) if c in GROUP else before[c])
    assert len(rare) == after.sum()
    assert [rare[i][2] for i in (0, len(rare) - 1)] == [0, len(rare) - 1]  # the index keys soft labels
    assert all(rare[i][1] == rare.labels[i] for i in range(0, len(rare), 97))


@pytest.mark.parametrize(
    "view, message",
    [
        ({"confused_classes": [[3, 3]]}, "not a group of 2 or more"),
        ({"confused_classes": [[1, 2], [2, 3]]}, "in no other group"),
        ({"rare_classes": [4, 4]}, "distinct class ids"),
    ],
)
def test_bad_views_are_refused(view, message):
    with pytest.raises(ValueError, match=message):
        digits(**view)
    with pytest.raises(ValueError, match=r"teacher\.data\.\w+: .*" + message):
        RunConfig.model_validate({"data": {"name": "digits"}, "teacher": {"data": view}})


def test_a_class_the_data_lacks_is_one_line_and_views_are_for_the_embedded_data():
    with pytest.raises(ValueError, match="class 12 does not exist: this data has classes 0 to 9"):
        digits(rare_classes=[12])
    with pytest.raises(ValueError, match=r"teacher\.data\.confused_classes: class 4 does not exist: .* 0 to 3"):
        RunConfig.model_validate(
            {"data": {"name": "synthetic", "num_classes": 4}, "teacher": {"data": {"confused_classes": [[2, 4]]}}}
        )
    with pytest.raises(ValueError, match="rare_classes is for the embedded data"):
        DataConfig(name="imagefolder", root="x", rare_classes=[1])
    with pytest.raises(ValueError, match="teacher.checkpoint is not trained"):
        RunConfig.model_validate({"teacher": {"checkpoint": "t.pt", "data": {"rare_classes": [1]}}})


def test_the_spec_refuses_a_view_key_it_does_not_know(tmp_path):
    with pytest.raises(SpecError, match="teacher.data.rare_class"):
        validate_spec(tiny_spec_dict(tmp_path, teacher={"arch": "resnet18", "data": {"rare_class": [1]}}))


def test_the_view_changes_only_the_teachers_data(tmp_path):
    raw = {"data": {"name": "digits", "image_size": 8}, "teacher": {"arch": "resnet18"}}
    plain = RunConfig.model_validate(raw)
    viewed = RunConfig.model_validate(
        {**raw, "teacher": {"arch": "resnet18", "data": {"rare_classes": GROUP, "rare_keep": 0.05}}}
    )
    assert viewed.data == plain.data  # the students' data, loaders and labels
    students, _, _ = build_datasets(viewed.data, viewed.data.split_seed)
    plain_students, _, _ = build_datasets(plain.data, plain.data.split_seed)
    assert torch.equal(students.labels, plain_students.labels) and torch.equal(students.images, plain_students.images)
    teacher_run = teacher_training_config(viewed)
    assert teacher_run.data.rare_classes == GROUP and teacher_run.data.rare_keep == 0.05
    assert len(build_datasets(teacher_run.data, 0)[0]) < len(students)
    assert teacher_training_config(plain).data == plain.data
    # another teacher, another cache entry; without a view the identity holds no key a view added
    assert teacher_identity(viewed) != teacher_identity(plain)
    assert not {"confused_classes", "rare_classes", "rare_keep"} & set(teacher_identity(plain)["data"])
    assert "data" not in teacher_identity(plain)["teacher"]
    # the cached soft labels are the teacher's logits on the students' whole training split
    folder = str(tmp_path / "teacher")
    state = build_model("resnet18", 10, 8).state_dict()
    write_teacher(folder, state, viewed, {"source": "test"}, cache_soft_labels=True)
    assert load_soft_labels(folder).shape == (len(students), 10)
    assert read_meta(folder)["identity"]["teacher"]["data"]["rare_classes"] == GROUP


def test_the_teacher_may_see_more_labelled_images_than_the_students():
    """`teacher.data.train_subset`: all (the whole training split) or a number, while the students keep their few;
    the validation split is the same for both; unset, the teacher's cache key is what it was before the key."""
    raw = {"data": {"name": "digits", "image_size": 8, "train_subset": 100}, "teacher": {"arch": "resnet18"}}
    students, students_val, _ = build_datasets(RunConfig.model_validate(raw).data, 0)
    assert len(students) == 100
    view = {"train_subset": "all", "rare_classes": GROUP, "rare_keep": 0.1}
    whole = RunConfig.model_validate({**raw, "teacher": {"arch": "resnet18", "data": view}})
    assert whole.data.train_subset == 100  # the students' data is untouched
    teacher_train, teacher_val, _ = build_datasets(teacher_training_config(whole).data, 0)
    full, _, _ = build_datasets(digits(), 0)
    counts = torch.bincount(full.labels, minlength=10)
    assert len(teacher_train) == sum(max(1, round(0.1 * n)) if c in GROUP else n for c, n in enumerate(counts.tolist()))
    assert torch.equal(teacher_val.labels, students_val.labels) and torch.equal(teacher_val.images, students_val.images)
    some = RunConfig.model_validate({**raw, "teacher": {"arch": "resnet18", "data": {"train_subset": 500}}})
    assert len(build_datasets(teacher_training_config(some).data, 0)[0]) == 500
    assert teacher_identity(whole)["teacher"]["data"]["train_subset"] == "all"
    assert teacher_identity(whole) != teacher_identity(some)
    rare = RunConfig.model_validate({**raw, "teacher": {"arch": "resnet18", "data": {"rare_classes": GROUP}}})
    assert "train_subset" not in teacher_identity(rare)["teacher"]["data"]  # older entries keep their keys
    for bad in (5, "most"):
        with pytest.raises(ValueError, match="teacher.data.train_subset"):
            RunConfig.model_validate({**raw, "teacher": {"arch": "resnet18", "data": {"train_subset": bad}}})


def test_error_auroc_and_the_blind_spot_figures():
    u = torch.tensor([0.9, 0.8, 0.1, 0.2, 0.3, 0.7])
    wrong = torch.tensor([1, 1, 0, 0, 0, 1]).bool()
    assert error_auroc(u, wrong) == 1.0  # every error less sure than every right answer
    assert error_auroc(1 - u, wrong) == 0.0
    # errors at 0.5 and 0.2, right answers at 0.5 and 0.9: of 4 pairs only the tie counts, as a half
    assert error_auroc(torch.tensor([0.5, 0.5, 0.2, 0.9]), torch.tensor([1, 0, 1, 0]).bool()) == pytest.approx(0.125)
    assert math.isnan(error_auroc(u, torch.zeros(6).bool()))
    # a teacher sure and right on classes 0-1, unsure (uniform) on class 2, where it is wrong
    labels = torch.tensor([0, 1, 2, 2, 0, 1])
    logits = torch.full((6, 3), -10.0)
    logits[[0, 1, 4, 5], labels[[0, 1, 4, 5]]] = 10.0
    logits[2:4] = 0.0
    logits[2:4, 0] = 1e-3  # argmax 0: wrong
    summary = teacher_val_summary(logits, labels, threshold=0.5, blind_classes=[2])
    assert summary["teacher_u/val_top1"] == pytest.approx(4 / 6)
    assert summary["teacher_u/val_error_auroc"] == 1.0
    assert summary["teacher_u/val_blind_top1"] == 0.0 and summary["teacher_u/val_elsewhere_top1"] == 1.0
    assert summary["teacher_u/val_blind_mean"] == pytest.approx(1.0, abs=1e-4)
    assert summary["teacher_u/val_share_above_threshold"] == pytest.approx(2 / 6)


def run_teacher_check(tmp_path, spec: dict, *overrides: str) -> subprocess.CompletedProcess:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    command = [
        sys.executable,
        "-m",
        "orchestrator.teacher_check",
        str(path),
        *[a for o in overrides for a in ("--set", o)],
    ]
    return subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=600)


def test_teacher_check_refuses_image_folders_in_one_line(tmp_path):
    spec = tiny_spec_dict(tmp_path, data={"name": "imagefolder", "root": str(tmp_path), "train_subset": None})
    result = run_teacher_check(tmp_path, spec)
    assert result.returncode == 2 and result.stderr.strip().count("\n") == 0, result.stderr
    assert "for digits and synthetic" in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_teacher_check_trains_a_blind_teacher_and_prints_its_figures(tmp_path):
    spec = tiny_spec_dict(
        tmp_path, teacher={"data": {"rare_classes": [3, 5], "rare_keep": 0.1}}, loss={"threshold": 0.5}
    )
    result = run_teacher_check(tmp_path, spec, "teacher.epochs=2")
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "teacher: cache miss, training resnet18" in out
    figures = dict(line.strip().rsplit(": ", 1) for line in out.split("on the validation set", 1)[1].splitlines()[1:10])
    assert 0 <= float(figures["AUROC of u for its errors"]) <= 1
    assert float(figures["top-1 on the blind-spot classes 3,5"]) < float(figures["top-1 elsewhere"])
    assert "share above loss.threshold" in figures and "share_above_threshold" in out  # the training-set line
    again = run_teacher_check(tmp_path, spec, "teacher.epochs=2")  # the same teacher: a cache hit, the same figures
    assert "teacher: cache hit" in again.stdout
    assert again.stdout.split("on the validation set", 1)[1] == out.split("on the validation set", 1)[1]


def test_the_shipped_blind_spot_comparison_plans_its_teachers_view(tmp_path):
    spec = Path(__file__).parents[1] / "search_spaces" / "blindspot" / "compare.yaml"
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec), "--dry-run"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert "teacher trains on its own view of the data: {'rare_classes': [3, 5, 8], 'rare_keep': 0.05}" in result.stdout
    assert "30 fixed: 6 methods x seeds [0, 1, 2, 3, 4]" in result.stdout
    assert result.stdout.startswith("comparison blindspot-compare: methods ce, kd, dml, dual_kd, ua_kd, ua_dual,")
