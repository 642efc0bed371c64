"""The sweep's result tables, best spec and plots, on hand-made trials (no Ray)."""

import math
import re
import warnings

import matplotlib
import optuna
import pandas as pd
import pytest
from optuna.distributions import FloatDistribution

from orchestrator.results import (
    best_spec_yaml,
    best_trial,
    format_table,
    make_plots,
    markdown_table,
    trials_table,
    write_results,
)
from orchestrator.spec import load_spec, validate_spec, with_values

SEARCH = {
    "loss.threshold": {"type": "float", "low": 0.3, "high": 1.0},
    "loss.temperature": {"type": "float", "low": 1, "high": 6, "log": True},
}
PNG = b"\x89PNG"


def make_spec(**sections):
    return validate_spec({"name": "t", "students": {"epochs": 4}, "search": SEARCH, **sections})


def metrics(epoch, r18, mnv2, **extra):
    return {
        "epoch": epoch,
        "resnet18/val_top1": r18,
        "mobilenet_v2/val_top1": mnv2,
        "val_top1_mean": (r18 + mnv2) / 2,
        **extra,
    }


TRIALS = [
    {
        "trial_id": "stopped",
        "params": {"loss.threshold": 0.9, "loss.temperature": 5.0},
        "metrics": metrics(2, 0.6, 0.5),
        "error": None,
    },
    {"trial_id": "nores", "params": {"loss.threshold": 0.4}, "metrics": {}, "error": None},
    {
        "trial_id": "done",
        "params": {"loss.threshold": 0.5, "loss.temperature": 2.0},
        "metrics": metrics(4, 0.9, 0.8, teacher_weight=0.7),
        "error": None,
    },
    {
        "trial_id": "failed",
        "params": {"loss.threshold": 0.7, "loss.temperature": 3.0},
        "metrics": metrics(3, 0.99, 0.99),
        "error": "RuntimeError: worker died",
    },
]


def make_study(values):
    study = optuna.create_study(direction="maximize")
    for i, value in enumerate(values):
        study.add_trial(
            optuna.trial.create_trial(
                params={"loss.threshold": 0.3 + 0.1 * i, "loss.temperature": 1.0 + i},
                distributions={
                    "loss.threshold": FloatDistribution(0.3, 1.0),
                    "loss.temperature": FloatDistribution(1.0, 6.0, log=True),
                },
                value=value,
            )
        )
    return study


def test_rows_states_and_order():
    df = trials_table(TRIALS, make_spec())
    assert list(df.columns) == [
        "trial_id",
        "state",
        "epochs",
        "loss.threshold",
        "loss.temperature",
        "resnet18/val_top1",
        "mobilenet_v2/val_top1",
        "val_top1_mean",
        "teacher_weight",
    ]
    assert list(df["trial_id"]) == ["failed", "done", "stopped", "nores"]
    assert list(df["state"]) == ["error", "completed", "pruned", "no result"]
    assert list(df["epochs"]) == [3, 4, 2, 0]
    nores = df.set_index("trial_id").loc["nores"]
    assert math.isnan(nores["loss.temperature"]) and math.isnan(nores["val_top1_mean"])
    assert math.isnan(df.set_index("trial_id").loc["stopped", "teacher_weight"])


def test_mode_min_reverses_and_missing_metric_stays_last():
    spec = make_spec(tune={"mode": "min"})
    df = trials_table(TRIALS, spec)
    assert list(df["trial_id"]) == ["stopped", "done", "failed", "nores"]
    assert best_trial(df, spec)["trial_id"] == "done"  # a pruned trial's lower figure is of fewer epochs
    assert best_trial(df[df["trial_id"] != "done"], spec)["trial_id"] == "stopped"  # none completed


def test_best_trial_skips_errors_and_needs_a_metric():
    spec = make_spec()
    assert best_trial(trials_table(TRIALS, spec), spec)["trial_id"] == "done"
    assert best_trial(trials_table([TRIALS[1], TRIALS[3]], spec), spec) is None
    assert best_trial(trials_table([], spec), spec) is None


def test_metric_that_is_a_student_column_appears_once_and_twin_students_are_numbered():
    spec = make_spec(tune={"metric": "resnet18/val_top1"})
    assert list(trials_table(TRIALS, spec).columns).count("resnet18/val_top1") == 1
    twins = validate_spec({"name": "t", "students": {"archs": ["resnet18", "resnet18"]}, "loss": {"method": "dml"}})
    assert {"resnet18_1/val_top1", "resnet18_2/val_top1"} <= set(trials_table([], twins).columns)


def test_format_table_is_fixed_width_with_4_decimals():
    text = format_table(trials_table(TRIALS, make_spec()))
    lines = text.splitlines()
    assert len(lines) == 5 and "0.8500" in text and "NaN" in text
    assert "pruned" in text


