"""What a round of trials came to: their records for the tables, whether every trial failed (the sweep then ends
FAILED with their causes), whether Tune returned before every trial ended (Ctrl-C: KILLED), and the resource-hours
the trials used.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import optuna

from orchestrator.execution import SweepFolder
from orchestrator.results import ALL_FAILED, all_failed_line
from orchestrator.search.searcher import OPTUNA_DB, optuna_storage
from orchestrator.spec import Spec
from orchestrator.tracking import SweepTracker, error_line


def trial_records(grid) -> list[dict]:
    """What the tables need of each Tune result: its sampled values, last metrics and error."""
    records = []
    for result in grid:
        config = dict(result.config or {})
        metrics = dict(result.metrics or {})
        records.append(
            {
                "trial_id": metrics.get("trial_id") or Path(result.path or "?").name,
                "params": config,
                "metrics": metrics,
                "error": str(result.error).splitlines()[0] if result.error else None,
            }
        )
    return records


def failure_summary(grid) -> Optional[str]:
    """When every trial failed, one line of their distinct causes, each with its count; else None."""
    return all_failed_line([None if r.error is None else error_line(str(r.error)) for r in grid])


def end_failed(tracker: SweepTracker, folder: SweepFolder, summary: str) -> int:
    """A sweep that measured nothing ends FAILED with its causes, and a non-zero exit status."""
    tracker.journal.set_tag(tracker.parent_id, "error", summary[:5000])
    tracker.finish("FAILED")
    sys.stdout.flush()
    print(f"error: {summary} (outputs in {folder})", file=sys.stderr)
    return ALL_FAILED


def ended_trials(grid, spec: Spec, folder: SweepFolder) -> int:
    """Trials that ended: errored, or told to the study as finished (a sweep), or run to their last epoch (a
    comparison, which stops nothing early). Tune counts a trial that Ctrl-C stopped as terminated too."""
    if spec.compare:
        return sum(
            1 for r in grid if r.error is not None or int((r.metrics or {}).get("epoch", 0)) >= spec.students.epochs
        )
    study = optuna.load_study(study_name=folder.name, storage=optuna_storage(folder))
    unended = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,))
    return grid.num_terminated + grid.num_errors - len(unended)


def interrupted(grid, expected: int, spec: Spec, folder: SweepFolder, tracker: SweepTracker) -> bool:
    """Whether Tune returned before every trial ended (Ctrl-C, a killed driver): the parent run is KILLED."""
    finished = ended_trials(grid, spec, folder)
    if finished >= expected:
        return False
    folder.publish(folder.local / OPTUNA_DB)
    print(f"sweep interrupted after {finished} of {expected} trials: continue it with --resume ({folder})")
    tracker.finish("KILLED")
    return True


def grid_hours(grid, spec: Spec) -> float:
    """Resource-hours of a round's trials: each one's wall time (Tune's `time_total_s`) x its GPUs or CPUs."""
    seconds = sum(float((result.metrics or {}).get("time_total_s", 0.0)) for result in grid)
    return seconds * spec.resources.units / 3600


def budget_line(used: float, budget: Optional[float], spec: Spec) -> str:
    left = f", {max(budget - used, 0.0):.3f} of the budget's {budget:g} left" if budget is not None else ""
    return f"resource-hours used: {used:.3f} ({'GPU' if spec.resources.use_gpu else 'CPU'}-hours){left}"
