"""The methods as settings of the one loss, and the loss settings they take: no torch, so the driver validates a
spec without loading it (`trainables.losses` computes the loss itself).

A method (`ce`, `kd`, `dml`, `dual_kd`, `ua_kd`, `ua_dual`) is a preset of forced settings over the run's loss
config (see docs/science.md, "The loss"); `resolve_method` gives the settings `trainables.losses.students_loss`
takes, and refuses a combination that would silently be another method.
"""

from __future__ import annotations

from typing import Any, Mapping, Optional

WEIGHTINGS = ("none", "entropy", "threshold", "entropy+threshold")
PEER_WEIGHTINGS = ("uniform", "inverse")
GATED_WEIGHTINGS = ("threshold", "entropy+threshold")

# What each method forces; the remaining settings come from the run's loss config.
PRESETS: dict[str, dict[str, Any]] = {
    "ce": {"alpha": 0.0, "beta": 0.0, "weighting": "none"},  # student alone
    "kd": {"beta": 0.0, "weighting": "none"},  # Hinton KD
    "dml": {"alpha": 0.0, "weighting": "none"},  # deep mutual learning, no teacher
    "dual_kd": {"weighting": "none"},  # ablation: dual students without uncertainty weighting
    "ua_kd": {"beta": 0.0},  # ablation: uncertainty-weighted KD, one student
    "ua_dual": {},  # the paper's method
}
TWO_STUDENT_METHODS = ("dml", "dual_kd", "ua_dual")
SETTING_KEYS = ("temperature", "alpha", "beta", "weighting", "threshold", "peer_weighting")
REQUIRED_KEYS = ("temperature", "alpha", "beta", "weighting")


def check_threshold(threshold: Optional[float]) -> None:
    if threshold is not None and not (0.0 < float(threshold) <= 1.0):
        raise ValueError(f"loss.threshold must be in (0, 1] or None, got {threshold}: set it to a normalised entropy")


def resolve_method(settings: Mapping[str, Any]) -> dict[str, Any]:
    """The loss settings for `settings["method"]`: the preset's forced values over the rest.

    Returns a dict without `method`, ready for `student_loss(**...)` / `dual_student_loss(**...)`.
    Raises where a method would silently be another (uncertainty methods without weighting, DML
    without a peer, an `inverse` peer weight that is always 0).
    """
    settings = dict(settings)
    method = settings.pop("method", None)
    if method not in PRESETS:
        raise ValueError(f"loss.method must be one of {tuple(PRESETS)}, got {method!r}: pick one of those")
    unknown = sorted(set(settings) - set(SETTING_KEYS))
    if unknown:
        raise ValueError(f"unknown loss settings {unknown}: use only {SETTING_KEYS}")
    if method in ("ua_kd", "ua_dual") and settings.get("weighting") == "none":
        raise ValueError(
            f"loss.method {method!r} needs uncertainty weighting: set loss.weighting to entropy, threshold or"
            " entropy+threshold (or use method kd/dual_kd)"
        )
    resolved = {**settings, **PRESETS[method]}
    resolved.setdefault("threshold", None)
    resolved.setdefault("peer_weighting", "uniform")
    missing = [k for k in REQUIRED_KEYS if k not in resolved]
    if missing:
        raise ValueError(f"loss settings {missing} are missing for method {method!r}: set them in the loss config")
    if resolved["weighting"] not in WEIGHTINGS:
        raise ValueError(
            f"loss.weighting must be one of {WEIGHTINGS}, got {resolved['weighting']!r}: pick one of those"
        )
    if resolved["peer_weighting"] not in PEER_WEIGHTINGS:
        raise ValueError(
            f"loss.peer_weighting must be one of {PEER_WEIGHTINGS}, got {resolved['peer_weighting']!r}:"
            " pick one of those"
        )
    check_threshold(resolved["threshold"])
    if method == "dml" and resolved["beta"] <= 0:
        raise ValueError("loss.method 'dml' needs a peer term: set loss.beta > 0")
    if resolved["beta"] > 0 and resolved["peer_weighting"] == "inverse" and resolved["weighting"] == "none":
        raise ValueError(
            f"loss.peer_weighting 'inverse' with weighting 'none' (method {method!r}) gives the peer zero weight:"
            " set loss.peer_weighting to uniform"
        )
    return resolved


def needs_two_students(method: str) -> bool:
    """True for the methods whose point is a peer (dml, dual_kd, ua_dual); ce/kd/ua_kd take one or two."""
    if method not in PRESETS:
        raise ValueError(f"loss.method must be one of {tuple(PRESETS)}, got {method!r}: pick one of those")
    return method in TWO_STUDENT_METHODS


def needs_teacher(settings: Mapping[str, Any]) -> bool:
    """Whether the run needs teacher logits: alpha > 0, or an `inverse` peer weight with beta > 0.

    Accepts resolved settings, or raw ones with `method` (resolved first), so a run without a
    teacher (ce, dml) never trains or loads one.
    """
    if "method" in settings:
        settings = resolve_method(settings)
    alpha = float(settings.get("alpha", 0.0))
    beta = float(settings.get("beta", 0.0))
    return alpha > 0 or (beta > 0 and settings.get("peer_weighting", "uniform") == "inverse")
