"""What a finished search writes to its sweep folder (and its parent run): results.csv and .md, the plots, and
best.yaml or, for a Pareto search, the front's files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import optuna
import pandas as pd

from orchestrator.results.best_specs import best_spec_yaml
from orchestrator.results.formatting import markdown_table
from orchestrator.results.pareto import write_front
from orchestrator.results.sweep_plots import make_plots
from orchestrator.results.tables import best_params, best_trial
from orchestrator.spec import Spec


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
