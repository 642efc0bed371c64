"""Runs a validated sweep: Ray, the teacher once, `tune.Tuner` with Optuna and ASHA, MLflow, results."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Optional

import optuna
import pandas as pd
import ray
import ray.tune
import torch
import yaml
from ray.tune import Callback, CLIReporter
from ray.tune.error import TuneError
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from orchestrator.execution import SPEC_FILE, SweepFolder, start_ray, stop_own_ray, storage_faults
from orchestrator.results import (
    ALL_FAILED,
    STOP_TAG,
    TEACHER_LOGITS_ARTIFACT,
    all_failed_line,
    best_params,
    best_trial,
    build_report,
    format_table,
    load_sweep,
    log_gating_curve,
    stop_reason,
    trials_table,
    write_results,
)
from orchestrator.searcher import OPTUNA_DB, SweepSearch, optuna_storage, sweep_search_alg, write_limits
from orchestrator.spec import Spec, SpecError, optuna_space
from orchestrator.teacher import prepare_teacher_and_banks, run_seeds, teacher_uncertainty, train_logits_of
from orchestrator.tracking import SweepTracker, error_line, error_text, trial_tracker, where_to_look
from orchestrator.trial import trial_trainable
from orchestrator.tune_state import KeepTuneState, repair_state
from trainables import failures, storage
from trainables.teacher_cache import SOFT_LABELS_FILE

# Tune saves its experiment state at least this often (seconds), so a killed driver loses little.
os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "5")
# Tune's classic progress table, whose columns we choose (the newer one lists every metric).
os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")


class PublishStudy(Callback):
    """Uploads the Optuna study when a trial starts (Optuna has just asked for it) or ends, when the sweep
    lives in a bucket: a driver resumed elsewhere finds every trial that Tune's saved state knows."""

    def __init__(self, folder: SweepFolder):
        self.folder = folder

    def on_trial_start(self, iteration, trials, trial, **info):
        self.folder.publish(self.folder.local / OPTUNA_DB)

    on_trial_complete = on_trial_error = on_trial_start


class StorageGuard(Callback):
    """Stops the sweep (StorageFailed) when a trial fails because its storage is full or read-only."""

    def __init__(self, location: str):
        self.location = location

    def _check(self, trial) -> None:
        reason = storage_faults.probe(self.location) or storage_faults.reason_in(error_text(trial))
        if reason is not None:
            raise storage_faults.storage_failure(self.location, f"{reason}; trial {trial.trial_id} failed on it")

    def on_trial_recover(self, iteration, trials, trial, **info):
        self._check(trial)

    def on_trial_error(self, iteration, trials, trial, **info):
        self._check(trial)


class TrialsReporter(CLIReporter):
    """Tune's progress table without the "/infinite" of a search whose trial count the searcher keeps."""

    def set_total_samples(self, total_samples: Optional[int]):
        super().set_total_samples(None if total_samples and total_samples >= sys.maxsize else total_samples)


def progress_reporter(spec: Spec) -> CLIReporter:
    """Epoch, each student's top-1 and the sweep metric, per trial with its searched values."""
    metrics = {
        "epoch": "epoch",
        **{f"{n}/val_top1": f"{n} top-1" for n in spec.students.names},
        **{metric: metric for metric, _ in spec.tune.objectives},
    }
    keys = list(spec.search) or (["loss.method", "seed"] if spec.compare else [])
    params = {key: key.split(".")[-1] for key in keys}
    return TrialsReporter(
        metric_columns=metrics, parameter_columns=params, max_report_frequency=30, sort_by_metric=True
    )  # by TuneConfig's metric and mode: `TuneSettings.rank_metric`


def asha_grace(spec: Spec) -> int:
    """ASHA's grace period, at most the run's epochs (a short rehearsal of a long spec stops nothing early)."""
    return min(spec.tune.grace_period, spec.students.epochs)


