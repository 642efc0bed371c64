"""A finished search's plots: the study's progress and parameter importances (Optuna's), and each student's val
top-1 against the uncertainty settings.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import optuna
import pandas as pd
from matplotlib import ticker

from orchestrator.results.figures import pyplot, save_figure
from orchestrator.results.tables import RANKED_STATES
from orchestrator.spec import Spec

SCATTER_PARAMS = ("loss.threshold", "loss.temperature")


def _study_plots(study: optuna.Study, out: Path) -> list[Path]:
    """Optimization history, and parameter importances once there is something to rank."""
    plt = pyplot()
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
    plt = pyplot()
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
