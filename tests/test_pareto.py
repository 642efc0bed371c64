"""A Pareto search: its spec keys, what the searcher tells Optuna, the front and its files (no Ray),
and one tiny multi-objective sweep through Ray Tune."""

import itertools

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from orchestrator.execution import SweepFolder
from orchestrator.results import dominates, pareto_front, trials_table, write_results
from orchestrator.search import SweepSearch
from orchestrator.spec import SpecError, load_spec, validate_spec
from orchestrator.tracking import TRIAL_TAG
from tests.conftest import tiny_spec_dict
from tests.servers import run_sweep_process

OBJECTIVES = {"metric": ["resnet18/val_top1", "mobilenet_v2/val_top1"], "mode": ["max", "max"]}
SEARCH = {"loss.alpha": {"type": "float", "low": 0.1, "high": 0.9}}


def pareto_spec(**tune):
    return validate_spec(
        {"name": "p", "students": {"epochs": 4}, "search": SEARCH, "tune": {**OBJECTIVES, "scheduler": "fifo", **tune}}
    )


def trial(trial_id, r18, mnv2, epoch=4, alpha=0.5, error=None):
    return {
        "trial_id": trial_id,
        "params": {"loss.alpha": alpha},
        "error": error,
        "metrics": {
            "epoch": epoch,
            "resnet18/val_top1": r18,
            "mobilenet_v2/val_top1": mnv2,
            "val_top1_mean": (r18 + mnv2) / 2,
        },
    }


@pytest.mark.parametrize(
    "tune, message",
    [
        ({"mode": "max"}, "one mode (max or min) per metric"),
        ({"mode": ["max"]}, "one mode (max or min) per metric"),
        ({"metric": ["val_top1_mean", "val_top1_mean"], "mode": ["max", "max"]}, "list each metric once"),
        ({"scheduler": "asha"}, "set tune.scheduler_metric"),
    ],
)
def test_objectives_that_do_not_fit_are_one_line_naming_the_fix(tune, message):
    with pytest.raises(SpecError) as err:
        pareto_spec(**tune)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_asha_in_a_pareto_search_follows_the_scheduler_metric_with_its_mode():
    t = pareto_spec(scheduler="asha", scheduler_metric="mobilenet_v2/val_top1").tune
    assert t.pareto and t.rank_metric == ("mobilenet_v2/val_top1", "max")
    t = pareto_spec(scheduler="asha", scheduler_metric="val_top1_mean", scheduler_mode="max").tune
    assert t.rank_metric == ("val_top1_mean", "max")
    assert validate_spec({"name": "s", "search": SEARCH}).tune.objectives == [("val_top1_mean", "max")]
    with pytest.raises(SpecError, match="a comparison does not search"):
        validate_spec({"name": "c", "compare": {"seeds": [0]}, "tune": {**OBJECTIVES, "scheduler": "fifo"}})


def test_the_front_holds_no_dominated_row_and_dominates_every_other_completed_one():
    rng = np.random.default_rng(3)
    trials = [trial(f"t{i}", *rng.uniform(0.5, 1.0, size=2)) for i in range(40)]
    trials += [trial("pruned", 1.0, 1.0, epoch=2), trial("failed", 1.0, 1.0, error="RuntimeError: x")]
    spec = pareto_spec()
    df = trials_table(trials, spec)
    front = pareto_front(df, spec)
    points = {
        row.trial_id: np.array([row[1], row[2]])
        for row in df[["trial_id", "resnet18/val_top1", "mobilenet_v2/val_top1"]].itertuples(index=False)
    }
    inside = set(front["trial_id"])
    assert len(inside) >= 2 and not inside & {"pruned", "failed"}  # their figures are no final ones
    for a, b in itertools.permutations(inside, 2):
        assert not dominates(points[a], points[b])
    for other in set(df["trial_id"]) - inside - {"pruned", "failed"}:
        assert any(dominates(points[f], points[other]) for f in inside), other


def test_a_min_objective_is_minimised():
    spec = pareto_spec(metric=["resnet18/val_top1", "val_top1_mean"], mode=["max", "min"])
    df = trials_table([trial("a", 0.9, 0.9), trial("b", 0.8, 0.6), trial("c", 0.7, 0.8)], spec)
    assert set(pareto_front(df, spec)["trial_id"]) == {"a", "b"}  # c: lower top-1 and a higher mean than b


