"""A finished sweep as tables, plots and a ready-to-run spec of its best trial.

Pure functions on plain data (trial dicts, a DataFrame, optionally an Optuna study), so the sweep
driver can call them after Tune returns and the tests can call them without Ray or MLflow.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path
from typing import Any, Optional

import matplotlib

matplotlib.use("Agg")  # plots are files; a sweep often runs without a display

import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402
import yaml  # noqa: E402
from matplotlib import ticker  # noqa: E402

from orchestrator.pareto import candidates, pareto_front, plot_front  # noqa: E402
from orchestrator.spec import Spec, with_values  # noqa: E402

FIXED_COLUMNS = ("trial_id", "state", "epochs")
# States whose metrics are a real measurement of their parameters; an errored trial's are not.
RANKED_STATES = ("completed", "pruned")
FROM_SWEEP_TAG = "dualkd.from_sweep"
ALL_FAILED = 1  # the exit status of a sweep (or its report) in which every trial failed
SCATTER_PARAMS = ("loss.threshold", "loss.temperature")
PARETO_DIR = "pareto"


def _metric_columns(spec: Spec) -> list[str]:
    """Each student's top-1 and the sweep's objectives, once even when an objective is a student's top-1."""
    columns = [f"{name}/val_top1" for name in spec.students.names]
    objectives = [metric for metric, _ in spec.tune.objectives]
    return list(dict.fromkeys([*columns, *objectives, spec.tune.rank_metric[0]]))


def _param_columns(df: pd.DataFrame, spec: Spec) -> list[str]:
    skip = {*FIXED_COLUMNS, *_metric_columns(spec), "teacher_weight"}
    return [c for c in df.columns if c not in skip]


def _state(trial: dict, epochs: int, spec: Spec) -> str:
    if trial.get("error"):
        return "error"
    if not trial.get("metrics") or epochs == 0:  # Tune's own fields alone: the trial reported no epoch
        return "no result"
    if epochs < spec.students.epochs:
        return "pruned"  # stopped by ASHA, and told to Optuna as PRUNED
    return "completed"


def trials_table(trials: list[dict], spec: Spec) -> pd.DataFrame:
    """One row per trial, best first by the sweep's ranking metric (`TuneSettings.rank_metric`); trials without
    it last, gaps as NaN."""
    params = list(dict.fromkeys([*spec.search, *(k for t in trials for k in t.get("params") or {})]))
    metrics = _metric_columns(spec)
    if any("teacher_weight" in (t.get("metrics") or {}) for t in trials):
        metrics.append("teacher_weight")
    rows = []
    for trial in trials:
        reported = trial.get("metrics") or {}
        epochs = int(reported.get("epoch") or 0)
        rows.append(
            {
                "trial_id": trial["trial_id"],
                "state": _state(trial, epochs, spec),
                "epochs": epochs,
                **(trial.get("params") or {}),
                **{m: reported.get(m) for m in metrics},
            }
        )
    df = pd.DataFrame(rows, columns=[*FIXED_COLUMNS, *params, *metrics])
    df[metrics] = df[metrics].astype(float)
    df["epochs"] = df["epochs"].astype(int)
    metric, mode = spec.tune.rank_metric
    df = df.sort_values(metric, ascending=mode == "min", na_position="last", kind="stable")
    return df.reset_index(drop=True)


def _format_float(value: float) -> str:
    """4 decimals, but learning rates and other small values keep their digits."""
    if value != 0 and abs(value) < 1e-3:
        return f"{value:.3e}"
    return f"{value:.4f}"


def all_failed_line(errors: list[Optional[str]]) -> Optional[str]:
    """When every trial failed (each has an error line), one line of their distinct causes, each with its count;
    else None: one trial that ended without error measured something."""
    if not errors or any(error is None for error in errors):
        return None
    causes = Counter(errors)
    return f"every trial failed ({len(errors)} of {len(errors)}): " + " | ".join(
        f"{count} x {line}" for line, count in causes.most_common()
    )  # lines hold "; "


def format_table(df: pd.DataFrame) -> str:
    """A fixed-width table for the terminal."""
    return df.to_string(index=False, float_format=_format_float)


def best_trial(df: pd.DataFrame, spec: Spec) -> Optional[pd.Series]:
    """The best completed trial; a pruned one only when none completed (its figure is of fewer epochs)."""
    metric, mode = spec.tune.rank_metric
    measured = df[df["state"].isin(RANKED_STATES) & df[metric].notna()]
    completed = measured[measured["state"] == "completed"]
    ranked = completed if not completed.empty else measured
    if ranked.empty:
        return None
    values = ranked[metric]
    return ranked.loc[values.idxmax() if mode == "max" else values.idxmin()]


