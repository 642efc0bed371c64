"""What MLflow holds of one sweep, read back: its spec, and per trial its values, final metrics and state
(`load_sweep`), found by its folder's name or, for the newest one, its spec's name.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml
from mlflow import MlflowClient

from orchestrator.execution import sweep_order
from orchestrator.spec import Spec, SpecError
from orchestrator.tracking import PARENT_TAG, SWEEP_TAG, TRIAL_TAG, is_constant

CONFIG_ARTIFACT = "resolved_config.json"
TEACHER_LOGITS_ARTIFACT = "teacher_train_logits.pt"
# MLflow shows a progress bar per download unless told not to: one line per artifact is noise here.
QUIET_DOWNLOADS = {"MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false"}


@dataclass
class LoggedSweep:
    """What MLflow holds of one sweep: its spec, and per trial its values, final metrics and state."""

    name: str
    parent_id: str
    spec: Spec
    trials: list[dict] = field(default_factory=list)
    child_ids: dict[str, str] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # trial id -> the number its run's name starts with


def _param_value(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def find_parent(client: MlflowClient, name: str):
    """The parent run of sweep folder `name`, or of the newest sweep of spec `name`."""
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, f"tags.`{TRIAL_TAG}` = 'parent'", max_results=5000)
    exact = [r for r in runs if r.data.tags.get(SWEEP_TAG) == name]
    named = sorted(
        (r for r in runs if sweep_order(r.data.tags.get(SWEEP_TAG, ""), name)),
        key=lambda r: sweep_order(r.data.tags[SWEEP_TAG], name),
    )
    found = exact or named[-1:]
    if not found:
        raise SpecError(
            f"no sweep named {name!r} in MLflow at {client.tracking_uri}: "
            "give a sweep folder's name or a spec name, and the right --tracking-uri"
        )
    return found[0]


def load_sweep(client: MlflowClient, name: str) -> LoggedSweep:
    parent = find_parent(client, name)
    config_path = download(client, parent.info.run_id, CONFIG_ARTIFACT)
    if not config_path:
        raise SpecError(f"sweep {name!r} has no {CONFIG_ARTIFACT} in MLflow: it was not logged by this tool")
    spec = Spec.model_validate(json.loads(Path(config_path).read_text()))
    sweep = LoggedSweep(parent.data.tags[SWEEP_TAG], parent.info.run_id, spec)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'", max_results=5000
    )
    own = {*spec.search, *(key for variant in spec.variants() for key in variant)}  # what each trial was given
    for child in sorted(children, key=lambda r: r.info.start_time):
        trial_id = child.data.tags.get(TRIAL_TAG, child.info.run_id)
        sweep.child_ids[trial_id] = child.info.run_id
        sweep.names[trial_id] = (child.info.run_name or trial_id).split()[0]
        # a trial's run logs every setting; its table row holds the values the trial was given, as Tune's does
        params = {k: _param_value(v) for k, v in child.data.params.items() if k in own or is_constant(k)}
        constants = {k: float(params.pop(k)) for k in list(params) if is_constant(k)}  # sizes, teacher top-1
        sweep.trials.append(
            {
                "trial_id": trial_id,
                "params": params,
                "metrics": {**child.data.metrics, **constants},
                "error": child.data.tags.get("error") if child.info.status == "FAILED" else None,
            }
        )
    return sweep


def download(client: MlflowClient, run_id: str, path: str) -> Optional[str]:
    """The run's artifact at `path`, downloaded into a new temporary folder; None when the run has none."""
    for key, value in QUIET_DOWNLOADS.items():
        os.environ.setdefault(key, value)
    names = {a.path for a in client.list_artifacts(run_id)}
    return client.download_artifacts(run_id, path, tempfile.mkdtemp()) if path in names else None
