"""What a trial's MLflow run logs as params: every setting it trains with, so the runs table compares any of them.

Fast and without Ray running or an MLflow server: the trial callback writes into a journal (the slow
tests/test_sweep.py checks the same params on a real sweep's runs)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from orchestrator.spec import load_spec
from orchestrator.tracking import trial_tracker
from orchestrator.tracking.records import MAX_PARAM_LENGTH, settings_params
from orchestrator.tracking.runs import log_params

PEER = Path(__file__).resolve().parents[1] / "search_spaces" / "peer.yaml"


def test_settings_params_are_every_setting_with_the_trials_values():
    spec = load_spec(PEER).model_dump()
    params = settings_params(spec, {"loss.threshold": 0.42})
    assert params["loss.threshold"] == 0.42 and params["students.epochs"] == spec["students"]["epochs"]
    assert {"seed", "data.name", "teacher.arch", "students.archs", "tune.num_trials", "resources.num_workers"} <= set(
        params
    )
    assert not [k for k in params if k.startswith("search.")]  # a run holds its values, not the ranges
    assert not {"teacher_dir", "bank_dir", "failure_file"} & set(params)


def test_a_methods_forced_settings_are_logged_as_the_run_trains_them():
    spec = load_spec(PEER).model_dump()
    assert spec["loss"]["alpha"] != 0.0
    params = settings_params(spec, {"loss.method": "ce", "seed": 2})
    assert (params["loss.alpha"], params["loss.beta"], params["loss.weighting"], params["seed"]) == (
        0.0,
        0.0,
        "none",
        2,
    )


def test_a_trial_run_logs_every_setting_once(tmp_path):
    spec = load_spec(PEER).model_dump()
    sweep = SimpleNamespace(
        uri="sqlite:///unused.db",
        journal=SimpleNamespace(folder=tmp_path / "journal"),
        experiment_id="0",
        run_id="parent",
        sweep_id="peer-1",
        data={"name": "digits"},
        tags={},
        spec_dict=spec,
    )
    tracker = trial_tracker(sweep, epochs=6, storage_location=str(tmp_path))
    trial = SimpleNamespace(trial_id="t1", config={"loss.threshold": 0.5, "loss.temperature": 2.0})
    run_id = tracker.run_id(trial)
    params = tracker.journal.runs[run_id].params
    assert params["loss.threshold"] == "0.5" and params["loss.temperature"] == "2.0"
    assert params["students.epochs"] == str(spec["students"]["epochs"]) and params["data.name"] == "digits"
    assert (
        tracker.run_id(trial) == run_id and len(tracker.journal.children("parent")) == 1
    )  # found again, not re-logged


def test_a_long_value_is_cut_to_mlflows_limit(tmp_path):
    from orchestrator.tracking.journal import open_journal

    journal = open_journal(tmp_path, "sqlite:///unused.db")
    run_id = journal.create_run("0", "r", {})
    log_params(journal, run_id, {"mlflow.tags.note": "x" * (MAX_PARAM_LENGTH + 10)})
    assert len(journal.runs[run_id].params["mlflow.tags.note"]) == MAX_PARAM_LENGTH
