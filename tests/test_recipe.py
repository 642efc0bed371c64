"""What a comparison with --from-sweep takes from the search's best trial (`orchestrator.spec.recipe`)."""

from pathlib import Path

import pytest

from orchestrator.spec import (
    SpecError,
    apply_overrides,
    comparison_from_recipe,
    load_raw,
    load_spec,
    recipe_keys,
    with_values,
)

SPECS = Path(__file__).resolve().parents[1] / "search_spaces"
BEST = {"loss.threshold": 0.61, "loss.temperature": 2.5, "loss.alpha": 0.3, "loss.beta": 1.7}


def best_of_peer(**changes):
    """peer.yaml's best trial: its searched values, and `changes` to the rest of its recipe."""
    return with_values(load_spec(SPECS / "peer.yaml"), {**BEST, **changes})


def test_the_shipped_comparison_runs_the_searched_recipe_and_overrides_nothing():
    spec, overrides = comparison_from_recipe(load_raw(SPECS / "compare.yaml"), best_of_peer(), BEST, {})
    assert overrides == []
    assert spec.loss.peer_warmup_epochs == 1 and spec.students.epochs == 6  # the warm-up is carried
    assert (spec.loss.beta, spec.loss.threshold) == (1.7, 0.61)  # the search's values, not compare.yaml's
    assert spec.compare.methods == ["ce", "kd", "dml", "dual_kd", "ua_kd", "ua_dual"] and spec.name == "compare"


def test_a_setting_written_to_another_value_overrides_and_is_named():
    recipe = best_of_peer(**{"students.lr": 0.05, "data.val_fraction": 0.25})
    raw = {**load_raw(SPECS / "compare.yaml"), "loss": {"method": "ua_dual"}}  # writes no loss setting
    spec, overrides = comparison_from_recipe(raw, recipe, BEST, {})
    lines = [o.line() for o in overrides]
    assert lines == [
        "data.val_fraction: 0.25 in the search -> 0.2 here",
        "students.lr: 0.05 in the search -> 0.02 here",
    ]
    assert spec.students.lr == 0.02
    assert spec.loss.peer_warmup_epochs == 1 and spec.loss.weighting == "entropy+threshold"  # not reset to defaults


def test_searched_values_win_over_the_spec_but_not_over_the_command_line():
    cli = ["loss.beta=0.5", "students.epochs=2"]
    raw = apply_overrides(load_raw(SPECS / "compare.yaml"), cli)
    spec, overrides = comparison_from_recipe(raw, best_of_peer(), BEST, apply_overrides({}, cli))
    assert spec.loss.beta == 0.5 and spec.loss.alpha == BEST["loss.alpha"]
    assert sorted(o.line() for o in overrides) == [
        "loss.beta: 1.7 in the search -> 0.5 here",
        "students.epochs: 6 in the search -> 2 here",
    ]


def test_a_relative_path_that_names_the_recipes_folder_is_no_override(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    recipe = with_values(best_of_peer(), {"teacher.init_weights": str(tmp_path / "w.pt")})
    raw = apply_overrides(load_raw(SPECS / "compare.yaml"), ["teacher.init_weights=w.pt"])
    _, overrides = comparison_from_recipe(raw, recipe, BEST, {})
    assert overrides == []


def test_recipe_keys_are_the_training_settings_alone():
    keys = recipe_keys(load_raw(SPECS / "compare.yaml"))
    assert "students.epochs" in keys and "loss.peer_warmup_epochs" in keys
    assert not any(k.split(".")[0] in ("compare", "resources", "tune", "mlflow", "name", "seed") for k in keys)


def test_a_recipe_the_comparison_cannot_run_is_one_line():
    with pytest.raises(SpecError, match="dml"):  # the best trial turned the peer term off
        comparison_from_recipe(load_raw(SPECS / "compare.yaml"), best_of_peer(**{"loss.beta": 0.0}), BEST, {})
