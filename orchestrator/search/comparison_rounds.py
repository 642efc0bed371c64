"""A comparison: every method on the listed seeds as fixed trials; with `compare.sequential`, then one seed more at a
time (a round of its own, for every method) until the rule in `orchestrator.results.sequential` stops it; then the
tables and plots, built from what MLflow holds (as `python -m orchestrator.report` builds them).
"""

from __future__ import annotations

from typing import Optional

from orchestrator.execution import SweepFolder
from orchestrator.results import STOP_TAG, build_report, load_sweep, stop_reason
from orchestrator.search.outcomes import budget_line, end_failed, failure_summary, grid_hours, interrupted
from orchestrator.search.trial import trial_trainable
from orchestrator.search.tuner import build_tuner, run_tuner
from orchestrator.spec import Spec
from orchestrator.teacher import prepare_teacher_and_banks
from orchestrator.tracking import SweepTracker
from trainables import storage


def run_comparison(
    spec: Spec,
    folder: SweepFolder,
    tracker: SweepTracker,
    teacher_dir: Optional[str],
    train_storage: str,
    banks: dict,
    resume: bool,
    callbacks: list,
) -> int:
    """Every method for the listed seeds; with `compare.sequential`, then one seed more (for every method, a
    round of its own) until the rule in `orchestrator.results.sequential` stops it. The reason is on the parent run."""
    c = spec.compare
    seeds, used, reason = list(c.seeds), 0.0, None
    round_seeds, name = seeds, None
    while True:
        trainable = trial_trainable(spec, teacher_dir, train_storage, banks)
        location = storage.join(folder.location, name) if name else folder.location
        grid = run_tuner(
            tracker,
            location,
            resume,
            trainable,
            lambda: build_tuner(spec, folder, trainable, callbacks, round_seeds, name),
        )
        if interrupted(grid, len(c.methods) * len(round_seeds), spec, folder, tracker):
            return 130
        summary = failure_summary(grid)
        if summary is not None:
            return end_failed(tracker, folder, summary)
        used += grid_hours(grid, spec)
        if c.sequential is None:
            break
        trials = logged_trials(tracker, folder)
        reason = stop_reason(trials, spec, len(seeds), used)
        print(f"seeds {seeds}: {reason or 'undecided, adding a seed'}")
        if reason:
            break
        round_seeds = [max(seeds) + 1]
        seeds += round_seeds
        name = f"seed-{round_seeds[0]}"
        banks = {**banks, **prepare_teacher_and_banks(spec, round_seeds)[1]}
    if c.sequential is not None:
        tracker.journal.set_tag(tracker.parent_id, STOP_TAG, reason)
        tracker.journal.set_tag(tracker.parent_id, "seeds_used", " ".join(map(str, seeds)))
        tracker.log_metrics({"seeds_used": len(seeds)})
    print(budget_line(used, c.budget_hours, spec))
    return finish_comparison(tracker, folder, spec.mlflow.send_timeout_s)


def logged_trials(tracker: SweepTracker, folder: SweepFolder) -> list[dict]:
    """The comparison's trials as MLflow holds them, once the server has every write (a sequential comparison
    decides on them: it waits for the server, however long it is away)."""
    if tracker.wait_sent(10):
        print(f"waiting for MLflow to take the journal's writes before deciding ({tracker.sender.failing})")
        tracker.wait_sent(None)
    return load_sweep(tracker.client, folder.name).trials


def finish_comparison(tracker: SweepTracker, folder: SweepFolder, timeout: float) -> int:
    """The comparison's tables and plots, built from what MLflow holds (as `orchestrator.report` does) once the
    server has every write; when it does not within `timeout`, the line that says how to build them later."""
    if tracker.wait_sent(timeout):
        tracker.finish()
        print(
            f"\ncomparison finished; MLflow does not have every write yet, so its tables wait: send them with "
            f"python -m orchestrator.sync {folder.local}, then python -m orchestrator.report {folder.name}"
        )
        return 0
    files = build_report(
        tracker.client,
        load_sweep(tracker.client, folder.name),
        folder.local,
        log_to=(tracker.journal, tracker.parent_id),
    )
    folder.publish(*files.values())
    tracker.finish()
    print(f"\ncomparison finished: {len(files)} tables and plots in {folder}")
    return 0
