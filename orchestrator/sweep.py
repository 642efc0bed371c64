"""`python -m orchestrator.sweep SPEC.yaml [--set k=v] [--address A] [--resume] [--dry-run]`.

Ray Tune searches the spec's `search` section with Optuna (its study stored in the sweep folder),
ASHA stops weak trials, each trial is one TorchTrainer, and MLflow gets a parent run with one nested
run per trial. The teacher is prepared once, before any trial.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional

import yaml

from orchestrator.cli import check_outputs_persist, run_main, spec_parser, working_in
from orchestrator.execution import SPEC_FILE, SweepFolder, latest_sweep_folder, new_sweep_folder
from orchestrator.results import plan_of
from orchestrator.spec import Spec, SpecError, apply_overrides, load_raw, preflight, validate_spec, with_values
from trainables import storage


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = spec_parser("python -m orchestrator.sweep", __doc__.splitlines()[0])
    p.add_argument("--resume", action="store_true", help="continue the newest interrupted sweep of this spec")
    p.add_argument(
        "--force",
        action="store_true",
        help="with --resume: take training settings changed since the sweep started (named in the plan)",
    )
    p.add_argument(
        "--from-sweep",
        metavar="NAME",
        help="comparison: take the best values of this earlier sweep (its folder or spec name) from MLflow",
    )
    p.add_argument(
        "--dry-run", action="store_true", help="validate the spec, check its inputs and print the plan; start nothing"
    )
    return p.parse_args(argv)


def sweeps_root(spec: Spec) -> str:
    return storage.join(spec.storage_location, "sweeps")


def sweep_folder(spec: Spec, resume: bool, claim: bool = True) -> SweepFolder:
    """A new folder under STORAGE/sweeps (created unless not `claim`), or with `resume` the newest one of this
    spec's name."""
    root = sweeps_root(spec)
    if not resume:
        return new_sweep_folder(root, spec.name, claim=claim)
    found = latest_sweep_folder(root, spec.name)
    if found is None:
        raise SpecError(f"no sweep named {spec.name!r} under {root} to resume: run without --resume")
    return found


def read_store(uri: str):
    """A client of an MLflow store that exists, creating nothing (a dry run writes no file)."""
    from mlflow import MlflowClient

    from orchestrator.tracking import sqlite_path

    db = sqlite_path(uri)
    if db is not None and not db.is_file():
        raise SpecError(
            f"no MLflow store at {db} to read the earlier sweep from: run from the folder the search ran in, "
            "or give its --tracking-uri"
        )
    return MlflowClient(tracking_uri=uri)


def resume_check(spec: Spec, folder: SweepFolder, force: bool) -> list[str]:
    """With --resume: the plan's lines naming each setting changed since the sweep started (its spec.yaml);
    refused changes raise (`orchestrator.spec.resume_changes`)."""
    from orchestrator.spec import resume_lines, spec_changes

    saved = storage.read_text(storage.join(folder.location, SPEC_FILE))
    if saved is None:
        return ["resume: the sweep saved no spec to compare with (it stopped before its first trial)"]
    return resume_lines(spec_changes(yaml.safe_load(saved), spec.model_dump()), force)


def from_sweep(raw: dict, overrides: list[str], sweep_name: str, uri: str) -> tuple[Spec, list[str]]:
    """The comparison `raw` started from the recipe of an earlier sweep's best trial, read from MLflow
    (`orchestrator.spec.recipe`), and the plan's lines: where the recipe came from and what this spec overrides."""
    from orchestrator.results import best_params, best_trial, load_sweep, trials_table
    from orchestrator.spec import comparison_from_recipe

    earlier = load_sweep(read_store(uri), sweep_name)
    if earlier.spec.tune.pareto:
        raise SpecError(
            f"sweep {earlier.name!r} is a Pareto search with no one best trial: compare the values of "
            "one front trial (its pareto/tNN.yaml) instead of --from-sweep"
        )
    table = trials_table(earlier.trials, earlier.spec)
    best, params = best_trial(table, earlier.spec), best_params(table, earlier.spec)
    if best is None:
        raise SpecError(
            f"sweep {earlier.name!r} has no trial that measured {earlier.spec.tune.metric}: "
            "pick another sweep, or drop --from-sweep"
        )
    recipe = with_values(earlier.spec, params)
    spec, changed = comparison_from_recipe(raw, recipe, params, apply_overrides({}, overrides))
    metric = earlier.spec.tune.rank_metric[0]
    trial = earlier.names.get(best["trial_id"], best["trial_id"])
    lines = [
        f"recipe: the best trial of sweep {earlier.name} ({trial}, {metric} = {best[metric]:.4f}), searched values "
        + ", ".join(f"{k}={v}" for k, v in params.items())
    ]
    lines += [f"  {o.line()}" for o in changed] or ["  (no setting of this spec overrides the recipe)"]
    return spec, lines


