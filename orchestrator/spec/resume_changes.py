"""What a `--resume` finds changed in the spec since the sweep started, and which changes it may take.

A resumed sweep rebuilds its trials from the spec as it is now, while Tune's and Optuna's saved state hold
what was searched so far: a changed training setting would give the rest of the trials another recipe than
the first ones, in one table. So every changed setting is named; those that change how much is run, or where,
are taken (the trial count, the budgets, the resources per trial, MLflow's address and wait), and so are the
tables' paired references (no trial trains differently); any other one is refused in one line, unless
`--force`, for those who mean it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from orchestrator.spec.dotted import dotted_items
from orchestrator.spec.schema import SpecError

TAKEN = (
    "tune.num_trials",
    "tune.budget_hours",
    "compare.budget_hours",
    "compare.references",
    "compare.sequential.max_seeds",
    "resources.",
    "teacher_resources.",
    "mlflow.tracking_uri",
    "mlflow.send_timeout_s",
)


@dataclass(frozen=True)
class Change:
    key: str
    before: Any
    now: Any

    @property
    def taken(self) -> bool:
        return any(self.key == k or (k.endswith(".") and self.key.startswith(k)) for k in TAKEN)

    def line(self) -> str:
        return f"{self.key}: {self.before} -> {self.now}"


def spec_changes(saved: dict, current: dict) -> list[Change]:
    """Every setting whose value differs between two spec dumps (dotted keys, in the current spec's order)."""
    before, now = dotted_items(saved), dotted_items(current)
    keys = list(now) + [k for k in before if k not in now]
    return [Change(k, before.get(k), now.get(k)) for k in keys if before.get(k) != now.get(k)]


def resume_lines(changes: list[Change], force: bool) -> list[str]:
    """The plan's lines on the changes; a SpecError naming the refused ones unless `force`."""
    refused = [c for c in changes if not c.taken]
    if refused and not force:
        raise SpecError(
            "--resume: the spec changed since the sweep started in "
            + "; ".join(c.line() for c in refused)
            + ": the rest of its trials would train another recipe than the first; put the settings back, "
            "start a new sweep without --resume, or add --force to resume with them"
        )
    if not changes:
        return ["resume: the spec is the one the sweep started with"]
    return [f"resume with a changed spec: {c.line()}" + ("" if c.taken else " (taken with --force)") for c in changes]
