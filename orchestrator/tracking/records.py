"""What a run's MLflow record holds: the tags that find it again, its name, its settings as flat params, which
reported figures are curves (metrics) and which are constants (params), and the commit it ran.

Pure functions on plain dicts: no MLflow here.
"""

from __future__ import annotations

import os
import subprocess
from typing import Any, Optional

from trainables.methods import PRESETS
from trainables.metric_names import BAD_IMAGES_KEY, TEACHER_FORWARDS_KEY

SWEEP_TAG = "dualkd.sweep"
TRIAL_TAG = "dualkd.trial_id"
MAX_PARAM_LENGTH = 6000
RUN_METRICS = (
    "epoch",
    "val_top1_mean",
    "teacher_weight",
    "gated",
    "images_per_s",
    "epoch_seconds",
    "lr",
    BAD_IMAGES_KEY,
    TEACHER_FORWARDS_KEY,
)
PROFILE_SUFFIXES = ("/params", "/params_1000", "/flops")
# Searched settings as they read in a run name: `t07 tau=0.68 T=3.6 a=0.58 b=1.09`.
SHORT_NAMES = {"loss.threshold": "tau", "loss.temperature": "T", "loss.alpha": "a", "loss.beta": "b"}


def is_constant(key: str) -> bool:
    """A figure that never changes during a run (model sizes, the frozen teacher's accuracy): a param, not a curve."""
    return key.startswith("teacher/") or key.endswith(PROFILE_SUFFIXES)


def _reported(result: dict) -> dict[str, float]:
    """What the loop reported (per-student keys hold a '/'), without Tune's bookkeeping."""
    return {
        k: float(v)
        for k, v in result.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and ("/" in k or k in RUN_METRICS)
    }


def numeric_metrics(result: dict) -> dict[str, float]:
    """The reported figures that change over epochs: the run's metric histories."""
    return {k: v for k, v in _reported(result).items() if not is_constant(k)}


def constant_figures(result: dict) -> dict[str, str]:
    """The constants as param values: counts as integers, accuracies as they are."""
    return {k: str(int(v)) if v.is_integer() else repr(v) for k, v in _reported(result).items() if is_constant(k)}


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def run_name(number: int, values: dict[str, Any]) -> str:
    """A comparison trial is `ua_dual seed 1`; a sweep trial its number and searched values."""
    if set(values) == {"loss.method", "seed"}:
        return f"{values['loss.method']} seed {values['seed']}"
    order = list(SHORT_NAMES)  # the loss's four first, as the paper names them; then the rest as given
    keys = sorted(values, key=lambda k: order.index(k) if k in order else len(order))
    return " ".join(
        [f"t{number:02d}", *(f"{SHORT_NAMES.get(k, k.rsplit('.', 1)[-1])}={_short(values[k])}" for k in keys)]
    )


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def settings_params(spec_dict: dict, values: Optional[dict[str, Any]] = None) -> dict[str, Any]:
    """Every setting of a resolved spec dump as a flat param (`students.epochs`), with a trial's `values` (its
    searched point, or a comparison's method and seed) set and the loss settings its method forces as the run
    trains them (`loss.alpha` 0 for ce): so the runs table compares any setting. The search entries are left out
    (a run holds its values instead)."""
    params = {k: v for k, v in flatten(spec_dict).items() if not k.startswith("search.")}
    params.update(values or {})
    for key, forced in PRESETS.get(params.get("loss.method"), {}).items():
        if f"loss.{key}" in params:
            params[f"loss.{key}"] = forced
    return params


def git_commit() -> Optional[str]:
    """The commit of the checkout the command runs in. A `ray job submit` upload has no .git (and its
    folder may be replaced while Ray starts): the submitter can pass the commit as DUALKD_GIT_COMMIT."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=os.getcwd(), capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        out = None
    if out is not None and out.returncode == 0:
        return out.stdout.strip()
    return os.environ.get("DUALKD_GIT_COMMIT") or None
