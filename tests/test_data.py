import subprocess
import sys
from collections import Counter

import pytest
import torch
from PIL import Image
from torchvision.datasets.folder import IMG_EXTENSIONS

from orchestrator.data_tools import IMAGE_SUFFIXES
from orchestrator.data_tools import imagenet100 as prep
from trainables.config import DataConfig
from trainables.data import build_datasets, train_transform_is_deterministic


def labels_of(dataset):
    return [dataset[i][1] for i in range(len(dataset))]


def test_digits_split_sizes_shapes_and_indices():
    train, val, num_classes = build_datasets(DataConfig(name="digits", image_size=16, val_fraction=0.25), seed=0)
    assert num_classes == 10
    assert len(train) + len(val) == 1797
    assert len(val) == 450  # ceil(0.25 * 1797), sklearn's rounding
    image, label, index = train[7]
    assert image.shape == (3, 16, 16) and image.dtype == torch.float32
    assert isinstance(label, int) and index == 7
    assert torch.equal(image[0], image[2])
    assert -1.0 <= image.min() < image.max() <= 1.0


def test_digits_split_is_stratified():
    cfg = DataConfig(name="digits", val_fraction=0.2)
    train, val, _ = build_datasets(cfg, seed=0)
    totals = Counter(labels_of(train)) + Counter(labels_of(val))
    in_val = Counter(labels_of(val))
    for cls, total in totals.items():
        assert abs(in_val[cls] - total * len(val) / 1797) <= 1


def test_digits_split_depends_on_the_seed_only():
    cfg = DataConfig(name="digits")
    a, _, _ = build_datasets(cfg, seed=0)
    b, _, _ = build_datasets(cfg, seed=0)
    c, _, _ = build_datasets(cfg, seed=1)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)


def test_digits_train_subset_is_stratified():
    train, val, _ = build_datasets(DataConfig(name="digits", train_subset=100), seed=0)
    assert len(train) == 100 and len(val) == 360
    assert all(9 <= n <= 11 for n in Counter(labels_of(train)).values())
    with pytest.raises(ValueError, match="train_subset"):
        build_datasets(DataConfig(name="digits", train_subset=5000), seed=0)


def test_digits_augment_shifts_train_only():
    cfg = DataConfig(name="digits", image_size=32, augment=True)
    assert not train_transform_is_deterministic(cfg)
    train, val, _ = build_datasets(cfg, seed=0)
    torch.manual_seed(0)
    shifted = [train[0][0] for _ in range(8)]
    assert any(not torch.equal(shifted[0], s) for s in shifted[1:])
    assert all(s.shape == (3, 32, 32) for s in shifted)
    assert torch.equal(val[0][0], val.images[0].repeat(3, 1, 1))
    plain, _, _ = build_datasets(DataConfig(name="digits", image_size=32), seed=0)
    assert torch.equal(plain[0][0], plain.images[0].repeat(3, 1, 1))
    assert train_transform_is_deterministic(DataConfig(name="digits"))


def test_synthetic_shapes_and_determinism():
    cfg = DataConfig(name="synthetic", image_size=24, num_classes=5, synthetic_train_size=40, synthetic_val_size=20)
    train, val, num_classes = build_datasets(cfg, seed=3)
    assert (len(train), len(val), num_classes) == (40, 20, 5)
    image, label, index = train[11]
    assert image.shape == (3, 24, 24) and 0 <= label < 5 and index == 11
    again, _, _ = build_datasets(cfg, seed=3)
    assert torch.equal(again[11][0], image) and again[11][1] == label
    assert not torch.equal(val[11][0], image)
    other, _, _ = build_datasets(cfg, seed=4)
    assert not torch.equal(other[11][0], image)
    assert train_transform_is_deterministic(cfg)
    assert len(build_datasets(cfg.model_copy(update={"train_subset": 10}), seed=3)[0]) == 10


def make_image_tree(root, splits):
    for split, classes in splits.items():
        for cls, count in classes.items():
            (root / split / cls).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (20, 30), (40 * i, 100, 200)).save(root / split / cls / f"{i}.png")


