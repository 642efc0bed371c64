"""A comparison end to end at tiny scale (two methods x two seeds, one epoch), then its report rebuilt
from MLflow alone."""

import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import report, sweep
from orchestrator.tracking import PARENT_TAG, TRIAL_TAG
from tests.conftest import tiny_spec_dict


@pytest.mark.slow  # a whole comparison (4 trials): about 95 s
def test_comparison_then_report_from_mlflow(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    raw = tiny_spec_dict(
        tmp_path,
        name="tiny-compare",
        compare={"methods": ["kd", "ua_dual"], "seeds": [0, 1]},
        tune={"max_concurrent_trials": 2},
        mlflow={"experiment": "tiny-compare"},
        loss={"threshold": 0.8},
        teacher={"data": {"rare_classes": [3], "rare_keep": 0.1}},  # a teacher with a blind spot
    )
    spec_path = tmp_path / "compare.yaml"
    spec_path.write_text(yaml.safe_dump(raw))

    assert sweep.main([str(spec_path)]) == 0
    # the caller's Ray stays connected, with its resources: the sweep only disconnects a Ray it started itself
    assert ray_local.is_initialized() and ray_local.cluster_resources().get("TRAIN_DRIVER", 0) >= 1
    folder = next((tmp_path / "runs" / "sweeps").glob("tiny-compare-*"))
    table = pd.read_csv(folder / "comparison.csv")
    assert list(zip(table["method"], table["student"])) == [
        ("kd", "resnet18"),
        ("kd", "mobilenet_v2"),
        ("ua_dual", "resnet18"),
        ("ua_dual", "mobilenet_v2"),
    ]
    assert (table["seeds"] == 2).all() and table["top1_mean_%"].between(0, 100).all()
    assert table.loc[table["method"] == "kd", "vs_kd_mean_%"].isna().all()
    assert (table.loc[table["method"] == "ua_dual", "vs_kd_pairs"] == 2).all()
    assert table["compression_1000"].round(2).tolist()[:1] == [1.0]  # a resnet18 teacher: same size
    assert "paper_top1_%_quoted" in table.columns and "±" in (folder / "comparison.md").read_text()

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")  # the default store, here
    runs = client.search_runs([client.get_experiment_by_name("tiny-compare").experiment_id])
    parent = next(r for r in runs if r.data.tags.get(TRIAL_TAG) == "parent")
    children = [r for r in runs if r.data.tags.get(PARENT_TAG) == parent.info.run_id]
    assert len(children) == 4
    assert sorted((c.data.params["loss.method"], c.data.params["seed"]) for c in children) == [
        ("kd", "0"),
        ("kd", "1"),
        ("ua_dual", "0"),
        ("ua_dual", "1"),
    ]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert {
        "report/comparison.csv",
        "report/comparison.md",
        "report/comparison.tex",
        "report/accuracy_by_certainty.png",
        "report/teacher_entropy.png",
    } <= logged
    assert {a.path for a in client.list_artifacts(children[0].info.run_id)} >= {"val_predictions.pt"}
    assert sorted(c.info.run_name for c in children) == ["kd seed 0", "kd seed 1", "ua_dual seed 0", "ua_dual seed 1"]
    for method in ("kd", "ua_dual"):  # the parent row carries each method's mean, comparable across comparisons
        runs = [c for c in children if c.data.params["loss.method"] == method]
        mean = sum(c.data.metrics["resnet18/val_top1"] for c in runs) / len(runs)
        assert abs(parent.data.metrics[f"{method}/resnet18/val_top1"] - mean) < 1e-9
    ua = table.set_index(["method", "student"]).loc[("ua_dual", "resnet18")]
    for end in ("mean", "ci_low", "ci_high"):  # the paired differences, as in the table (none: no interval)
        logged = parent.data.metrics.get(f"ua_dual/resnet18/vs_kd_{end}")
        assert logged is None if pd.isna(ua[f"vs_kd_{end}_%"]) else abs(logged - ua[f"vs_kd_{end}_%"] / 100) < 1e-9
    assert parent.data.metrics["paired_interval_level"] == 0.95 and set(table["interval_kind"]) == {"t"}
    assert 0 <= parent.data.metrics["teacher_u/train_p10"] <= parent.data.metrics["teacher_u/train_p90"] <= 1
    assert 0 <= parent.data.metrics["teacher_u/train_share_above_threshold"] <= 1  # the spec sets one
    assert "teacher/val_top1" in children[0].data.params and "teacher/val_top1" not in children[0].data.metrics
    # the teacher's validation figures from the trials' saved teacher logits: its top-1 is the one it trained to
    assert parent.data.metrics["teacher_u/val_top1"] == pytest.approx(
        float(children[0].data.params["teacher/val_top1"])
    )
    assert 0 <= parent.data.metrics["teacher_u/val_error_auroc"] <= 1
    assert {"teacher_u/val_blind_top1", "teacher_u/val_elsewhere_top1"} <= set(parent.data.metrics)
    bins = pd.read_csv(folder / "accuracy_by_certainty.csv")
    assert {"classes 3", "other classes"} <= set(bins["bin"])
    assert (
        bins.loc[bins["bin"] == "classes 3", "samples"].iloc[0]
        + bins.loc[bins["bin"] == "other classes", "samples"].iloc[0]
        == bins.loc[bins["bin"].str.isdigit(), "samples"].sum() / 4
    )  # 4 rows per bin: 2 methods x 2 students
    assert (folder / "accuracy_by_certainty.md").read_text().startswith("The teacher on the validation set: top-1: ")

    capsys.readouterr()
    out = tmp_path / "rebuilt"
    assert report.main([folder.name, "--out", str(out)]) == 0
    assert "ua_dual" in capsys.readouterr().out
    pd.testing.assert_frame_equal(pd.read_csv(out / "comparison.csv"), table)
