"""The soft-label bank: recorded views, replayed exactly, with the teacher's logits on them; and both input paths."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from orchestrator.execution import build_trainer
from orchestrator.spec import validate_spec
from orchestrator.teacher import prepare_teacher
from tests.conftest import tiny_spec_dict
from trainables.bank import Bank, build_shards, write_meta
from trainables.config import RunConfig
from trainables.data import build_datasets
from trainables.decode import device_batch
from trainables.models import build_model
from trainables.teacher import load_teacher
from trainables.teacher_cache import WEIGHTS_FILE
from trainables.views import RATIO, SCALE, UNIFORMS, apply_batch, apply_pil, draw_views, epoch_uniforms


def smooth_image(height, width, shade):
    y, x = np.mgrid[0:height, 0:width]
    rgb = np.stack([255 * x / width, 255 * y / height, np.full_like(x, shade, dtype=float)], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def make_jpeg_tree(root: Path, per_class=4, classes=("a", "b")):
    for split in ("train", "val"):
        for c, cls in enumerate(classes):
            (root / split / cls).mkdir(parents=True)
            for i in range(per_class):
                smooth_image(30 + 7 * i, 44 - 3 * i + 10 * c, 60 * i).save(root / split / cls / f"{i}.jpg", quality=95)
    return root


def test_drawn_views_follow_random_resized_crop_and_depend_on_seed_and_epoch_only():
    sizes = np.array([[375, 500], [500, 375], [40, 300]] * 200)
    views = draw_views(sizes, epoch_uniforms(0, 3, len(sizes)))
    top, left, h, w, flip = views.T
    assert (top >= 0).all() and (left >= 0).all()
    assert (top + h <= sizes[:, 0]).all() and (left + w <= sizes[:, 1]).all()
    fitted = h * w >= SCALE[0] * sizes.prod(1) * 0.98
    assert fitted.mean() > 0.95 and set(flip) == {0, 1}
    aspect = w / h
    assert ((aspect > RATIO[0] * 0.9) & (aspect < RATIO[1] * 1.1)).mean() > 0.95
    assert np.array_equal(views, draw_views(sizes, epoch_uniforms(0, 3, len(sizes))))
    assert not np.array_equal(views, draw_views(sizes, epoch_uniforms(0, 4, len(sizes))))
    assert not np.array_equal(views, draw_views(sizes, epoch_uniforms(1, 3, len(sizes))))
    # A 40 x 300 strip rarely fits a try: its fallback is the central crop at the clamped ratio.
    none_fit = draw_views(np.array([[10, 1000]]), np.full((1, UNIFORMS), 0.99))[0]
    assert list(none_fit[:4]) == [0, (1000 - 13) // 2, 10, 13]


def test_device_path_crops_the_same_region_as_pil():
    image = smooth_image(90, 160, 80)
    view = [10, 50, 60, 80, 1]
    pil = apply_pil(image, view, 16)
    tensor = torch.from_numpy(np.array(image)).permute(2, 0, 1).contiguous()
    device = apply_batch([tensor, tensor[:, :50, :70].contiguous()], torch.tensor([view, [0, 0, 50, 70, 0]]), 16)
    assert device.shape == (2, 3, 16, 16)
    assert (device[0] - pil).abs().mean() < 0.05  # swapped axes or a lost flip would be off by ~1
    assert (device[1] - apply_pil(image.crop((0, 0, 70, 50)), [0, 0, 50, 70, 0], 16)).abs().mean() < 0.05


@pytest.mark.parametrize("decode", ["cpu", "gpu"])
def test_a_bank_entry_equals_a_live_teacher_forward_on_the_replayed_view(tmp_path, decode):
    root = make_jpeg_tree(tmp_path / "images")
    teacher_dir = tmp_path / "teacher"
    teacher_dir.mkdir()
    torch.manual_seed(0)
    torch.save(build_model("resnet18", 2, 16).state_dict(), teacher_dir / WEIGHTS_FILE)
    cfg = RunConfig.model_validate(
        {
            "data": {"name": "imagefolder", "root": str(root), "image_size": 16, "decode": decode},
            "teacher": {"arch": "resnet18", "bank_epochs": 2},
            "students": {"epochs": 1, "batch_size": 2},
            "teacher_dir": str(teacher_dir),
        }
    )
    out = str(tmp_path / "bank")
    world = 2  # two workers' shares, written as two Ray Train workers would
    assert sum(build_shards(cfg, rank, world, torch.device("cpu"), out) for rank in range(world)) == 8
    write_meta(out, cfg, world, {"test": True})
    bank = Bank(out)
    views0, _ = bank.epoch(0)
    views, logits = bank.epoch(3)  # cyclic: bank epoch 1
    assert torch.equal(views, bank.epoch(1)[0]) and not torch.equal(views, views0)
    assert (views[:, 2] > 0).all() and logits.dtype == torch.bfloat16 and logits.shape == (8, 2)

    teacher = load_teacher(str(teacher_dir), "resnet18", 2, 16)
    train, _, _ = build_datasets(cfg.data, 0, raw_bytes=decode == "gpu")
    train.replay(views)
    items = [train[i] for i in range(len(train))]
    if decode == "gpu":
        batch = ([x[0] for x in items], torch.tensor([x[1] for x in items]), torch.tensor([x[2] for x in items]))
        images, _, index = device_batch(batch, train, torch.device("cpu"), 16, views)
    else:
        images, index = torch.stack([x[0] for x in items]), torch.tensor([x[2] for x in items])
    with torch.no_grad():
        live = teacher(images)
    torch.testing.assert_close(logits[index].float(), live, atol=2e-2, rtol=2e-3)
    train.replay(None)  # live views again: other crops, other logits
    with torch.no_grad():
        other = teacher(torch.stack([train[i][0] for i in range(len(train))])) if decode == "cpu" else None
    if other is not None:
        assert (other - live).abs().max() > 1e-2


@pytest.mark.slow
def test_trials_reuse_one_bank_and_run_no_teacher_forward(ray_local, tmp_path, capsys):
    root = make_jpeg_tree(tmp_path / "images")
    torch.save(build_model("resnet18", 2, 16).state_dict(), tmp_path / "teacher.pt")  # no teacher to train
    spec = validate_spec(
        tiny_spec_dict(
            tmp_path,
            data={"name": "imagefolder", "root": str(root), "image_size": 16, "train_subset": None},
            teacher={"bank_epochs": 1, "checkpoint": str(tmp_path / "teacher.pt")},
            students={"epochs": 2, "batch_size": 4},
        )
    )
    run_cfg = prepare_teacher(spec)
    out = capsys.readouterr().out
    assert "building a soft-label bank of 1 epochs" in out
    assert "reused cyclically" in out and Bank(run_cfg.bank_dir).epochs == 1
    again = prepare_teacher(spec)  # what a second sweep of the same spec does first
    assert "teacher: bank cache hit" in capsys.readouterr().out and again.bank_dir == run_cfg.bank_dir

    result = build_trainer(spec, run_cfg, name="banked", storage_path=str(tmp_path / "single")).fit()
    m = result.metrics
    assert m["epoch"] == 2 and m["teacher_forwards"] == 0  # counted by a hook on the teacher
    assert m["resnet18/train_kd"] > 0 and "teacher/val_top1" in m
