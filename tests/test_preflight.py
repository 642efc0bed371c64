"""Pre-flight: missing inputs, unwritable storage and an unreported tune.metric are found on the driver,
before Ray starts and in `--dry-run`, one line each, exit 2."""

import subprocess
import sys

import pytest
import yaml
from PIL import Image

from orchestrator.spec import PreflightError, data_root_problems, preflight, validate_spec
from tests.conftest import tiny_spec_dict


def make_tree(root, splits):
    for split, classes in splits.items():
        for cls, count in classes.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (8, 8)).save(root / split / cls / f"{i}.png")


def test_data_root_layout(tmp_path):
    assert data_root_problems(str(tmp_path / "none"))[0].startswith(f"data.root {tmp_path / 'none'} not found")
    make_tree(tmp_path / "a", {"train": {"cat": 1}})
    assert "has no val/ folder" in data_root_problems(str(tmp_path / "a"))[0]
    make_tree(tmp_path / "b", {"train": {"cat": 1, "dog": 1, "eel": 1}, "val": {"cat": 1, "fox": 1}})
    [problem] = data_root_problems(str(tmp_path / "b"))
    assert "different classes (2 only in train/ (e.g. dog), 1 only in val/ (e.g. fox))" in problem
    make_tree(tmp_path / "c", {"train": {"cat": 1, "dog": 0}, "val": {"cat": 1, "dog": 1}})
    assert "1 class folders hold no images (e.g. train/dog)" in data_root_problems(str(tmp_path / "c"))[0]
    make_tree(tmp_path / "d", {"train": {"cat": 2, "dog": 1}, "val": {"cat": 1, "dog": 1}})
    assert data_root_problems(str(tmp_path / "d")) == []


def spec_with(tmp_path, **sections):
    return validate_spec(tiny_spec_dict(tmp_path, **sections))


def test_every_problem_is_one_line(tmp_path):
    (tmp_path / "a-file").write_text("")
    spec = spec_with(
        tmp_path,
        data={"name": "imagefolder", "root": str(tmp_path / "nowhere")},
        teacher={"checkpoint": str(tmp_path / "t.pt")},
        students={"init_weights": {"resnet18": str(tmp_path / "r18.pt")}},
        tune={"metric": "val_acc"},
    )
    with pytest.raises(PreflightError) as err:
        preflight(spec, str(tmp_path / "a-file" / "sweeps"), create=False)
    lines = str(err.value).splitlines()
    assert len(lines) == 5, lines
    assert lines[0].startswith(f"data.root {tmp_path / 'nowhere'} not found")
    assert lines[1].startswith(f"teacher.checkpoint {tmp_path / 't.pt'} not found")
    assert lines[2].startswith(f"students.init_weights.resnet18 {tmp_path / 'r18.pt'} not found")
    assert lines[3].startswith(f"storage {tmp_path / 'a-file' / 'sweeps'} is not writable")
    assert lines[4].startswith("tune.metric 'val_acc' is not reported by every trial's epochs: use one of epoch, ")
    assert "val_top1_mean" in lines[4] and "resnet18/val_top1" in lines[4]


def test_skipping_the_data_check_says_so_and_keeps_the_driver_side_checks(tmp_path):
    spec = spec_with(
        tmp_path,
        data={"name": "imagefolder", "root": str(tmp_path / "nowhere")},
        students={"init_weights": {"resnet18": str(tmp_path / "r18.pt")}},
    )
    notes = preflight(spec, str(tmp_path / "runs" / "sweeps"), create=False, skip_data_check=True)
    assert notes == [
        "data check skipped (--skip-data-check): the workers will find any problem with data.root and init_weights"
    ]
    assert not (tmp_path / "runs").exists()  # without create, nothing is made
    preflight(spec, str(tmp_path / "runs" / "sweeps"), create=True, skip_data_check=True)
    assert (tmp_path / "runs" / "sweeps").is_dir() and not list((tmp_path / "runs" / "sweeps").iterdir())


