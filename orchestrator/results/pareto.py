"""A Pareto search's outputs: the non-dominated trials, their plot and a ready-to-train spec for each.

One scalar hides the dual-student trade-off (a setting that helps ResNet-18 and hurts MobileNetV2 ranks
like its mirror image); a front shows what each trial gives up. Pure functions on the results table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd

from orchestrator.results.best_specs import PARETO_DIR, best_spec_yaml
from orchestrator.results.figures import pyplot, save_figure
from orchestrator.results.formatting import markdown_table, plain_value
from orchestrator.results.tables import param_columns
from orchestrator.spec import Spec


def dominates(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether `a` is at least as good as `b` everywhere and better somewhere (both as larger-is-better)."""
    return bool(np.all(a >= b) and np.any(a > b))


def _as_maximised(df: pd.DataFrame, objectives: list[tuple[str, str]]) -> np.ndarray:
    columns = [df[metric].to_numpy(dtype=float) * (1 if mode == "max" else -1) for metric, mode in objectives]
    return np.stack(columns, axis=1)


def candidates(df: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """Completed trials that measured every objective: a pruned trial's figures are of fewer epochs."""
    metrics = [metric for metric, _ in spec.tune.objectives]
    return df[(df["state"] == "completed") & df[metrics].notna().all(axis=1)]


def pareto_front(df: pd.DataFrame, spec: Spec) -> pd.DataFrame:
    """The completed trials no other completed trial dominates, in the table's order."""
    rows = candidates(df, spec)
    points = _as_maximised(rows, spec.tune.objectives)
    keep = np.array([not any(dominates(other, point) for other in points) for point in points], dtype=bool)
    return rows[keep]  # a mask, also when empty (an empty list would select no columns)


def plot_front(df: pd.DataFrame, front: pd.DataFrame, spec: Spec, names: dict[str, str], path: Path) -> Path:
    """Every completed trial on the first two objectives, the front highlighted, joined and named."""
    plt = pyplot()
    (x, x_mode), (y, y_mode) = spec.tune.objectives[:2]
    rows = candidates(df, spec)
    fig, ax = plt.subplots(figsize=(6, 4.5))
    ax.scatter(rows[x], rows[y], color="0.6", label="completed trials")
    line = front.sort_values(x)
    ax.plot(line[x], line[y], color="C3", marker="o", label="Pareto front")
    for _, row in front.iterrows():
        ax.annotate(
            names.get(row["trial_id"], row["trial_id"]),
            (row[x], row[y]),
            textcoords="offset points",
            xytext=(4, 4),
            fontsize=8,
        )
    ax.set_xlabel(f"{x} ({x_mode})")
    ax.set_ylabel(f"{y} ({y_mode})")
    title = f"{spec.name}: Pareto front"
    if len(spec.tune.objectives) > 2:
        title += f" (first 2 of {len(spec.tune.objectives)} objectives)"
    ax.set_title(title)
    ax.legend()
    return save_figure(fig, path)


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
        params = {key: plain_value(row[key]) for key in param_columns(df, spec)}
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
