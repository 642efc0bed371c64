"""A ready-to-run spec of a sweep's best trial (`best.yaml`) or of a Pareto-front trial (`pareto/tNN.yaml`): the
spec with the trial's values fixed and no search, so `python -m orchestrator.train` trains exactly them.
"""

from __future__ import annotations

from typing import Optional

import yaml

from orchestrator.results.formatting import plain_value
from orchestrator.spec import Spec, with_values

FROM_SWEEP_TAG = "dualkd.from_sweep"
PARETO_DIR = "pareto"


def best_spec_yaml(
    spec: Spec,
    params: dict,
    trial_id: Optional[str] = None,
    figures: Optional[dict] = None,
    sweep_name: Optional[str] = None,
    label: str = "best",
) -> str:
    """The spec with `params` fixed and no search, so `python -m orchestrator.train` trains exactly them.

    `label` names the spec (`NAME-best`, or a front trial's `NAME-t03`) and the file it is written to.
    Its runs carry the MLflow tag `dualkd.from_sweep`: where the values came from."""
    values = {key: plain_value(value) for key, value in params.items()}
    tags = {**spec.mlflow.tags, **({FROM_SWEEP_TAG: sweep_name} if sweep_name else {})}
    best = with_values(spec, {**values, "name": f"{spec.name}-{label}", "search": {}, "mlflow.tags": tags})
    source = f"trial {trial_id}" if trial_id else "the best trial"
    if figures:
        source += " (" + ", ".join(f"{metric} = {value:.4f}" for metric, value in figures.items()) + ")"
    kind = "Best values" if label == "best" else "Values of a Pareto-front trial"
    file = "best.yaml" if label == "best" else f"{PARETO_DIR}/{label}.yaml"
    header = (
        f"# {kind} of sweep {spec.name!r}, from {source}:\n"
        + "".join(f"#   {key}: {value}\n" for key, value in values.items())
        + f"# Train it: python -m orchestrator.train {file}\n"
    )
    raw = best.model_dump(mode="json")
    return header + yaml.safe_dump({"name": raw.pop("name"), **raw}, sort_keys=False)
