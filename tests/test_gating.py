"""The teacher's weight across `loss.threshold` (`orchestrator.teacher.gating`): the curve, the thresholds a spec
shows, the plan's lines, the plot, the parent run's artifacts and metrics, and the dry run. No Ray."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from mlflow import MlflowClient

from orchestrator.results import CSV_FILE, PLOT_FILE, log_gating_curve, plot_gating_curve
from orchestrator.spec import Spec
from orchestrator.teacher import (
    GRID,
    cached_plan_lines,
    gating_curve,
    plan_lines,
    search_range,
    shown_weighting,
    thresholds_to_show,
    train_logits_of,
)
from tests.conftest import tiny_spec_dict
from trainables import bank, storage
from trainables.losses import gated_fraction, teacher_certainty
from trainables.methods import WEIGHTINGS
from trainables.teacher_cache import META_FILE, SOFT_LABELS_FILE, WEIGHTS_FILE, teacher_dir

RANGE = {"loss.threshold": {"type": "float", "low": 0.3, "high": 0.9}}


def known_logits() -> torch.Tensor:
    """Four samples over 4 classes with u = 0 (one-hot-like), 0.5 (two classes) and 1 (uniform, twice)."""
    return torch.tensor([[100.0, 0, 0, 0], [100.0, 100, 0, 0], [0.0, 0, 0, 0], [1.0, 1, 1, 1]])


def spec_of(tmp_path, **sections) -> Spec:
    return Spec.model_validate(tiny_spec_dict(tmp_path, **sections))


# --------------------------------------------------------------------------- the curve


@pytest.mark.parametrize(
    "weighting,shares,means",
    [
        ("entropy+threshold", [0.75, 0.5, 0.0], [0.25, 0.375, 0.375]),  # w = 1 - u = 1, 0.5, 0, 0 where not gated
        ("threshold", [0.75, 0.5, 0.0], [0.25, 0.5, 1.0]),
        ("entropy", [0.0, 0.0, 0.0], [0.375, 0.375, 0.375]),  # does not gate
        ("none", [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]),
    ],
)
def test_curve_on_known_entropies(weighting, shares, means):
    curve = gating_curve(known_logits(), weighting, [0.25, 0.75, 1.0])
    assert list(curve.columns) == ["threshold", "share_gated", "mean_weight"]
    assert (curve.dtypes == "float64").all()
    assert curve["threshold"].tolist() == [0.25, 0.75, 1.0]
    assert curve["share_gated"].tolist() == shares
    assert curve["mean_weight"].tolist() == pytest.approx(means, abs=1e-6)


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_curve_is_what_the_loss_computes(weighting):
    logits = torch.randn(500, 10) * torch.linspace(0.1, 8, 500)[:, None]
    curve = gating_curve(logits, weighting, GRID[::7])
    gates = weighting in ("threshold", "entropy+threshold")
    for row in curve.itertuples(index=False):
        assert row.mean_weight == pytest.approx(teacher_certainty(logits, weighting, row.threshold).double().mean())
        assert row.share_gated == pytest.approx(gated_fraction(logits, row.threshold if gates else None).item())


def test_share_falls_and_mean_weight_rises_with_the_threshold():
    logits = torch.randn(400, 10) * torch.linspace(0.1, 6, 400)[:, None]
    curve = gating_curve(logits, "entropy+threshold", GRID)
    assert len(curve) == len(GRID) == 100 and curve["threshold"].iloc[-1] == 1.0
    assert (curve["share_gated"].diff().dropna() <= 0).all()
    assert (curve["mean_weight"].diff().dropna() >= 0).all()
    assert curve["share_gated"].iloc[0] > 0.9 and curve["share_gated"].iloc[-1] == 0.0


# --------------------------------------------------------------------------- what a spec shows


def test_thresholds_of_a_float_range_its_ends_and_middle(tmp_path):
    spec = spec_of(tmp_path, search={"loss.threshold": {"type": "float", "low": 0.2, "high": 0.8}})
    assert thresholds_to_show(spec) == pytest.approx({"low": 0.2, "mid": 0.5, "high": 0.8})
    assert search_range(spec) == (0.2, 0.8)


def test_thresholds_of_a_log_range_use_the_geometric_middle(tmp_path):
    spec = spec_of(tmp_path, search={"loss.threshold": {"type": "float", "low": 0.1, "high": 0.9, "log": True}})
    assert thresholds_to_show(spec) == pytest.approx({"low": 0.1, "mid": 0.3, "high": 0.9})


def test_thresholds_of_a_categorical_skip_null_and_invalid_choices(tmp_path):
    spec = spec_of(tmp_path, search={"loss.threshold": {"type": "categorical", "choices": [0.3, None, 0.9, 0]}})
    assert thresholds_to_show(spec) == {"0.3": 0.3, "0.9": 0.9}
    assert search_range(spec) == (0.3, 0.9)


def test_thresholds_of_an_unsearched_spec(tmp_path):
    fixed = spec_of(tmp_path, loss={"threshold": 0.8}, search={"loss.alpha": {"type": "float", "low": 0.1, "high": 1}})
    assert thresholds_to_show(fixed) == {"threshold": 0.8} and search_range(fixed) is None
    assert thresholds_to_show(spec_of(tmp_path)) == {}
    assert plan_lines(spec_of(tmp_path), known_logits()) == []


def test_the_weighting_shown(tmp_path):
    assert shown_weighting(spec_of(tmp_path, loss={"weighting": "threshold"})) == "threshold"
    assert shown_weighting(spec_of(tmp_path, loss={"method": "kd", "weighting": "threshold"})) == "none"  # forced
    searched = {"loss.weighting": {"type": "categorical", "choices": ["entropy", "threshold"]}}
    assert shown_weighting(spec_of(tmp_path, search=searched)) == "threshold"  # the spec's own (entropy) does not gate
    searched["loss.weighting"]["choices"] = ["entropy", "none"]
    assert shown_weighting(spec_of(tmp_path, search=searched)) == "entropy+threshold"
    gating = spec_of(tmp_path, loss={"weighting": "entropy+threshold"}, search=searched)
    assert shown_weighting(gating) == "entropy+threshold"


# --------------------------------------------------------------------------- the plan, the plot, the parent run


def test_plan_lines(tmp_path):
    spec = spec_of(tmp_path, loss={"weighting": "entropy+threshold"}, search=RANGE)
    assert plan_lines(spec, known_logits()) == [
        "teacher weight w by loss.threshold on its 4 training samples, weighting entropy+threshold:",
        "teacher weight at loss.threshold 0.300 (low): 75.0 % of training samples gated out, mean w 0.250",
        "teacher weight at loss.threshold 0.600 (mid): 50.0 % of training samples gated out, mean w 0.375",
        "teacher weight at loss.threshold 0.900 (high): 50.0 % of training samples gated out, mean w 0.375",
    ]
    fixed = spec_of(tmp_path, loss={"threshold": 0.6}, search={"loss.alpha": {"type": "float", "low": 0.1, "high": 1}})
    entropy = plan_lines(fixed, known_logits())
    assert entropy[0].endswith("weighting entropy (it does not gate: the threshold changes nothing):")
    assert entropy[1] == "teacher weight at loss.threshold 0.600: 0.0 % of training samples gated out, mean w 0.375"


def test_the_plot_is_a_png(tmp_path):
    curve = gating_curve(known_logits(), "entropy+threshold", GRID)
    path = plot_gating_curve(curve, (0.3, 0.9), tmp_path / PLOT_FILE)
    assert path == tmp_path / PLOT_FILE and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert plot_gating_curve(curve, None, tmp_path / "none.png").stat().st_size > 0


def test_log_gating_curve_on_a_real_mlflow_store(tmp_path):
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path}/m.db")
    experiment = client.create_experiment("gating", artifact_location=(tmp_path / "artifacts").as_uri())
    run_id = client.create_run(experiment).info.run_id
    spec = spec_of(tmp_path, loss={"weighting": "entropy+threshold"}, search=RANGE)

    metrics = log_gating_curve(client, run_id, spec, known_logits(), tmp_path / "out")

    logged = client.get_run(run_id).data.metrics
    assert logged == metrics and logged == pytest.approx(
        {
            "teacher_gate/share_gated_at_low": 0.75,
            "teacher_gate/mean_w_at_low": 0.25,
            "teacher_gate/share_gated_at_mid": 0.5,
            "teacher_gate/mean_w_at_mid": 0.375,
            "teacher_gate/share_gated_at_high": 0.5,
            "teacher_gate/mean_w_at_high": 0.375,
        },
        abs=1e-6,
    )
    assert {a.path for a in client.list_artifacts(run_id)} == {PLOT_FILE, CSV_FILE}
    csv = Path(client.download_artifacts(run_id, CSV_FILE, str(tmp_path / "back")))
    assert csv.read_text().splitlines()[0] == "threshold,share_gated,mean_weight"
    assert len(csv.read_text().splitlines()) == 1 + len(GRID)

    fixed = spec_of(
        tmp_path,
        loss={"weighting": "threshold", "threshold": 0.6},
        search={"loss.alpha": {"type": "float", "low": 0.1, "high": 1}},
    )
    second = client.create_run(experiment).info.run_id
    assert set(log_gating_curve(client, second, fixed, known_logits(), tmp_path / "out2")) == {
        "teacher_gate/share_gated_at_threshold",
        "teacher_gate/mean_w_at_threshold",
    }
    nothing = client.create_run(experiment).info.run_id
    assert log_gating_curve(client, nothing, spec_of(tmp_path), known_logits(), tmp_path / "out3") == {}
    assert client.list_artifacts(nothing) == [] and client.get_run(nothing).data.metrics == {}


# --------------------------------------------------------------------------- the cached teacher's logits


def test_train_logits_of_soft_labels_or_nothing(tmp_path):
    torch.save(known_logits().half(), tmp_path / SOFT_LABELS_FILE)
    logits = train_logits_of(str(tmp_path))
    assert logits.dtype == torch.float32 and torch.equal(logits, known_logits())
    (tmp_path / "empty").mkdir()
    assert train_logits_of(str(tmp_path / "empty")) is None


def write_bank(folder: Path, logits: torch.Tensor, world: int = 2) -> None:
    """A built bank (meta file and epoch 0's shards, as `build_shards` writes them) of bf16 logits."""
    folder.mkdir(parents=True)
    n, classes = logits.shape
    for rank in range(world):
        index = torch.arange(rank, n, world)
        shard = {
            "index": index,
            "views": torch.zeros(len(index), 5, dtype=torch.int32),
            "logits": logits[index].to(bank.LOGITS_DTYPE),
        }
        torch.save(shard, folder / bank.shard_name(0, rank, world))
    (folder / bank.META_FILE).write_text(json.dumps({"epochs": 3, "world": world, "images": n, "num_classes": classes}))


def test_train_logits_of_a_bank_when_there_are_no_soft_labels(tmp_path):
    outputs = known_logits()[[0, 1, 3]]  # bf16 holds these exactly
    skipped = torch.zeros(1, 4)  # an unreadable image the bank skipped: no teacher output, all 0
    write_bank(tmp_path / "banks" / "abc123", torch.cat([outputs[:2], skipped, outputs[2:]]))
    logits = train_logits_of(str(tmp_path))
    assert logits.dtype == torch.float32 and torch.equal(logits, outputs)


def test_train_logits_of_a_bucket_download_only_what_they_read(tmp_path, monkeypatch):
    """A file:// URI takes the bucket path (pyarrow's filesystem): no copy of the teacher folder is kept."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    write_bank(tmp_path / "teacher" / "banks" / "abc123", known_logits()[[0, 1, 3]])
    assert torch.equal(train_logits_of((tmp_path / "teacher").as_uri()), known_logits()[[0, 1, 3]])
    torch.save(known_logits(), tmp_path / "teacher" / SOFT_LABELS_FILE)
    assert torch.equal(train_logits_of((tmp_path / "teacher").as_uri()), known_logits())
    assert not (tmp_path / "cache").exists()


def test_cached_plan_lines_without_a_cached_teacher_or_with_a_corrupt_one(tmp_path):
    spec = spec_of(tmp_path, loss={"weighting": "entropy+threshold"}, search=RANGE).resolved()
    assert cached_plan_lines(spec) == [
        "teacher weight by loss.threshold: shown here once the teacher is trained (not cached yet)"
    ]
    folder = fake_teacher(spec, b"not a tensor file")
    [line] = cached_plan_lines(spec)
    assert line.startswith(f"teacher weight by loss.threshold: cannot read the cached teacher at {folder}: ")
    (Path(folder) / SOFT_LABELS_FILE).unlink()
    assert cached_plan_lines(spec) == [
        "teacher weight by loss.threshold: the cached teacher has no training-set "
        "logits (teacher.cache_soft_labels is off)"
    ]


def fake_teacher(spec: Spec, soft_labels: torch.Tensor | bytes) -> str:
    """A teacher cache entry as `is_cached` sees it (weights and meta file), with the given soft labels."""
    folder = Path(teacher_dir(storage.join(spec.storage_location, "teachers"), spec))
    folder.mkdir(parents=True)
    torch.save({}, folder / WEIGHTS_FILE)
    (folder / META_FILE).write_text(json.dumps({"arch": spec.teacher.arch, "num_classes": 4}))
    if isinstance(soft_labels, bytes):
        (folder / SOFT_LABELS_FILE).write_bytes(soft_labels)
    else:
        torch.save(soft_labels, folder / SOFT_LABELS_FILE)
    return str(folder)


def test_dry_run_prints_the_teacher_weight_of_a_cached_teacher(tmp_path):
    raw = tiny_spec_dict(
        tmp_path,
        loss={"weighting": "entropy+threshold"},
        search={"loss.threshold": {"type": "float", "low": 0.2, "high": 0.8}},
    )
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump(raw))
    fake_teacher(Spec.model_validate(raw).resolved(), known_logits())
    before = sorted(tmp_path.rglob("*"))

    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(spec_path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
    )

    assert proc.returncode == 0, proc.stderr
    assert "  teacher weight w by loss.threshold on its 4 training samples, weighting entropy+threshold:" in proc.stdout
    assert (
        "  teacher weight at loss.threshold 0.200 (low): 75.0 % of training samples gated out, mean w 0.250"
        in proc.stdout
    )
    assert "loss.threshold 0.500 (mid)" in proc.stdout and "loss.threshold 0.800 (high)" in proc.stdout
    assert sorted(tmp_path.rglob("*")) == before  # a dry run creates nothing
