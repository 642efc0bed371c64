"""From `python -m orchestrator.sweep`'s arguments to a running sweep: the spec read with its `--set` overrides and
validated, `--from-sweep`'s recipe, paths resolved, `--resume`'s changes, the pre-flight and the plan; `--dry-run`
stops there. Ray, Tune, MLflow and torch are not imported on the way (the plan's view of a cached teacher loads
torch): a dry run answers in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import yaml

from orchestrator.execution import (
    SPEC_FILE,
    SweepFolder,
    check_outputs_persist,
    latest_sweep_folder,
    new_sweep_folder,
    working_in,
)
from orchestrator.search.plan import cluster_warnings, describe_plan
from orchestrator.spec import (
    Spec,
    SpecError,
    apply_overrides,
    comparison_from_recipe,
    load_raw,
    preflight,
    resume_lines,
    spec_changes,
    validate_spec,
    with_values,
)
from orchestrator.teacher import cached_plan_lines
from orchestrator.tracking import absolute_uri, git_commit, tracking_uri
from trainables import storage


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


def resume_check(spec: Spec, folder: SweepFolder, force: bool) -> list[str]:
    """With --resume: the plan's lines naming each setting changed since the sweep started (its spec.yaml);
    refused changes raise (`orchestrator.spec.resume_changes`)."""
    saved = storage.read_text(storage.join(folder.location, SPEC_FILE))
    if saved is None:
        return ["resume: the sweep saved no spec to compare with (it stopped before its first trial)"]
    return resume_lines(spec_changes(yaml.safe_load(saved), spec.model_dump()), force)


def from_sweep(raw: dict, overrides: list[str], sweep_name: str, uri: str) -> tuple[Spec, list[str]]:
    """The comparison `raw` started from the recipe of an earlier sweep's best trial, read from MLflow
    (`orchestrator.spec.recipe`), and the plan's lines: where the recipe came from and what this spec overrides."""
    from orchestrator.results import best_params, best_trial, load_sweep, trials_table  # pandas, MLflow: here only
    from orchestrator.tracking import read_store

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


def print_notes(notes: list[str]) -> None:
    for note in notes:
        print(f"  note: {note}")


def print_gating_view(spec: Optional[Spec]) -> None:
    """The teacher's weight at the searched thresholds when the teacher is cached (`orchestrator.teacher.gating`);
    nothing without a resolved spec, whose paths name the teacher folder the run will use."""
    if spec is None:
        return
    for line in cached_plan_lines(spec):
        print(f"  {line}")


@dataclass(frozen=True)
class Launched:
    """What a launch came to: the command's exit status, and the sweep folder it ran in (a dry run's: the folder
    it would take, not created)."""

    code: int
    folder: SweepFolder


def launch_sweep(spec_file: str, overrides: list[str], **options) -> int:
    """`python -m orchestrator.sweep` once its arguments are parsed: `start_sweep`'s exit status."""
    return start_sweep(spec_file, overrides, **options).code


def start_sweep(
    spec_file: str,
    overrides: list[str],
    *,
    address: Optional[str] = None,
    mlflow_uri: Optional[str] = None,
    skip_data_check: bool = False,
    resume: bool = False,
    force: bool = False,
    earlier_sweep: Optional[str] = None,
    dry_run: bool = False,
) -> Launched:
    """The spec read, resolved and checked, the plan printed; then, unless `dry_run`, the sweep run
    (`driver.run_sweep`). `earlier_sweep`: `--from-sweep`. The command and the Python API both come here."""
    raw = load_raw(spec_file, overrides)
    spec = validate_spec(raw, spec_file, overrides)
    if not spec.search and not spec.compare:
        raise SpecError(
            f"{spec_file}: neither search nor compare is set: add settings to search, "
            "or use python -m orchestrator.train for one run"
        )
    uri = tracking_uri(mlflow_uri or spec.mlflow.tracking_uri)
    check_outputs_persist(spec.storage_setting, uri)
    uri = absolute_uri(uri)  # MLflow caches a store by its URI: a relative one means whichever folder came first
    earlier, plan_lines = earlier_sweep or (spec.compare.from_sweep if spec.compare else None), []
    if earlier:
        if not spec.compare:
            raise SpecError("--from-sweep feeds a comparison: use it with a spec that has a compare section")
        spec, plan_lines = from_sweep(raw, overrides, earlier, uri)
    notes, written, resolved = (
        cluster_warnings(spec, uri, address or os.environ.get("RAY_ADDRESS")),
        spec,
        None,
    )  # the plan shows the settings as written (and where they came from)
    try:
        spec = resolved = spec.resolved()  # paths and environment variables: fixed before Ray starts
    except SpecError as err:
        if not dry_run:
            raise
        notes.append(f"{err} (before the real run)")
    if force and not resume:
        raise SpecError("--force takes the changes of a resumed sweep's spec: use it with --resume")
    if dry_run:  # the plan first, then what the checks found; nothing is created
        folder = sweep_folder(spec, resume, claim=False)
        plan_lines += resume_check(spec, folder, force) if resume else []
        print(describe_plan(written, folder, uri, plan_lines, resolved))
        print_gating_view(resolved)
        print_notes(notes)
        print_notes(preflight(spec, sweeps_root(spec), create=False, skip_data_check=skip_data_check, tracking_uri=uri))
        return Launched(0, folder)
    notes += preflight(spec, sweeps_root(spec), create=True, skip_data_check=skip_data_check, tracking_uri=uri)
    folder = sweep_folder(spec, resume)
    plan_lines += resume_check(spec, folder, force) if resume else []
    print(describe_plan(written, folder, uri, plan_lines, resolved))
    print_gating_view(spec)
    print_notes(notes)
    from orchestrator.search.driver import run_sweep  # Ray, Tune and MLflow load only when the sweep runs

    spec_text, commit = Path(spec_file).read_text(), git_commit()
    with working_in(folder.local):
        return Launched(run_sweep(spec, folder, uri, spec_text, commit, address=address, resume=resume), folder)