def test_imagefolder_items_and_subset(tmp_path):
    make_image_tree(tmp_path, {"train": {"cat": 3, "dog": 3}, "val": {"cat": 2, "dog": 2}})
    cfg = DataConfig(name="imagefolder", root=str(tmp_path), image_size=16)
    train, val, num_classes = build_datasets(cfg, seed=0)
    assert (len(train), len(val), num_classes) == (6, 4, 2)
    image, label, index = val[3]
    assert image.shape == (3, 16, 16) and label == 1 and index == 3
    assert train[5][0].shape == (3, 16, 16) and train[5][2] == 5
    assert not train_transform_is_deterministic(cfg)
    subset, _, _ = build_datasets(cfg.model_copy(update={"train_subset": 4}), seed=0)
    assert len(subset) == 4 and [subset[i][2] for i in range(4)] == [0, 1, 2, 3]


def test_imagefolder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="must hold train/ and val/"):
        build_datasets(DataConfig(name="imagefolder", root=str(tmp_path / "missing")), seed=0)
    make_image_tree(tmp_path, {"train": {"cat": 1, "dog": 1}, "val": {"cat": 1, "eel": 1}})
    with pytest.raises(ValueError, match="different classes"):
        build_datasets(DataConfig(name="imagefolder", root=str(tmp_path)), seed=0)


def test_counted_suffixes_match_imagefolder():
    assert IMAGE_SUFFIXES == tuple(IMG_EXTENSIONS)  # written out: torchvision imports torch


def run_cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.prepare_imagenet100", *map(str, args)], capture_output=True, text=True
    )


def make_imagenet(root, val_per_class=None):
    """A fake ImageNet-1k: the 100 classes plus one extra, empty files (only links are made)."""
    val_per_class = val_per_class or {}
    for wnid in prep.read_classes() + ["n99999999"]:
        for split, count in (("train", 2), ("val", val_per_class.get(wnid, 50))):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(count):
                (folder / f"{wnid}_{i}.JPEG").touch()


def test_prepare_imagenet100_builds_and_is_idempotent(tmp_path):
    make_imagenet(tmp_path / "in1k")
    classes = prep.read_classes()
    assert len(set(classes)) == 100
    summary = prep.build_imagenet100(tmp_path / "in1k", tmp_path / "in100", classes)
    assert summary == {"out": str(tmp_path / "in100"), "classes": 100, "train_images": 200, "val_images": 5000}
    assert sorted(p.name for p in (tmp_path / "in100" / "val").iterdir()) == sorted(classes)
    assert (tmp_path / "in100" / "train" / classes[0]).is_symlink()
    rerun = run_cli(tmp_path / "in1k", tmp_path / "in100")
    assert rerun.returncode == 0, rerun.stderr
    assert "100 classes, 200 train images, 5000 val images" in rerun.stdout
    (tmp_path / "in100" / "train" / "stray").mkdir()
    with pytest.raises(prep.PrepareError, match="stray"):
        prep.build_imagenet100(tmp_path / "in1k", tmp_path / "in100", classes)


def test_prepare_imagenet100_cli_fails_cleanly_on_a_short_val_class(tmp_path):
    short = prep.read_classes()[17]
    make_imagenet(tmp_path / "in1k", {short: 49})
    result = run_cli(tmp_path / "in1k", tmp_path / "in100")
    assert result.returncode == 2
    assert result.stderr.startswith("error: ") and result.stderr.count("\n") == 1
    assert short in result.stderr and "49" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "in100").exists()


def test_prepare_imagenet100_cli_reports_a_missing_root(tmp_path):
    result = run_cli(tmp_path / "nowhere", tmp_path / "in100")
    assert result.returncode == 2 and result.stderr.count("\n") == 1
    assert "nowhere" in result.stderr and "Traceback" not in result.stderr


def test_label_noise_moves_the_stated_share_to_other_classes():
    clean, clean_val, _ = build_datasets(DataConfig(name="digits", image_size=8), 0)
    noisy, noisy_val, _ = build_datasets(DataConfig(name="digits", image_size=8, label_noise=0.4), 0)
    changed = noisy.labels != clean.labels
    assert changed.sum().item() == round(0.4 * len(clean.labels))  # every chosen label really moves
    assert torch.equal(noisy_val.labels, clean_val.labels)  # validation stays clean
    again, _, _ = build_datasets(DataConfig(name="digits", image_size=8, label_noise=0.4), 0)
    assert torch.equal(again.labels, noisy.labels)  # fixed by the split seed
    from trainables.data import noisy_labels

    assert not torch.equal(noisy_labels(clean.labels, 0.4, 10, 1), noisy.labels)  # another seed, other noise
    with pytest.raises(ValueError, match="label_noise is for the embedded data"):
        DataConfig(name="imagefolder", root="x", label_noise=0.1)
