"""An unreadable image: one line naming its path, or skipped and counted; verified ahead by decoding all.

Real JPEGs written by PIL, one of them truncated, in a real imagefolder tree.
"""

import os
import subprocess
import sys

import pytest
import torch
import yaml
from PIL import Image

from orchestrator.data_tools import find_bad_images, image_files
from orchestrator.data_tools import imagenet100 as prep
from orchestrator.execution import build_trainer
from orchestrator.spec import validate_spec
from orchestrator.teacher import prepare_teacher
from tests.conftest import tiny_spec_dict
from trainables.config import DataConfig
from trainables.data import BadImageError, build_datasets, collate_skipping_none


def write_jpeg(path, shade=100, size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (shade, 255 - shade, 80)).save(path, "JPEG")


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@pytest.fixture
def folder(tmp_path):
    """train/ and val/ with two classes of JPEGs; train/dog/2.jpg is truncated."""
    root = tmp_path / "images"
    for split, count in (("train", 6), ("val", 3)):
        for cls in ("cat", "dog"):
            for i in range(count):
                write_jpeg(root / split / cls / f"{i}.jpg", shade=30 * i)
    bad = root / "train" / "dog" / "2.jpg"
    truncate(bad)
    return root, bad


def test_an_unreadable_image_is_one_line_naming_its_path(folder):
    root, bad = folder
    train, _, _ = build_datasets(DataConfig(name="imagefolder", root=str(root), image_size=16), seed=0)
    paths = [path for path, _ in train.base.samples]
    with pytest.raises(BadImageError) as err:
        train[paths.index(str(bad))]
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"unreadable image {bad} (")
    assert "data.skip_bad_images: true" in line and "orchestrator.verify_images" in line


def test_skip_bad_images_drops_the_file_from_its_batch(folder):
    root, bad = folder
    train, val, _ = build_datasets(
        DataConfig(name="imagefolder", root=str(root), image_size=16, skip_bad_images=True), seed=0
    )
    items = [train[i] for i in range(len(train))]
    assert sum(item is None for item in items) == 1 and len(items) == 12
    images, labels, index = collate_skipping_none(items)
    assert images.shape == (11, 3, 16, 16) and len(labels) == 11
    assert collate_skipping_none([None, None]) is None
    loader = torch.utils.data.DataLoader(train, batch_size=4, num_workers=2, collate_fn=collate_skipping_none)
    assert sum(len(batch[1]) for batch in loader) == 11  # also from DataLoader worker processes


def test_verify_images_lists_the_bad_ones_and_exits_1(folder, tmp_path):
    root, bad = folder
    assert len(image_files(root)) == 18
    found = find_bad_images(image_files(root), workers=2)
    assert [path for path, _ in found] == [str(bad)] and "truncated" in found[0][1].lower()
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.verify_images", str(root), "--workers", "2"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1, proc.stderr
    lines = proc.stdout.strip().splitlines()
    assert lines[0].startswith(f"{bad}: ") and lines[-1].startswith("18 images decoded") and "1 unreadable" in lines[-1]
    bad.unlink()
    clean = subprocess.run(
        [sys.executable, "-m", "orchestrator.verify_images", str(root)], capture_output=True, text=True, timeout=120
    )
    assert clean.returncode == 0 and "17 images decoded" in clean.stdout and ": 0 unreadable" in clean.stdout
    missing = subprocess.run(
        [sys.executable, "-m", "orchestrator.verify_images", str(tmp_path / "nowhere")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert missing.returncode == 2 and missing.stderr.startswith("error: ") and "Traceback" not in missing.stderr


def test_prepare_imagenet100_verify_decodes_every_linked_image(tmp_path):
    source = tmp_path / "in1k"
    for wnid in prep.read_classes():
        for split, count in (("train", 1), ("val", prep.VAL_PER_CLASS)):
            for i in range(count):
                write_jpeg(source / split / wnid / f"{wnid}_{i}.JPEG", shade=i, size=(8, 8))
    bad = source / "val" / prep.read_classes()[3] / f"{prep.read_classes()[3]}_7.JPEG"
    truncate(bad)
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.prepare_imagenet100", str(source), str(tmp_path / "in100"), "--verify"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr
    assert "100 classes, 100 train images, 5000 val images" in proc.stdout
    listed = [
        line
        for line in proc.stdout.splitlines()
        if ": " in line and "images decoded" not in line and "ready at" not in line
    ]
    assert len(listed) == 1 and bad.name in listed[0]  # the path through OUT's link names the file
    assert "5100 images decoded" in proc.stdout and "1 unreadable" in proc.stdout


def imagefolder_spec(tmp_path, root, **data):
    return tiny_spec_dict(
        tmp_path,
        data={"name": "imagefolder", "root": str(root), "image_size": 16, "train_subset": None, **data},
        loss={"method": "dml", "beta": 1.0},
        students={"batch_size": 4},
        resources={"max_failures": 0},  # no restart (its stop at once: tested apart)
    )


@pytest.mark.slow
def test_a_run_skips_and_counts_bad_images(ray_local, folder, tmp_path):
    root, bad = folder
    spec = validate_spec(imagefolder_spec(tmp_path, root, skip_bad_images=True))
    result = build_trainer(spec, prepare_teacher(spec), name="skips", storage_path=str(tmp_path / "single")).fit()
    assert result.metrics["bad_images"] == 1 and result.metrics["epoch"] == 1


@pytest.mark.slow
def test_train_cli_ends_with_the_bad_image_line(folder, tmp_path):
    root, bad = folder
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(imagefolder_spec(tmp_path, root, loader_workers=1)))
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.train", str(spec_path)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "RAY_DEDUP_LOGS": "0"},
    )
    assert proc.returncode == 2, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: unreadable image {bad} ("), last
