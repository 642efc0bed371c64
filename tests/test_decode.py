"""The device input path (`data.decode: gpu`) on the CPU, and `prepare_imagenet100 --resize`."""

import os
import subprocess
import sys

import pytest
import torch
from PIL import Image

from orchestrator import prepare_imagenet100
from orchestrator.data_tools import imagenet100 as prep
from trainables.config import DataConfig
from trainables.data import BadImageError, build_datasets, collate_skipping_none
from trainables.decode import device_batch


def write_images(root):
    """train/ with a colour JPEG, a grayscale JPEG, a PNG and a file that is no image; val/ with one JPEG each."""
    for split in ("train", "val"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            Image.new("RGB", (40, 30), (200, 20, 20)).save(root / split / cls / "rgb.jpg", quality=95)
    Image.new("L", (30, 50), 128).save(root / "train" / "a" / "gray.jpg")
    Image.new("RGB", (33, 33), (0, 0, 255)).save(root / "train" / "b" / "blue.png")
    (root / "train" / "b" / "zbroken.jpg").write_bytes(b"no image at all")
    return root


def batch_of(dataset):
    return collate_skipping_none([dataset[i] for i in range(len(dataset))])


def test_loader_items_are_bytes_and_the_device_decodes_every_kind_or_names_the_bad_file(tmp_path):
    root = write_images(tmp_path / "images")
    cfg = DataConfig(name="imagefolder", root=str(root), image_size=16)
    train, val, _ = build_datasets(cfg, 0, raw_bytes=True)
    datas, labels, index = batch = batch_of(train)
    assert all(d.dtype == torch.uint8 and d.dim() == 1 for d in datas) and len(datas) == 5
    assert val[0][0].shape == (3, 16, 16)  # validation stays on the PIL path
    with pytest.raises(BadImageError, match="zbroken.jpg"):
        device_batch(batch, train, torch.device("cpu"), 16)

    skipping, _, _ = build_datasets(cfg.model_copy(update={"skip_bad_images": True}), 0, raw_bytes=True)
    images, kept_labels, kept = device_batch(batch_of(skipping), skipping, torch.device("cpu"), 16)
    assert images.shape == (4, 3, 16, 16) and torch.isfinite(images).all()
    assert [skipping.path(int(i)).rsplit("/", 1)[-1] for i in kept] == ["gray.jpg", "rgb.jpg", "blue.png", "rgb.jpg"]
    assert kept_labels.tolist() == [0, 0, 1, 1]
    gray = images[0]
    assert torch.allclose(gray[0] * 0.229 + 0.485, gray[1] * 0.224 + 0.456, atol=0.02)  # gray -> equal RGB
    blue = images[2] * torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1) + torch.tensor([0.485, 0.456, 0.406]).view(
        3, 1, 1
    )
    assert blue[2].mean() > 0.95 and blue[0].mean() < 0.05  # the PNG, decoded on the CPU fallback


def test_prepare_imagenet100_resize_writes_short_side_jpegs_and_lists_unreadable_ones(tmp_path):
    src = tmp_path / "in1k"
    Image.new("RGB", (50, 40), (10, 200, 30)).save(tmp_path / "one.jpg", quality=95)
    classes = prep.read_classes()
    for wnid in classes + ["n99999999"]:
        for split, count in (("train", 1), ("val", 50)):
            (src / split / wnid).mkdir(parents=True)
            for i in range(count):  # hard links: 5,000 images for the price of one
                os.link(tmp_path / "one.jpg", src / split / wnid / f"{wnid}_{i}.JPEG")
    (src / "train" / classes[3] / "bad.JPEG").write_bytes(b"\xff\xd8 truncated")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "orchestrator.prepare_imagenet100",
            str(src),
            str(tmp_path / "out"),
            "--resize",
            "20",
            "--workers",
            "2",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1, proc.stderr  # one unreadable source image, listed and left out
    assert f"{classes[3]}/bad.JPEG: " in proc.stdout and "100 train images, 5000 val images" in proc.stdout
    out = tmp_path / "out" / "val" / classes[0]
    assert not out.is_symlink()
    with Image.open(out / f"{classes[0]}_7.JPEG") as image:
        assert image.format == "JPEG" and image.size == (25, 20)
    again = prepare_imagenet100.main([str(src), str(tmp_path / "out"), "--resize", "20", "--workers", "1"])
    assert again == 1  # a rerun keeps what was written and lists the same bad file
    assert subprocess.run(
        [sys.executable, "-m", "orchestrator.prepare_imagenet100", str(src), str(tmp_path / "o2"), "--resize", "3"],
        capture_output=True,
        text=True,
    ).stderr.startswith("error: --resize 3")
