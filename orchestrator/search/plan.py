"""The plan a sweep prints before it starts (and `--dry-run` prints alone): what will run, where, on what
resources, and where its outputs and runs go.
"""

from __future__ import annotations

from typing import Optional

from orchestrator.execution import SweepFolder
from orchestrator.spec import Spec
from trainables import storage


def count(n: float, noun: str) -> str:
    """`1 epoch`, `2 epochs`, `0.5 CPU`: a number and its noun."""
    return f"{n:g} {noun}{'' if n == 1 or noun.isupper() else 's'}"


def per_trial(spec: Spec) -> str:
    """Each trial's workers, what each one reserves, and their sum."""
    r = spec.resources
    each = count(r.cpus_per_worker, "CPU") + (f" + {count(r.gpus_per_worker, 'GPU')}" if r.use_gpu else "")
    total = count(r.num_workers * r.cpus_per_worker, "CPU") + (
        f" + {count(r.num_workers * r.gpus_per_worker, 'GPU')}" if r.use_gpu else ""
    )
    return f"{count(r.num_workers, 'worker')}, each {each}" + (f" ({total} in all)" if r.num_workers > 1 else "")


def totals(spec: Spec, trials: int, more_later: bool) -> str:
    """The trial-epochs to run (at least that many with seeds `more_later`, at most with ASHA) and what the trials
    running at once reserve."""
    r, at_once = spec.resources, min(spec.tune.max_concurrent_trials, trials)
    reserved = count(at_once * r.num_workers * r.cpus_per_worker, "CPU") + (
        f" + {count(at_once * r.num_workers * r.gpus_per_worker, 'GPU')}" if r.use_gpu else ""
    )
    bound = " at least" if more_later else " at most" if not spec.compare and spec.tune.scheduler == "asha" else ""
    runs = f"{count(trials, 'trial')} x {count(spec.students.epochs, 'epoch')}"
    return (
        f"{runs} = {trials * spec.students.epochs} trial-epochs{bound}; "
        f"{count(at_once, 'trial')} at once reserve {reserved} and {count(at_once, 'TRAIN_DRIVER slot')}"
    )


def cluster_warnings(spec: Spec, uri: str, address: Optional[str]) -> list[str]:
    """What a sweep that joins a cluster keeps on this machine only: a local storage it did not choose, a sqlite
    store."""
    if not address or address == "local":
        return []
    warnings = []
    if spec.storage_origin == "the default" or not (
        storage.is_uri(spec.storage_setting) or spec.storage_setting.startswith("/")
    ):
        warnings.append(
            f"--address joins a cluster, but the storage is {spec.storage_location}, a folder on this machine: "
            "workers on other nodes cannot read the teacher or keep checkpoints there unless every node mounts "
            "it at that path; set DUALKD_STORAGE (or --set storage=) to a shared folder or s3://bucket/prefix"
        )
    if uri.startswith("sqlite:"):
        warnings.append(
            f"--address joins a cluster, but MLflow's store is {uri}, a file on this machine: the runs stay "
            "here (the driver writes them all); use an http:// tracking server to see them from elsewhere"
        )
    return warnings


def sequential_plan(spec: Spec):
    """The sequential comparison's looks (`orchestrator.results.sequential`: numpy and scipy load only here)."""
    from orchestrator.results import plan_of

    return plan_of(spec)


def paired_against(compare) -> str:
    """What each method is paired with, and which references are not compared (their columns stay empty)."""
    compared = [ref for ref in compare.references if ref in compare.methods]
    absent = compare.uncompared_references()
    words = f"each paired, seed by seed, against {', '.join(compared)}" if compared else "paired against none"
    if absent:
        one = len(absent) == 1
        words += f"; {', '.join(absent)} {'is' if one else 'are'} not compared: {'its' if one else 'their'} "
        words += "columns stay empty"
    return words


def lost_node(spec: Spec) -> str:
    """What a worker or node that vanishes mid-trial costs: each epoch ends with a checkpoint."""
    restarts = spec.resources.max_failures
    where = "once (by Tune)"
    if restarts:
        where = f"up to {restarts} times a trial (resources.max_failures) and once more by Tune"
    return (
        f"its trials continue from their last epoch's checkpoint on any node with room, {where}; "
        "each loss costs the epoch in progress and a worker start"
    )


def describe_plan(
    spec: Spec, folder: SweepFolder, uri: str, lines: tuple[str, ...] = (), resolved: Optional[Spec] = None
) -> str:
    """The plan of `spec` as written; `resolved` (when its variables could be resolved) shows what they are."""
    t = spec.tune
    root = spec.data.root
    if root and resolved and resolved.data.root != root:
        root = f"{resolved.data.root} ({root})"
    space = "\n".join(f"    {k}: {v.model_dump(exclude_none=True)}" for k, v in spec.search.items()) or "    (none)"
    if spec.compare:
        c = spec.compare
        trial_count, more_later = len(spec.variants()), bool(c.sequential)
        trials = f"{trial_count} fixed: {count(len(c.methods), 'method')} x seeds {c.seeds}"
        trials += f" ({paired_against(c)})"
        if c.sequential:
            q, plan = c.sequential, sequential_plan(spec)
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
        trial_count, more_later = t.num_trials, False
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
            scheduler += (
                f" (the grace period covers all {count(spec.students.epochs, 'epoch')}: no trial is stopped early)"
            )
    epochs = count(spec.students.epochs, "epoch")
    methods = f"methods {', '.join(spec.compare.methods)}" if spec.compare else f"method {spec.loss.method}"
    return "\n".join(
        [
            f"{'comparison' if spec.compare else 'sweep'} {spec.name}: {methods}, "
            f"students {' + '.join(spec.students.archs)}, teacher {spec.teacher.arch}",
            *(f"  {line}" for line in lines),
            f"  data: {spec.data.name} at {spec.data.image_size} px"
            + (f" from {root}" if root else "")
            + (f", {spec.data.label_noise:.0%} of training labels noisy" if spec.data.label_noise else ""),
            *(
                [f"  teacher trains on its own view of the data: {spec.teacher.data.model_dump(exclude_none=True)}"]
                if spec.teacher.data
                else []
            ),
            f"  trials: {trials}, at most {t.max_concurrent_trials} at once, {epochs} each",
            f"  scheduler: {scheduler}",
            f"  per trial: {per_trial(spec)}",
            f"  in all: {totals(spec, trial_count, more_later)}",
            f"  a lost worker or node: {lost_node(spec)}",
            "  search:",
            space,
            f"  outputs: {folder}  (storage from {spec.storage_origin})",
            f"  teacher cache: {storage.join(spec.storage_location, 'teachers')}",
            f"  MLflow: {uri}, experiment '{spec.mlflow.experiment or spec.name}'",
        ]
    )
