"""A finished sweep's trials as one table: one row per trial, its state, values and figures, best first; its best
trial, and the line that says every trial failed.

Pure functions on plain data (trial dicts, a DataFrame), so the sweep driver can call them after Tune returns and
the tests can call them without Ray or MLflow. What is written from the table: `search_outputs`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any, Optional

import pandas as pd

from orchestrator.results.formatting import plain_value
from orchestrator.spec import Spec

FIXED_COLUMNS = ("trial_id", "state", "epochs")
# States whose metrics are a real measurement of their parameters; an errored trial's are not.
RANKED_STATES = ("completed", "pruned")
ALL_FAILED = 1  # the exit status of a sweep (or its report) in which every trial failed


def metric_columns(spec: Spec) -> list[str]:
    """Each student's top-1 and the sweep's objectives, once even when an objective is a student's top-1."""
    columns = [f"{name}/val_top1" for name in spec.students.names]
    objectives = [metric for metric, _ in spec.tune.objectives]
    return list(dict.fromkeys([*columns, *objectives, spec.tune.rank_metric[0]]))


def param_columns(df: pd.DataFrame, spec: Spec) -> list[str]:
    skip = {*FIXED_COLUMNS, *metric_columns(spec), "teacher_weight"}
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
    metrics = metric_columns(spec)
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


def all_failed_line(errors: list[Optional[str]]) -> Optional[str]:
    """When every trial failed (each has an error line), one line of their distinct causes, each with its count;
    else None: one trial that ended without error measured something."""
    if not errors or any(error is None for error in errors):
        return None
    causes = Counter(errors)
    return f"every trial failed ({len(errors)} of {len(errors)}): " + " | ".join(
        f"{count} x {line}" for line, count in causes.most_common()
    )  # lines hold "; "


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
    return None if best is None else {key: plain_value(best[key]) for key in param_columns(df, spec)}