def best_params(df: pd.DataFrame, spec: Spec) -> Optional[dict[str, Any]]:
    """The searched values of the best trial (dotted keys), or None when no trial measured the metric."""
    best = best_trial(df, spec)
    return None if best is None else {key: _plain(best[key]) for key in _param_columns(df, spec)}


def _plain(value: Any) -> Any:
    """Numpy scalars as Python values; NaN (how pandas shows a `null` choice) as None."""
    value = value.item() if hasattr(value, "item") else value
    return None if isinstance(value, float) and math.isnan(value) else value


def best_spec_yaml(
    spec: Spec,
    params: dict,
    trial_id: Optional[str] = None,
    figures: Optional[dict] = None,
    sweep_name: Optional[str] = None,
    label: str = "best",
) -> str:
    """The spec with `params` fixed and no search, so `python -m orchestrator.train` trains exactly them.

    `label` names the spec (`NAME-best`, or a front trial's `NAME-t03`) and the file it is written to.
    Its runs carry the MLflow tag `dualkd.from_sweep`: where the values came from."""
    values = {key: _plain(value) for key, value in params.items()}
    tags = {**spec.mlflow.tags, **({FROM_SWEEP_TAG: sweep_name} if sweep_name else {})}
    best = with_values(spec, {**values, "name": f"{spec.name}-{label}", "search": {}, "mlflow.tags": tags})
    source = f"trial {trial_id}" if trial_id else "the best trial"
    if figures:
        source += " (" + ", ".join(f"{metric} = {value:.4f}" for metric, value in figures.items()) + ")"
    kind = "Best values" if label == "best" else "Values of a Pareto-front trial"
    file = "best.yaml" if label == "best" else f"{PARETO_DIR}/{label}.yaml"
    header = (
        f"# {kind} of sweep {spec.name!r}, from {source}:\n"
        + "".join(f"#   {key}: {value}\n" for key, value in values.items())
        + f"# Train it: python -m orchestrator.train {file}\n"
    )
    raw = best.model_dump(mode="json")
    return header + yaml.safe_dump({"name": raw.pop("name"), **raw}, sort_keys=False)


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub Markdown table of `df`: floats as in `format_table`, gaps empty, numbers right-aligned."""

    def cell(value: Any) -> str:
        value = _plain(value)
        if value is None:
            return ""
        return _format_float(value) if isinstance(value, float) else str(value).replace("|", "\\|")

    # Cells go in as strings, so tabulate must not parse them back into numbers (it would reformat 1.000e-04).
    shown = pd.DataFrame(
        [[cell(v) for v in row] for row in df.itertuples(index=False)], columns=[cell(c) for c in df.columns]
    )
    align = ["right" if pd.api.types.is_numeric_dtype(df[c]) else "left" for c in df.columns]
    return shown.to_markdown(index=False, tablefmt="pipe", colalign=align, disable_numparse=True) + "\n"


def save_figure(fig, path: Path) -> Path:
    """Write `fig` as a PNG and close it: a sweep draws many figures, and pyplot keeps each open until closed."""
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def _study_plots(study: optuna.Study, out: Path) -> list[Path]:
    """Optimization history, and parameter importances once there is something to rank."""
    from optuna.visualization.matplotlib import plot_optimization_history, plot_param_importances

    complete = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not complete or len(study.directions) > 1:  # several objectives: pareto.png shows them
        return []
    written = []
    # rc_context: optuna switches pyplot to its ggplot style, which would leak into every later plot.
    with warnings.catch_warnings(), plt.rc_context():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        written.append(save_figure(plot_optimization_history(study).figure, out / "optimization_history.png"))
        # Optuna's default evaluator returns equal (meaningless) importances instead of failing below this.
        names = {name for t in complete for name in t.params}
        varying = any(len({repr(t.params.get(name)) for t in complete}) > 1 for name in names)
        if len(complete) >= 2 and varying:
            try:  # optuna computes the importances before it opens a figure: nothing to close on failure
                ax = plot_param_importances(study)
            except ValueError:  # trials with different parameter sets (a define-by-run space)
                pass
            else:
                written.append(save_figure(ax.figure, out / "param_importances.png"))
    return written


def _scatter(df: pd.DataFrame, spec: Spec, param: str, out: Path) -> Optional[Path]:
    """Each student's val top-1 against one parameter; pruned trials drawn as crosses."""
    rows = df[df["state"].isin(RANKED_STATES) & df[param].notna()]
    fig, ax = plt.subplots(figsize=(6, 4))
    drawn = False
    for colour, name in enumerate(spec.students.names):
        for state, marker in (("completed", "o"), ("pruned", "x")):
            points = rows[(rows["state"] == state) & rows[f"{name}/val_top1"].notna()]
            if not points.empty:
                label = name if state == "completed" else f"{name} (pruned)"
                ax.scatter(points[param], points[f"{name}/val_top1"], color=f"C{colour}", marker=marker, label=label)
                drawn = True
    if not drawn:
        plt.close(fig)
        return None
    search = spec.search.get(param)
    if getattr(search, "log", False):
        ax.set_xscale("log")
        plain = ticker.FuncFormatter(lambda value, _: f"{value:g}")  # 2, 3, 4 rather than 2x10^0
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.set_xlabel(param)
    ax.set_ylabel("val top-1")
    ax.set_title(f"{spec.name}: val top-1 against {param}")
    ax.legend()
    return save_figure(fig, out / f"val_top1_vs_{param.replace('.', '_')}.png")