def test_the_front_files_load_back_as_the_trials_values(tmp_path):
    spec = pareto_spec()
    trials = [trial("x1", 0.9, 0.5, alpha=0.2), trial("x2", 0.5, 0.9, alpha=0.8), trial("x3", 0.4, 0.4, alpha=0.5)]
    written = write_results(trials_table(trials, spec), spec, tmp_path, "p-1", names={"x1": "t01", "x2": "t02"})
    assert "best.yaml" not in written
    assert {"pareto.csv", "pareto.md", "pareto.png", "pareto/t01.yaml", "pareto/t02.yaml"} <= set(written)
    table = pd.read_csv(written["pareto.csv"])
    assert sorted(table["trial"]) == ["t01", "t02"] and {"resnet18/val_top1", "loss.alpha"} <= set(table.columns)
    assert written["pareto.png"].read_bytes().startswith(b"\x89PNG")
    loaded = load_spec(written["pareto/t02.yaml"])
    assert loaded.loss.alpha == 0.8 and loaded.search == {} and loaded.name == "p-t02"
    header = written["pareto/t02.yaml"].read_text().splitlines()[0]
    assert "trial x2" in header and "mobilenet_v2/val_top1 = 0.9000" in header


def test_the_searcher_tells_every_objective_and_prunes_a_stopped_trial(tmp_path):
    folder = SweepFolder(str(tmp_path), "p")
    folder.local.mkdir()
    search = SweepSearch(
        folder,
        4,
        space={"loss.alpha": optuna.distributions.FloatDistribution(0.1, 0.9)},
        metric=OBJECTIVES["metric"],
        mode=OBJECTIVES["mode"],
        seed=0,
    )
    for trial_id, epoch in (("done", 4), ("stopped", 2)):
        search.suggest(trial_id)
        result = {"epoch": epoch, "resnet18/val_top1": 0.7, "mobilenet_v2/val_top1": 0.6}
        search.on_trial_result(trial_id, result)
        search.on_trial_complete(trial_id, result)
    study = optuna.load_study(study_name="p", storage=f"sqlite:///{folder.local / 'optuna.db'}")
    assert len(study.directions) == 2
    assert [(t.state.name, t.values) for t in study.trials] == [("COMPLETE", [0.7, 0.6]), ("PRUNED", None)]


@pytest.mark.slow
def test_a_tiny_pareto_sweep_writes_its_front_and_tags_the_parent(tmp_path):
    raw = tiny_spec_dict(
        tmp_path,
        name="tiny-pareto",
        loss={"method": "dml"},  # no teacher to train
        search={"loss.beta": {"type": "float", "low": 0.0, "high": 2.0}},
        tune={**OBJECTIVES, "scheduler": "fifo", "num_trials": 3, "max_concurrent_trials": 2},
        mlflow={"tracking_uri": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    path = tmp_path / "pareto.yaml"
    path.write_text(yaml.safe_dump(raw))
    (tmp_path / "job").mkdir()
    out = run_sweep_process(path, tmp_path / "job", replace_cwd=True)  # as a Ray job's folder, unpacked again
    assert "multi-objective TPE" in out and "Pareto front (resnet18/val_top1, mobilenet_v2/val_top1): t0" in out
    folder = next((tmp_path / "runs" / "sweeps").glob("tiny-pareto-*"))
    study = optuna.load_study(study_name=folder.name, storage=f"sqlite:///{folder / 'optuna.db'}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"] * 3 and all(len(t.values) == 2 for t in study.trials)
    front = pd.read_csv(folder / "pareto.csv")
    assert {f"{name}.yaml" for name in front["trial"]} == {p.name for p in (folder / "pareto").iterdir()}
    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (parent,) = client.search_runs(
        [client.get_experiment_by_name("tiny-pareto").experiment_id], f"tags.`{TRIAL_TAG}` = 'parent'"
    )
    assert parent.data.tags["pareto_front"] == " ".join(front["trial"])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto.csv", "pareto.png", "pareto"} <= artifacts


def failed(trial_id):
    return {
        "trial_id": trial_id,
        "params": {"loss.alpha": 0.5},
        "error": "loss diverged in epoch 1, step 3",
        "metrics": {},
    }


def test_a_front_of_no_completed_trial_is_empty_and_its_files_are_written(tmp_path):
    """Every trial failed (or none completed): the front is empty, not a column selection that loses trial_id."""
    spec = pareto_spec()
    df = trials_table([failed("a"), failed("b"), trial("c", 0.5, 0.4, epoch=2)], spec)
    front = pareto_front(df, spec)
    assert front.empty and list(front.columns) == list(df.columns)
    files = write_results(df, spec, tmp_path, "p", names={"a": "t01", "b": "t02", "c": "t03"})
    assert pd.read_csv(files["pareto.csv"]).empty and not list((tmp_path / "pareto").iterdir())


def test_the_all_failed_line_counts_each_cause():
    from orchestrator.results import all_failed_line

    assert all_failed_line(["x", "y", "x"]) == "every trial failed (3 of 3): 2 x x | 1 x y"
    assert all_failed_line(["x", None]) is None and all_failed_line([]) is None