def test_best_spec_yaml_loads_back_to_the_best_values(tmp_path):
    spec = make_spec()
    text = best_spec_yaml(
        spec, {"loss.threshold": 0.5, "loss.temperature": 2.0}, trial_id="done", figures={"val_top1_mean": 0.85}
    )
    assert text.startswith("#") and "trial done" in text and "val_top1_mean = 0.8500" in text
    path = tmp_path / "best.yaml"
    path.write_text(text)
    loaded = load_spec(path)
    assert loaded == with_values(spec, {"loss.threshold": 0.5, "loss.temperature": 2.0, "name": "t-best", "search": {}})
    assert loaded.search == {} and loaded.loss.threshold == 0.5 and loaded.name == "t-best"


def test_write_results_writes_every_file(tmp_path):
    spec = make_spec()
    df = trials_table(TRIALS, spec)
    written = write_results(df, spec, tmp_path / "out", study=make_study([0.5, 0.8, 0.6]))
    assert set(written) == {
        "results.csv",
        "results.md",
        "best.yaml",
        "optimization_history.png",
        "param_importances.png",
        "val_top1_vs_loss_threshold.png",
        "val_top1_vs_loss_temperature.png",
    }
    assert all(p.is_file() and p.stat().st_size > 0 for p in written.values())
    md = written["results.md"].read_text().splitlines()
    assert md_cells(md[0])[:2] == ["trial_id", "state"] and len(md) == 2 + len(TRIALS)
    best = load_spec(written["best.yaml"])
    assert (best.loss.threshold, best.loss.temperature, best.search) == (0.5, 2.0, {})
    assert "trial done" in written["best.yaml"].read_text()


def md_cells(line: str) -> list[str]:
    """The cells of one Markdown table row, without the padding; an escaped pipe stays in its cell."""
    return [c.strip() for c in re.split(r"(?<!\\)\|", line.strip())[1:-1]]


def test_markdown_table_formats_aligns_and_escapes():
    df = pd.DataFrame({"name": ["a|b", None], "lr": [1e-4, 0.5], "top1": [0.91234, math.nan], "n": [3, 4]})
    lines = markdown_table(df).splitlines()
    assert [md_cells(line) for line in lines[:1] + lines[2:]] == [
        ["name", "lr", "top1", "n"],
        ["a\\|b", "1.000e-04", "0.9123", "3"],  # small values keep their digits; tabulate must not re-parse them
        ["", "0.5000", "", "4"],
    ]  # gaps are empty
    align = md_cells(lines[1])  # text left-aligned, numbers right-aligned
    assert align[0].startswith(":-") and align[0].endswith("-")
    assert all(a.startswith("-") and a.endswith("-:") for a in align[1:])
    assert len(lines[1]) == len(lines[0])  # every row padded to the same widths


def test_no_best_yaml_without_a_ranked_trial(tmp_path):
    spec = make_spec()
    written = write_results(trials_table([TRIALS[1]], spec), spec, tmp_path)
    assert set(written) == {"results.csv", "results.md"}


@pytest.mark.parametrize(
    "values, expected",
    [
        ([], set()),
        ([0.5], {"optimization_history.png"}),
        ([0.5, 0.8, 0.6, 0.7], {"optimization_history.png", "param_importances.png"}),
    ],
)
def test_study_plots_are_pngs_without_experimental_warnings_or_style_leaks(tmp_path, values, expected):
    facecolor = matplotlib.rcParams["axes.facecolor"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        paths = make_plots(trials_table([], make_spec()), make_spec(), tmp_path, study=make_study(values))
    assert {p.name for p in paths} == expected
    assert all(p.read_bytes().startswith(PNG) for p in paths)
    assert not [w for w in caught if issubclass(w.category, optuna.exceptions.ExperimentalWarning)]
    assert matplotlib.rcParams["axes.facecolor"] == facecolor  # optuna's ggplot style stays inside


def test_importances_skipped_when_no_parameter_varies(tmp_path):
    study = optuna.create_study()
    for value in (0.1, 0.2):
        study.add_trial(
            optuna.trial.create_trial(
                params={"loss.threshold": 0.5},
                distributions={"loss.threshold": FloatDistribution(0.3, 1.0)},
                value=value,
            )
        )
    assert [p.name for p in make_plots(trials_table([], make_spec()), make_spec(), tmp_path, study)] == [
        "optimization_history.png"
    ]


def test_scatter_plots_need_the_parameter_and_a_measured_trial(tmp_path):
    spec = validate_spec({"name": "t", "search": {"loss.alpha": {"type": "float", "low": 0.1, "high": 0.9}}})
    assert make_plots(trials_table([{**t, "params": {"loss.alpha": 0.5}} for t in TRIALS], spec), spec, tmp_path) == []
    assert make_plots(trials_table([TRIALS[1]], make_spec()), make_spec(), tmp_path) == []
    paths = make_plots(trials_table(TRIALS, make_spec()), make_spec(), tmp_path)
    assert [p.name for p in paths] == ["val_top1_vs_loss_threshold.png", "val_top1_vs_loss_temperature.png"]
    assert all(p.read_bytes().startswith(PNG) for p in paths)