def build_tuner(
    spec: Spec,
    folder: SweepFolder,
    trainable,
    callbacks: list,
    seeds: Optional[list[int]] = None,
    name: Optional[str] = None,
) -> ray.tune.Tuner:
    """A sweep: Optuna proposes every trial (on several objectives, its multi-objective TPE). A comparison: a
    grid of fixed (method, seed) trials, run to the end. Tune itself (ASHA, the progress table) follows one
    metric: `TuneSettings.rank_metric`. A comparison's added seed is a round of its own: `seeds`, and `name`
    (a folder inside the sweep folder)."""
    t = spec.tune
    rank_metric, rank_mode = t.rank_metric
    search_alg, param_space = None, None
    if spec.compare:
        param_space = {
            "loss.method": ray.tune.grid_search(spec.compare.methods),
            "seed": ray.tune.grid_search(seeds or spec.compare.seeds),
        }
    else:
        searcher = SweepSearch(
            folder,
            spec.students.epochs,
            spec.resources.units,
            t.budget_hours,
            t.num_trials,
            space=optuna_space(spec),
            metric=t.metric,
            mode=t.mode,
            seed=t.seed,
        )
        search_alg = sweep_search_alg(searcher, t.max_concurrent_trials)
    if t.scheduler == "asha" and not spec.compare:
        scheduler = ASHAScheduler(
            time_attr="epoch",
            max_t=spec.students.epochs,
            grace_period=asha_grace(spec),
            reduction_factor=t.reduction_factor,
        )
    else:
        scheduler = FIFOScheduler()
    return ray.tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=ray.tune.TuneConfig(
            metric=rank_metric,
            mode=rank_mode,
            search_alg=search_alg,
            scheduler=scheduler,
            num_samples=1 if spec.compare else -1,  # the searcher stops at tune.num_trials (a resume may change it)
            max_concurrent_trials=t.max_concurrent_trials if spec.compare else None,  # a search's: in search_alg
        ),
        run_config=ray.tune.RunConfig(
            name=name or folder.name,
            storage_path=folder.location if name else folder.root,
            callbacks=callbacks,
            progress_reporter=progress_reporter(spec),
            verbose=1,
            failure_config=ray.tune.FailureConfig(max_failures=1),
        ),
    )


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


def log_teacher_uncertainty(tracker: SweepTracker, teacher_dir: Optional[str], threshold: Optional[float]) -> None:
    """The teacher's training-set logits (the comparison's entropy histogram) and their uncertainty summary,
    on the parent run and printed: before any trial, whether the weighting has anything to weigh."""
    soft_labels = storage.local_copy(teacher_dir) / SOFT_LABELS_FILE if teacher_dir else None
    if not (soft_labels and soft_labels.is_file()):
        return
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / TEACHER_LOGITS_ARTIFACT
        shutil.copyfile(soft_labels, target)
        tracker.journal.log_artifact(tracker.parent_id, str(target))
    summary = teacher_uncertainty(torch.load(soft_labels, weights_only=True), threshold)
    tracker.log_metrics(summary)
    print(
        "teacher uncertainty u = H/log C on the training set: "
        + ", ".join(f"{k.removeprefix('teacher_u/train_')} {v:.3f}" for k, v in summary.items())
    )


def log_teacher_gating(tracker: SweepTracker, spec: Spec, teacher_dir: Optional[str]) -> None:
    """The share gated out and the mean teacher weight against `loss.threshold`, on the parent run before the
    first trial (`orchestrator.teacher.gating`): whether the searched range gates anything."""
    logits = train_logits_of(teacher_dir) if teacher_dir else None
    if logits is not None:
        with tempfile.TemporaryDirectory() as tmp:
            log_gating_curve(tracker.journal, tracker.parent_id, spec, logits, tmp)


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