def make_plots(df: pd.DataFrame, spec: Spec, out_dir: str | Path, study: Optional[optuna.Study] = None) -> list[Path]:
    """PNGs of the study's progress and of the students' accuracy against the uncertainty settings."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = _study_plots(study, out) if study is not None else []
    for param in SCATTER_PARAMS:
        if param in df.columns:
            path = _scatter(df, spec, param, out)
            if path:
                written.append(path)
    return written


def _objective_figures(row: pd.Series, spec: Spec) -> dict[str, float]:
    return {metric: float(row[metric]) for metric, _ in spec.tune.objectives}


def write_front(
    df: pd.DataFrame, spec: Spec, out: Path, sweep_name: Optional[str], names: dict[str, str]
) -> dict[str, Path]:
    """pareto.csv, pareto.md, pareto.png and pareto/tNN.yaml for each trial of a Pareto search's front."""
    front = pareto_front(df, spec)
    table = front.assign(trial=[names.get(t, t) for t in front["trial_id"]])
    table = table[["trial", *[c for c in front.columns if c != "trial"]]]
    written = {"pareto.csv": out / "pareto.csv", "pareto.md": out / "pareto.md"}
    table.to_csv(written["pareto.csv"], index=False)
    written["pareto.md"].write_text(markdown_table(table))
    if not candidates(df, spec).empty:
        written["pareto.png"] = plot_front(df, front, spec, names, out / "pareto.png")
    (out / PARETO_DIR).mkdir(exist_ok=True)
    for _, row in table.iterrows():
        params = {key: _plain(row[key]) for key in _param_columns(df, spec)}
        path = out / PARETO_DIR / f"{row['trial']}.yaml"
        path.write_text(
            best_spec_yaml(
                spec,
                params,
                trial_id=row["trial_id"],
                figures=_objective_figures(row, spec),
                sweep_name=sweep_name,
                label=row["trial"],
            )
        )
        written[f"{PARETO_DIR}/{path.name}"] = path
    return written


def write_results(
    df: pd.DataFrame,
    spec: Spec,
    out_dir: str | Path,
    sweep_name: Optional[str] = None,
    study: Optional[optuna.Study] = None,
    names: Optional[dict[str, str]] = None,
) -> dict[str, Path]:
    """results.csv, results.md, the plots, and best.yaml (when a trial measured the metric) or, for a Pareto
    search, the front's files (`names`: trial id -> the name its MLflow run starts with); name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"results.csv": out / "results.csv", "results.md": out / "results.md"}
    df.to_csv(written["results.csv"], index=False)
    written["results.md"].write_text(markdown_table(df))
    best = None if spec.tune.pareto else best_trial(df, spec)
    if spec.tune.pareto:
        written.update(write_front(df, spec, out, sweep_name, names or {}))
    elif best is not None:
        written["best.yaml"] = out / "best.yaml"
        written["best.yaml"].write_text(
            best_spec_yaml(
                spec,
                best_params(df, spec),
                trial_id=best["trial_id"],
                figures={spec.tune.rank_metric[0]: best[spec.tune.rank_metric[0]]},
                sweep_name=sweep_name,
            )
        )
    written.update({path.name: path for path in make_plots(df, spec, out, study)})
    return written
