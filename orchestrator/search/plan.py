"""The plan a sweep prints before it starts (and `--dry-run` prints alone): what will run, where, on what
resources, and where its outputs and runs go.
"""

from __future__ import annotations

from orchestrator.execution import SweepFolder
from orchestrator.spec import Spec
from trainables import storage


def sequential_plan(spec: Spec):
    """The sequential comparison's looks (`orchestrator.results.sequential`: numpy and scipy load only here)."""
    from orchestrator.results import plan_of

    return plan_of(spec)


def lost_node(spec: Spec) -> str:
    """What a worker or node that vanishes mid-trial costs: each epoch ends with a checkpoint."""
    restarts = spec.resources.max_failures
    where = f"up to {restarts} times a trial (resources.max_failures)" if restarts else "once (Tune's restart)"
    return (
        f"its trials continue from their last epoch's checkpoint on any node with room, {where}; "
        "each loss costs the epoch in progress and a worker start"
    )


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
            f"  a lost worker or node: {lost_node(spec)}",
            "  search:",
            space,
            f"  outputs: {folder}  (storage from {spec.storage_origin})",
            f"  teacher cache: {storage.join(spec.storage_location, 'teachers')}",
            f"  MLflow: {uri}, experiment '{spec.mlflow.experiment or spec.name}'",
        ]
    )
