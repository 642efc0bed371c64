"""A search: Optuna proposes every trial (ASHA may stop them early), then the results: the table, the best trial or
the Pareto front, the study, in the sweep folder and on the parent run.
"""

from __future__ import annotations

from typing import Optional

import optuna
import pandas as pd

from orchestrator.execution import SweepFolder
from orchestrator.results import best_params, best_trial, format_table, trials_table, write_results
from orchestrator.search.outcomes import (
    budget_line,
    end_failed,
    failure_summary,
    grid_hours,
    interrupted,
    trial_records,
)
from orchestrator.search.searcher import OPTUNA_DB, optuna_storage, write_limits
from orchestrator.search.trial import trial_trainable
from orchestrator.search.tuner import build_tuner, run_tuner
from orchestrator.spec import Spec
from orchestrator.tracking import SweepTracker


def run_search(
    spec: Spec,
    folder: SweepFolder,
    tracker: SweepTracker,
    teacher_dir: Optional[str],
    train_storage: str,
    banks: dict,
    resume: bool,
    callbacks: list,
) -> int:
    """Optuna's trials (ASHA may stop them early), then their results; the exit status."""
    trainable = trial_trainable(spec, teacher_dir, train_storage, banks)
    write_limits(folder, spec.tune.num_trials, spec.resources.units, spec.tune.budget_hours)
    grid = run_tuner(
        tracker, folder.location, resume, trainable, lambda: build_tuner(spec, folder, trainable, callbacks)
    )
    hours, budget = grid_hours(grid, spec), spec.tune.budget_hours
    spent = budget is not None and hours >= budget  # the searcher proposed no more: every trial Tune has ran
    if interrupted(grid, len(grid) if spent else spec.tune.num_trials, spec, folder, tracker):
        return 130
    summary = failure_summary(grid)
    df, files, pruned, front = record_results(grid, spec, folder, tracker)
    print("\n" + format_table(df))
    if summary is not None:
        return end_failed(tracker, folder, summary)
    tracker.finish()
    stopped = f", {len(pruned)} pruned by ASHA (PRUNED in the Optuna study)" if spec.tune.scheduler == "asha" else ""
    print(f"\n{len(df)} trials{stopped}; results in {folder}")
    print(budget_line(hours, budget, spec))
    if "best.yaml" in files:
        print(f"best configuration: python -m orchestrator.train {files['best.yaml']}")
    if spec.tune.pareto:
        print(
            f"Pareto front ({', '.join(m for m, _ in spec.tune.objectives)}): "
            + (", ".join(front) or "no completed trial")
            + (f"; train one: python -m orchestrator.train {folder.local / 'pareto' / front[0]}.yaml" if front else "")
        )
    return 0


def record_results(grid, spec: Spec, folder: SweepFolder, tracker: SweepTracker):
    """The search's table, best trial or Pareto front, and study, in the sweep folder and on the parent run:
    (the table, the files written, the pruned trials' ids, the front's trial names)."""
    records = trial_records(grid)
    df = trials_table(records, spec)
    best = best_trial(df, spec)
    if best is not None and not spec.tune.pareto:
        final = next(r["metrics"] for r in records if r["trial_id"] == best["trial_id"])
        tracker.log_best(best["trial_id"], best_params(df, spec), final)
    study = optuna.load_study(study_name=folder.name, storage=optuna_storage(folder))
    files = write_results(df, spec, folder.local, folder.name, study, tracker.trial_names())
    folder.publish(folder.local / OPTUNA_DB, *files.values())
    tracker.log_artifacts(files)
    front = pd.read_csv(files["pareto.csv"])["trial"].tolist() if spec.tune.pareto else []
    if spec.tune.pareto:
        tracker.journal.set_tag(tracker.parent_id, "pareto_front", " ".join(front) or "none")
    pruned = df.loc[df["state"] == "pruned", "trial_id"].tolist()
    tracker.journal.set_tag(tracker.parent_id, "pruned_trials", " ".join(pruned) or "none")
    tracker.log_metrics({"trials_pruned": len(pruned), "trials_completed": int((df["state"] == "completed").sum())})
    return df, files, pruned, front
