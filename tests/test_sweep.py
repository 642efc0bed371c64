"""The sweep end to end: real Ray Tune, Optuna, ASHA and a temporary MLflow sqlite store."""

import os
import re
import subprocess
import sys
from pathlib import Path

import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator import sweep
from orchestrator.results import FROM_SWEEP_TAG
from orchestrator.search import from_sweep
from orchestrator.tracking import PARENT_TAG, TRIAL_TAG, is_constant, where_to_look
from tests.conftest import tiny_spec_dict

ROOT = Path(__file__).resolve().parents[1]
SEARCH = {
    "loss.threshold": {"type": "float", "low": 0.5, "high": 1.0},
    "loss.temperature": {"type": "float", "low": 1.0, "high": 4.0, "log": True},
}


def write_tiny_sweep(tmp_path, storage, **tune):
    raw = tiny_spec_dict(
        tmp_path,
        students={"epochs": 2},
        search=SEARCH,
        tune={"num_trials": 2, "max_concurrent_trials": 2, "grace_period": 1, **tune},
        mlflow={"experiment": "tiny-sweep"},
    )
    raw["storage"] = str(storage)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_sweep_end_to_end(ray_local, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default tracking URI is sqlite:///mlflow.db in the working folder
    spec_path = write_tiny_sweep(tmp_path, tmp_path / "runs")

    assert sweep.main([str(spec_path)]) == 0
    out = capsys.readouterr().out
    assert "mlflow ui" in out and "Ray dashboard" in out and "trials" in out

    folder = next((tmp_path / "runs" / "sweeps").glob("tiny-*"))
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")  # the default store, here
    experiment = client.get_experiment_by_name("tiny-sweep")
    runs = client.search_runs([experiment.experiment_id])
    parents = [r for r in runs if r.data.tags.get(TRIAL_TAG) == "parent"]
    children = [r for r in runs if r.data.tags.get(PARENT_TAG)]
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert parent.info.status == "FINISHED"
    assert all(c.data.tags[PARENT_TAG] == parent.info.run_id for c in children)
    for child in children:
        assert {"loss.threshold", "loss.temperature"} <= set(child.data.params)
        assert (
            child.data.params["students.epochs"] == "2" and child.data.params["data.name"] == "digits"
        )  # every setting
        for student in ("resnet18", "mobilenet_v2"):
            history = client.get_metric_history(child.info.run_id, f"{student}/val_top1")
            assert [m.step for m in history] == list(range(1, len(history) + 1)) and history
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"results.csv", "results.md", "spec.yaml", "best.yaml"} <= artifacts

    table = (folder / "results.csv").read_text()
    assert "loss.threshold" in table and "resnet18/val_top1" in table
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}")
    assert len(study.trials) == 2
    rows = pd.read_csv(folder / "results.csv", dtype={"trial_id": str})
    for trial in study.trials:  # the study's state and epochs are the table's: pruned where ASHA stopped it
        (row,) = rows[rows["loss.threshold"].sub(trial.params["loss.threshold"]).abs() < 1e-9].itertuples()
        expected = {"completed": optuna.trial.TrialState.COMPLETE, "pruned": optuna.trial.TrialState.PRUNED}
        assert trial.state == expected[row.state]
        assert sorted(trial.intermediate_values) == list(range(1, row.epochs + 1))
    pruned = rows.loc[rows["state"] == "pruned", "trial_id"]
    assert parent.data.tags["pruned_trials"] == (" ".join(pruned) or "none")
    assert {"loss.threshold", "loss.temperature"} == set(study.trials[0].params)

    # What a user sees in the MLflow UI: the runs table first, named runs, parent rows that compare.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert sorted(c.info.run_name.split()[0] for c in children) == ["t01", "t02"]
    assert all(re.fullmatch(r"t0\d tau=\S+ T=\S+", c.info.run_name) for c in children)
    for run in (parent, *children):
        assert [i.dataset.name for i in run.inputs.dataset_inputs] == ["digits"]
        assert not any(is_constant(k) for k in run.data.metrics)  # sizes and the teacher: params, not curves
    completed = [c for c in children if c.data.tags.get("state") == "completed"]
    assert completed and all(int(c.data.params["resnet18/params"]) > 1_000_000 for c in completed)
    best = next(c for c in children if c.data.tags[TRIAL_TAG] == parent.data.tags["best_trial"])
    assert parent.data.metrics["val_top1_mean"] == best.data.metrics["val_top1_mean"]
    assert parent.data.metrics["resnet18/val_top1"] == best.data.metrics["resnet18/val_top1"]
    assert parent.data.params["loss.threshold"] == best.data.params["loss.threshold"]

    # A comparison from the sweep: the best trial's recipe, the one setting it changes named; a dry run writes nothing.
    compare = tmp_path / "compare.yaml"
    compare.write_text(yaml.safe_dump(tiny_spec_dict(tmp_path, name="tiny-compare", compare={"seeds": [0]})))
    files = {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")}
    capsys.readouterr()
    assert sweep.main([str(compare), "--from-sweep", "tiny", "--dry-run"]) == 0
    plan = capsys.readouterr().out
    assert f"recipe: the best trial of sweep {folder.name} (" in plan
    assert "students.epochs: 2 in the search -> 1 here" in plan.splitlines()[2]
    assert {p: p.stat().st_mtime_ns for p in tmp_path.rglob("*")} == files
    spec, _ = from_sweep(yaml.safe_load(compare.read_text()), [], "tiny", f"sqlite:///{tmp_path / 'mlflow.db'}")
    recipe = yaml.safe_load((folder / "best.yaml").read_text())
    for section in ("data", "teacher", "students", "loss"):
        dumped = spec.resolved().model_dump()[section]
        assert {k: v for k, v in dumped.items() if k not in ("epochs", "method")} == {
            k: v for k, v in recipe[section].items() if k not in ("epochs", "method")
        }, section

    # The best configuration, trained as one run as a user would (a process of its own): tracked in the
    # same experiment, tagged with its sweep.
    single_run = subprocess.run(
        [sys.executable, "-m", "orchestrator.train", str(folder / "best.yaml")],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single_run.returncode == 0, single_run.stderr[-3000:]
    single = [
        r for r in client.search_runs([experiment.experiment_id]) if r.data.tags.get(FROM_SWEEP_TAG) == folder.name
    ]
    assert len(single) == 1 and single[0].info.status == "FINISHED"
    run = single[0]
    assert run.data.params["loss.threshold"] == best.data.params["loss.threshold"]
    assert int(run.data.params["mobilenet_v2/flops"]) > 0
    history = client.get_metric_history(run.info.run_id, "resnet18/val_top1")
    assert [m.step for m in history] == [1, 2]
    assert {"val_predictions.pt", "spec.yaml"} <= {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.parametrize("mistake", ["tune.num_trials=0", "search.loss.nope={type: float, low: 0, high: 1}"])
def test_dry_run_rejects_a_broken_spec(tmp_path, capsys, mistake):
    spec_path = write_tiny_sweep(tmp_path, tmp_path / "runs")
    with pytest.raises(Exception) as err:
        sweep.main([str(spec_path), "--dry-run", "--set", mistake])
    assert "\n" not in str(err.value) and mistake.split("=")[0].split(".")[-1] in str(err.value)


SPECS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "search_spaces").rglob("*.yaml"))


@pytest.mark.parametrize("spec_path", SPECS)
def test_dry_run_of_every_shipped_spec_exits_0(spec_path, tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "orchestrator.sweep", str(ROOT / spec_path), "--dry-run"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if k != "IMAGENET100_ROOT"},
    )
    assert proc.returncode == 0, proc.stderr
    assert "trials:" in proc.stdout and "Traceback" not in proc.stderr
    assert not (tmp_path / "runs").exists()  # a dry run starts nothing and writes nothing


def test_the_printed_mlflow_link_opens_the_runs_table():
    """MLflow 3.17's UI opens a fresh browser on its GenAI overview: the link names the runs table."""
    assert where_to_look("http://mlflow:5000/", "7") == (
        "http://mlflow:5000/#/experiments/7/runs?workflowType=machine_learning"
    )
    local = where_to_look("sqlite:////data/mlflow.db", "7")
    assert local.startswith("mlflow ui --backend-store-uri sqlite:////data/mlflow.db, then http://127.0.0.1:5000/")
    assert local.endswith("#/experiments/7/runs?workflowType=machine_learning")
