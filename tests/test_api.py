"""The Python API without Ray: `open_sweep` on sweep folders written by the code a sweep writes them with (its
tables by `write_results`, its spec as the driver dumps it, its MLflow journal by `Journal`), `orchestrator.run`
found lazily, and each user mistake as one `SpecError` line that names the fix."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

import orchestrator
from orchestrator.results import trials_table, write_results
from orchestrator.search import find_sweep, open_sweep
from orchestrator.spec import SpecError, validate_spec
from orchestrator.tracking import SWEEP_TAG, TRIAL_TAG, Journal
from tests.conftest import tiny_spec_dict

REPO = Path(__file__).resolve().parents[1]
SEARCH = {"loss.threshold": {"type": "float", "low": 0.5, "high": 1.0}}
URI = "sqlite:///mlflow.db"


def trial(trial_id, r18, mnv2, threshold):
    metrics = {"epoch": 1, "resnet18/val_top1": r18, "mobilenet_v2/val_top1": mnv2, "val_top1_mean": (r18 + mnv2) / 2}
    return {"trial_id": trial_id, "params": {"loss.threshold": threshold}, "error": None, "metrics": metrics}


TRIALS = [trial("7af62948", 0.325, 0.1, 0.8014), trial("ff6ff0d6", 0.25, 0.15, 0.7744)]


def finished_sweep(storage: Path, name: str, server_id: str | None = "4785637f896040c58a6faec87593a2e4", **tune):
    """STORAGE/sweeps/NAME as a finished search leaves it: spec.yaml, results.csv/.md, best.yaml or the front's
    files, the plots, and the MLflow journal with the parent run (taken by the server as `server_id`, or not yet)."""
    spec = validate_spec(tiny_spec_dict(storage, name="smoke", search=SEARCH, tune=tune))
    folder = storage / "sweeps" / name
    folder.mkdir(parents=True)
    (folder / "spec.yaml").write_text(yaml.safe_dump(spec.model_dump(), sort_keys=False))
    write_results(trials_table(TRIALS, spec), spec, folder, name, names={"7af62948": "t01", "ff6ff0d6": "t02"})
    journal = Journal(folder / "mlflow-journal", URI)
    key = journal.create_run("1", name, {SWEEP_TAG: name, TRIAL_TAG: "parent"})
    journal.create_run("1", "t01 7af62948", {SWEEP_TAG: name, TRIAL_TAG: "7af62948"})
    if server_id:
        journal.files.save_ids({key: server_id})
    return folder


def test_open_sweep_by_folder_reads_the_table_the_best_spec_and_the_parent_run(tmp_path):
    folder = finished_sweep(tmp_path / "runs", "smoke-20250601-093000")
    result = open_sweep(folder)
    assert result.name == "smoke-20250601-093000" and result.folder == folder and result.finished
    assert list(result.table["trial_id"]) == ["7af62948", "ff6ff0d6"]
    assert result.table.loc[0, "val_top1_mean"] == pytest.approx(0.2125)
    assert result.best["loss"]["threshold"] == pytest.approx(0.8014) and result.best["search"] == {}
    assert result.best_file == folder / "best.yaml"
    assert result.pareto is None and result.comparison is None and result.exit_code is None
    assert result.spec["name"] == "smoke" and result.tracking_uri == URI
    assert result.parent_run_id == "4785637f896040c58a6faec87593a2e4"


def test_a_parent_run_the_server_has_not_taken_has_no_id_yet(tmp_path):
    assert open_sweep(finished_sweep(tmp_path, "smoke-20250601-093000", server_id=None)).parent_run_id is None


def test_open_sweep_by_name_finds_that_folder_or_the_newest_of_a_spec(tmp_path, monkeypatch):
    for name in ("smoke-20250601-093000", "smoke-20250602-080000", "smoke-20250602-080000-2"):
        finished_sweep(tmp_path / "store", name)
    assert open_sweep("smoke-20250601-093000", storage=str(tmp_path / "store")).name == "smoke-20250601-093000"
    assert open_sweep("smoke", storage=str(tmp_path / "store")).name == "smoke-20250602-080000-2"
    monkeypatch.chdir(tmp_path)  # without storage=: ./runs, as a spec with no storage setting
    finished_sweep(tmp_path / "runs", "smoke-20250603-120000")
    assert open_sweep("smoke").folder == tmp_path / "runs" / "sweeps" / "smoke-20250603-120000"
    monkeypatch.setenv("DUALKD_STORAGE", str(tmp_path / "store"))
    assert find_sweep("smoke").name == "smoke-20250602-080000-2"


def test_a_pareto_search_gives_its_front_and_a_spec_per_front_trial(tmp_path):
    objectives = {"metric": ["resnet18/val_top1", "mobilenet_v2/val_top1"], "mode": ["max", "max"]}
    result = open_sweep(finished_sweep(tmp_path, "smoke-20250601-093000", **objectives, scheduler="fifo"))
    assert result.best is None and sorted(result.pareto["trial"]) == ["t01", "t02"]
    assert set(result.pareto_files) == {"t01", "t02"}
    assert yaml.safe_load(result.pareto_files["t02"].read_text())["loss"]["threshold"] == pytest.approx(0.7744)


def test_a_comparison_gives_its_table(tmp_path):
    folder = finished_sweep(tmp_path, "smoke-20250601-093000")
    (folder / "comparison.csv").write_text("method,resnet18/val_top1\nua_dual,0.3\nkd,0.25\n")
    assert list(open_sweep(folder).comparison["method"]) == ["ua_dual", "kd"]


def one_line_error(call) -> str:
    with pytest.raises(SpecError) as caught:
        call()
    message = str(caught.value)
    assert message and "\n" not in message
    return message


@pytest.mark.parametrize(
    "overrides, fix",
    [
        (["students.epochs"], "write it as key=value"),
        (["students.epochz=3"], "--set students.epochz=3"),
        ("students.epochs=3", "give a list of key=value strings"),
    ],
)
def test_a_bad_override_is_one_line_naming_the_fix_before_ray_starts(overrides, fix):
    assert fix in one_line_error(lambda: orchestrator.run(REPO / "search_spaces" / "smoke.yaml", overrides))
    assert "ray" not in sys.modules or not sys.modules["ray"].is_initialized()


def test_a_missing_spec_file_is_one_line_naming_the_fix(tmp_path):
    assert "give the path of a YAML spec" in one_line_error(lambda: orchestrator.run(tmp_path / "nope.yaml"))


def test_a_folder_that_is_no_sweep_is_one_line_naming_the_fix(tmp_path):
    (tmp_path / "notes").mkdir()
    assert "holds no spec.yaml" in one_line_error(lambda: open_sweep(tmp_path / "notes"))
    assert "is not there" in one_line_error(lambda: open_sweep(tmp_path / "runs" / "sweeps" / "smoke-1"))
    message = one_line_error(lambda: open_sweep("smoke", storage=str(tmp_path)))
    assert "no sweep named 'smoke'" in message and "storage=" in message


def test_orchestrator_offers_the_api_lazily_and_opening_a_sweep_loads_no_ray_mlflow_or_torch(tmp_path):
    finished_sweep(tmp_path / "runs", "smoke-20250601-093000")
    code = """
import json, sys
import orchestrator
loaded = [m for m in ("ray", "mlflow", "torch", "pandas") if m in sys.modules]
result = orchestrator.open_sweep("smoke")
print(json.dumps({"at_import": loaded, "after": [m for m in ("ray", "mlflow", "torch") if m in sys.modules],
                  "rows": len(result.table), "dir": "run" in dir(orchestrator)}))
"""
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"at_import": [], "after": [], "rows": 2, "dir": True}
    assert orchestrator.run is orchestrator.search.run and orchestrator.SweepResult is orchestrator.search.SweepResult
    with pytest.raises(AttributeError, match="no attribute 'nothing'"):
        orchestrator.nothing  # noqa: B018