@pytest.mark.parametrize("skip", [False, True])
def test_a_bucket_data_root_is_refused_with_one_line(tmp_path, skip):
    # imagefolder opens local paths only: no half support that fails in the workers after the teacher trained.
    bucket = spec_with(tmp_path, data={"name": "imagefolder", "root": "s3://bucket/imagenet100"})
    with pytest.raises(PreflightError) as err:
        preflight(bucket, str(tmp_path / "runs" / "sweeps"), create=False, skip_data_check=skip)
    assert str(err.value) == (
        "data.root s3://bucket/imagenet100 is a bucket, and imagefolder reads only local "
        "paths: copy the images to a folder every node mounts at the same path (local or "
        "shared disk) and set data.root to it"
    )


def test_metric_must_be_reported_by_every_trial(tmp_path):
    # teacher/val_top1 is reported by methods with a teacher, not by a comparison's dml trials.
    spec = spec_with(tmp_path, compare={"methods": ["kd", "dml"], "seeds": [0]}, tune={"metric": "teacher/val_top1"})
    with pytest.raises(PreflightError, match="'teacher/val_top1' is not reported by every trial"):
        preflight(spec, str(tmp_path / "runs"), create=False)
    assert (
        preflight(
            spec_with(tmp_path, tune={"metric": "mobilenet_v2/val_ece", "mode": "min"}),
            str(tmp_path / "runs"),
            create=False,
        )
        == []
    )
    skipping = spec_with(
        tmp_path,
        data={"name": "imagefolder", "root": str(tmp_path), "skip_bad_images": True},
        tune={"metric": "bad_images", "mode": "min"},
    )
    assert preflight(skipping, str(tmp_path / "runs"), create=False, skip_data_check=True)


def dry_run(spec_path, cwd, *extra):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path), "--dry-run", *extra],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_dry_run_reports_each_problem_on_a_line_and_exits_2(tmp_path):
    raw = tiny_spec_dict(
        tmp_path,
        search={"loss.alpha": {"type": "float", "low": 0.1, "high": 0.9}},
        data={"name": "imagefolder", "root": str(tmp_path / "nowhere")},
        teacher={"checkpoint": str(tmp_path / "t.pt")},
        tune={"metric": "val_acc"},
    )
    (tmp_path / "a-file").write_text("")
    raw["storage"] = str(tmp_path / "a-file" / "runs")
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    proc = dry_run(spec_path, tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("error: ") for line in lines), proc.stderr
    assert [line.split()[1] for line in lines] == ["data.root", "teacher.checkpoint", "storage", "tune.metric"]
    assert "trials:" in proc.stdout  # the plan, then what is wrong with it

    skipped = dry_run(
        spec_path,
        tmp_path,
        "--skip-data-check",
        "--set",
        "tune.metric=val_top1_mean",
        "--set",
        f"storage={tmp_path / 'runs'}",
        "--set",
        "teacher.checkpoint=null",
    )
    assert skipped.returncode == 0, skipped.stderr
    assert "note: data check skipped (--skip-data-check)" in skipped.stdout
    assert not (tmp_path / "runs").exists()


def test_dry_run_refuses_a_bucket_data_root_even_when_skipping_the_data_check(tmp_path):
    raw = tiny_spec_dict(
        tmp_path,
        search={"loss.alpha": {"type": "float", "low": 0.1, "high": 0.9}},
        data={"name": "imagefolder", "root": "s3://bucket/imagenet100"},
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    proc = dry_run(spec_path, tmp_path, "--skip-data-check")
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "error: data.root s3://bucket/imagenet100 is a bucket, and imagefolder reads only local paths: copy the "
        "images to a folder every node mounts at the same path (local or shared disk) and set data.root to it"
    ]


def test_train_checks_before_ray_starts(tmp_path):
    raw = tiny_spec_dict(tmp_path, data={"name": "imagefolder", "root": str(tmp_path / "nowhere")})
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.train", str(spec_path)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        f"error: data.root {tmp_path / 'nowhere'} not found: an imagefolder root holds train/<class>/ and "
        "val/<class>/ (--skip-data-check when only the workers see it)"
    ]
    assert "Ray" not in proc.stdout + proc.stderr  # found before Ray started
