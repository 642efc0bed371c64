"""What `--resume` says of a spec edited since the sweep started, and which edits it takes."""

import pytest
import yaml

from orchestrator import sweep
from orchestrator.execution import SPEC_FILE, new_sweep_folder
from orchestrator.spec import SpecError, load_spec, resume_lines, spec_changes, validate_spec, with_values
from tests.conftest import tiny_spec_dict


def test_every_changed_setting_is_named_and_the_run_size_ones_are_taken(tmp_path):

    saved = validate_spec(tiny_spec_dict(tmp_path, search={"loss.alpha": {"type": "float", "low": 0.2, "high": 0.8}}))
    now = with_values(saved, {"tune.num_trials": 12, "tune.budget_hours": 2.0, "resources.num_workers": 2})
    changes = spec_changes(saved.model_dump(), now.model_dump())
    assert [c.line() for c in changes] == [
        "resources.num_workers: 1 -> 2",
        "tune.num_trials: 8 -> 12",
        "tune.budget_hours: None -> 2.0",
    ]
    assert all(c.taken for c in changes)
    assert resume_lines(changes, force=False)[1] == "resume with a changed spec: tune.num_trials: 8 -> 12"


def test_a_changed_training_setting_is_refused_in_one_line_unless_forced(tmp_path):

    saved = validate_spec(tiny_spec_dict(tmp_path))
    now = with_values(saved, {"loss.temperature": 2.0, "students.epochs": 3, "tune.num_trials": 9})
    changes = spec_changes(saved.model_dump(), now.model_dump())
    with pytest.raises(SpecError) as info:
        resume_lines(changes, force=False)
    message = str(info.value)
    assert "\n" not in message and "--force" in message
    assert "students.epochs: 1 -> 3" in message and "loss.temperature: 4.0 -> 2.0" in message
    assert "num_trials" not in message
    assert "resume with a changed spec: loss.temperature: 4.0 -> 2.0 (taken with --force)" in resume_lines(
        changes, force=True
    )


def test_a_resume_dry_run_names_the_changes_against_the_saved_spec(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    raw = tiny_spec_dict(tmp_path, search={"loss.alpha": {"type": "float", "low": 0.2, "high": 0.8}})
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(raw))
    folder = new_sweep_folder(str(tmp_path / "runs" / "sweeps"), "tiny")
    (folder.local / SPEC_FILE).write_text(yaml.safe_dump(load_spec(path).resolved().model_dump()))

    assert sweep.main([str(path), "--resume", "--dry-run", "--set", "tune.num_trials=3"]) == 0
    assert "resume with a changed spec: tune.num_trials: 8 -> 3" in capsys.readouterr().out
    with pytest.raises(SpecError, match=r"loss.threshold: None -> 0.5.*--force"):
        sweep.main([str(path), "--resume", "--dry-run", "--set", "loss.threshold=0.5"])
    assert sweep.main([str(path), "--resume", "--dry-run", "--force", "--set", "loss.threshold=0.5"]) == 0
    with pytest.raises(SpecError, match="--force .* with --resume"):
        sweep.main([str(path), "--dry-run", "--force"])