def fit(tracker: SweepTracker, location: str, resume: bool, trainable, build) -> ray.tune.ResultGrid:
    """Tune's run of the experiment at `location`: restored from there on --resume when it exists, else
    `build()`; a storage that stopped taking writes ends it with one line (StorageFailed)."""
    if resume and ray.tune.Tuner.can_restore(location):
        print(f"resuming {location}")
        repaired = repair_state(location)
        if repaired:
            print(repaired)
        tuner = ray.tune.Tuner.restore(location, trainable, resume_errored=True)
    else:
        tuner = build()
    try:
        return tuner.fit()
    except TuneError as err:
        failure = storage_faults.found_in(err)
        if failure is None:
            raise
        tracker.journal.set_tag(tracker.parent_id, "error", str(failure))
        tracker.finish("FAILED")
        raise failure from None


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
        grid = fit(
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


def check_driver_slots() -> None:
    if ray.cluster_resources().get("TRAIN_DRIVER", 0) < 1:
        raise SpecError(
            "the Ray cluster has no TRAIN_DRIVER resource for trial drivers: start its head with "
            "ray start --head --resources='{\"TRAIN_DRIVER\": 8}'"
        )


def run_sweep(
    spec: Spec,
    folder: SweepFolder,
    uri: str,
    spec_text: str,
    commit: Optional[str],
    address: Optional[str] = None,
    resume: bool = False,
) -> int:
    """Runs a resolved, pre-flight-checked spec (absolute paths, fixed storage: see `Spec.resolved`)."""
    folder.local.mkdir(parents=True, exist_ok=True)
    train_storage = storage.join(folder.location, "train")
    if resume:
        folder.fetch(OPTUNA_DB)
        failures.clear_recorded(train_storage)  # --resume retries errored trials: the user may have fixed the cause
    dashboard = start_ray(address, driver_slots=spec.tune.max_concurrent_trials)
    check_driver_slots()
    experiment = spec.mlflow.experiment or spec.name
    tracker = SweepTracker(uri, experiment, folder.name, spec.data.model_dump(), folder.local, spec.mlflow.tags)
    try:
        code = tracked_sweep(spec, folder, tracker, spec_text, commit, dashboard, train_storage, resume)
    except BaseException:
        tracker.close(5, folder.local)
        raise
    stop_own_ray()  # Ray prints its last lines as it disconnects: before the line on MLflow's unsent writes
    tracker.close(spec.mlflow.send_timeout_s, folder.local)
    return code


def tracked_sweep(
    spec: Spec,
    folder: SweepFolder,
    tracker: SweepTracker,
    spec_text: str,
    commit: Optional[str],
    dashboard: Optional[str],
    train_storage: str,
    resume: bool,
) -> int:
    """The sweep or comparison, once Ray runs and its MLflow parent run (journaled) exists."""
    experiment = spec.mlflow.experiment or spec.name
    spec_yaml = yaml.safe_dump(spec.model_dump(), sort_keys=False)
    (folder.local / SPEC_FILE).write_text(spec_yaml)
    folder.publish(folder.local / SPEC_FILE)
    tracker.log_spec(spec.model_dump(), spec_text, commit)
    print(
        f"\nwatch it:\n  Ray dashboard: {dashboard or '(see the Ray cluster)'}"
        "  (token: run `ray get-auth-token`)\n"
        f"  MLflow: {where_to_look(tracker.uri, tracker.experiment_id)}"
        f"   (parent run '{folder.name}' in '{experiment}')\n"
    )

    run_cfg, banks = prepare_teacher_and_banks(spec, run_seeds(spec))
    log_teacher_uncertainty(tracker, run_cfg.teacher_dir, spec.loss.threshold)
    log_teacher_gating(tracker, spec, run_cfg.teacher_dir)
    callbacks = [
        trial_tracker(tracker, spec.students.epochs, spec.storage_location),
        PublishStudy(folder),
        StorageGuard(folder.location),
        KeepTuneState(),
    ]
    if spec.compare:
        return run_comparison(spec, folder, tracker, run_cfg.teacher_dir, train_storage, banks, resume, callbacks)
    return run_search(spec, folder, tracker, run_cfg.teacher_dir, train_storage, banks, resume, callbacks)


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
    grid = fit(tracker, folder.location, resume, trainable, lambda: build_tuner(spec, folder, trainable, callbacks))
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