def describe_plan(spec: Spec, folder: SweepFolder, uri: str, lines: tuple[str, ...] = ()) -> str:
    r, t = spec.resources, spec.tune
    per_trial = f"{r.num_workers} worker(s) x {r.cpus_per_worker} CPU" + (
        f" + {r.gpus_per_worker} GPU" if r.use_gpu else ""
    )
    space = "\n".join(f"    {k}: {v.model_dump(exclude_none=True)}" for k, v in spec.search.items()) or "    (none)"
    if spec.compare:
        c = spec.compare
        trials = f"{len(spec.variants())} fixed: methods {', '.join(c.methods)} x seeds {c.seeds}"
        if c.sequential:
            q, plan = c.sequential, plan_of(spec)
            decisions = f"from {plan.first_decision} seeds" if plan.first_decision else "none: too few seeds"
            trials += (
                f"; then one seed more at a time (every method) until {', '.join(q.methods)} against "
                f"{q.against} decide for every student, at most {q.max_seeds} seeds (sequential intervals, "
                f"{plan.look_level:.2%} per look; decisions {decisions})"
            )
        if c.budget_hours:
            trials += f"; no seed added past {c.budget_hours:g} resource-hours"
        scheduler = "FIFO (every trial runs all epochs)"
    else:
        objectives = " and ".join(f"{metric} ({mode})" for metric, mode in t.objectives)
        trials = f"{t.num_trials} (Optuna {'multi-objective ' if t.pareto else ''}TPE, seed {t.seed}) on {objectives}"
        if t.budget_hours:
            trials += f"; none started past {t.budget_hours:g} resource-hours"
        metric, mode = t.rank_metric
        scheduler = (
            f"ASHA on '{metric}' ({mode}), grace {t.grace_period} epochs, reduction {t.reduction_factor}"
            if t.scheduler == "asha"
            else "FIFO (every trial runs all epochs)"
        )
        if t.pareto and t.scheduler == "asha":
            scheduler += f"; early stopping follows {metric} alone, not the front"
        if t.scheduler == "asha" and t.grace_period >= spec.students.epochs:
            scheduler += f" (the grace period covers all {spec.students.epochs} epochs: no trial is stopped early)"
    return "\n".join(
        [
            f"{'comparison' if spec.compare else 'sweep'} {spec.name}: method {spec.loss.method}, "
            f"students {' + '.join(spec.students.archs)}, teacher {spec.teacher.arch}",
            *(f"  {line}" for line in lines),
            f"  data: {spec.data.name} at {spec.data.image_size} px"
            + (f" from {spec.data.root}" if spec.data.root else "")
            + (f", {spec.data.label_noise:.0%} of training labels noisy" if spec.data.label_noise else ""),
            *(
                [f"  teacher trains on its own labels: {spec.teacher.data.model_dump(exclude_none=True)}"]
                if spec.teacher.data
                else []
            ),
            f"  trials: {trials}, at most {t.max_concurrent_trials} at once, {spec.students.epochs} epochs each",
            f"  scheduler: {scheduler}",
            f"  per trial: {per_trial}",
            "  search:",
            space,
            f"  outputs: {folder}  (storage from {spec.storage_origin})",
            f"  teacher cache: {storage.join(spec.storage_location, 'teachers')}",
            f"  MLflow: {uri}, experiment '{spec.mlflow.experiment or spec.name}'",
        ]
    )


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"  note: {note}")


def print_gating_view(spec: Optional[Spec]) -> None:
    """The teacher's weight at the searched thresholds when the teacher is cached (`orchestrator.teacher.gating`);
    nothing without a resolved spec, whose paths name the teacher folder the run will use."""
    if spec is None:
        return
    from orchestrator.teacher import cached_plan_lines  # matplotlib and pandas load only here

    for line in cached_plan_lines(spec):
        print(f"  {line}")


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    raw = load_raw(args.spec, args.overrides)
    spec = validate_spec(raw, args.spec)
    if not spec.search and not spec.compare:
        raise SpecError(
            f"{args.spec}: neither search nor compare is set: add settings to search, "
            "or use python -m orchestrator.train for one run"
        )
    from orchestrator.tracking import absolute_uri, tracking_uri

    uri = tracking_uri(args.tracking_uri or spec.mlflow.tracking_uri)
    check_outputs_persist(spec.storage_setting, uri)
    uri = absolute_uri(uri)  # MLflow caches a store by its URI: a relative one means whichever folder came first
    earlier, plan_lines = args.from_sweep or (spec.compare.from_sweep if spec.compare else None), []
    if earlier:
        if not spec.compare:
            raise SpecError("--from-sweep feeds a comparison: use it with a spec that has a compare section")
        spec, plan_lines = from_sweep(raw, args.overrides, earlier, uri)
    notes, written, resolved = [], spec, None  # the plan shows the settings as written (and where they came from)
    try:
        spec = resolved = spec.resolved()  # paths and environment variables: fixed before Ray starts
    except SpecError as err:
        if not args.dry_run:
            raise
        notes.append(f"{err} (before the real run)")
    if args.force and not args.resume:
        raise SpecError("--force takes the changes of a resumed sweep's spec: use it with --resume")
    if args.dry_run:  # the plan first, then what the checks found; nothing is created
        folder = sweep_folder(spec, args.resume, claim=False)
        plan_lines += resume_check(spec, folder, args.force) if args.resume else []
        print(describe_plan(written, folder, uri, plan_lines))
        print_gating_view(resolved)
        print_notes(notes)
        print_notes(
            preflight(spec, sweeps_root(spec), create=False, skip_data_check=args.skip_data_check, tracking_uri=uri)
        )
        return 0
    notes += preflight(spec, sweeps_root(spec), create=True, skip_data_check=args.skip_data_check, tracking_uri=uri)
    folder = sweep_folder(spec, args.resume)
    plan_lines += resume_check(spec, folder, args.force) if args.resume else []
    print(describe_plan(written, folder, uri, plan_lines))
    print_gating_view(spec)
    print_notes(notes)
    from orchestrator.search import run_sweep  # Ray, Tune and MLflow load only when the sweep runs
    from orchestrator.tracking import git_commit

    spec_text, commit = Path(args.spec).read_text(), git_commit()
    with working_in(folder.local):
        return run_sweep(spec, folder, uri, spec_text, commit, address=args.address, resume=args.resume)


if __name__ == "__main__":
    run_main(main)
