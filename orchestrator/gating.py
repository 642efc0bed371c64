"""The teacher's weight w(x) across `loss.threshold`, before any trial: what a threshold range gates out.

Users pick the search range of `loss.threshold` blind: a range above every sample's uncertainty gates
nothing, one below most of it leaves the teacher little to say. Once the teacher is cached, its
training-set logits tell: the plan prints the share of samples gated out and the mean w at the range's
ends and middle, and the parent run gets the whole curve (`teacher_gating.png`, `teacher_gating.csv`)
and those figures as metrics. The maths is `trainables.losses`' own, so the view is what trials compute.
"""

from __future__ import annotations

import json
import math
import pickle
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterable, Iterator, Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # plots are files; a sweep often runs without a display

import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from orchestrator.spec import CategoricalParam, Spec  # noqa: E402
from trainables import bank, storage  # noqa: E402
from trainables.failures import one_line  # noqa: E402
from trainables.losses import normalized_entropy, teacher_certainty  # noqa: E402
from trainables.methods import GATED_WEIGHTINGS, resolve_method
from trainables.teacher_cache import SOFT_LABELS_FILE, is_cached, teacher_dir  # noqa: E402

THRESHOLD_KEY = "loss.threshold"
WEIGHTING_KEY = "loss.weighting"
PLOT_FILE = "teacher_gating.png"
CSV_FILE = "teacher_gating.csv"
METRIC_PREFIX = "teacher_gate"
GRID = tuple(i / 100 for i in range(1, 101))  # the plot's thresholds: (0, 1] in steps of 0.01
# What reading a cached teacher's files can raise: a missing or unreachable file, a truncated or foreign one.
READ_ERRORS = (OSError, RuntimeError, ValueError, EOFError, pickle.UnpicklingError)


# --------------------------------------------------------------------------- the curve


def gating_curve(train_logits: torch.Tensor, weighting: str, thresholds: Iterable[float]) -> pd.DataFrame:
    """Per threshold: the share of samples gated out (u > threshold) and the mean w over all samples (float64).

    Gated samples count as w = 0 in the mean, as they do in the loss; a weighting that does not gate (`none`,
    `entropy`) gates nothing, as `students_loss` reports it. u and the ungated w come from `trainables.losses`
    once, and each threshold only applies the loss's gate (compared in float32, as there): recomputing the
    entropies per threshold took two minutes for a 100-point curve over ImageNet-100's training set.
    """
    u = normalized_entropy(train_logits)
    w = teacher_certainty(train_logits, weighting, None).double()
    never = torch.zeros_like(u, dtype=torch.bool)
    rows = []
    for t in thresholds:
        gated = u > float(t) if weighting in GATED_WEIGHTINGS else never
        rows.append(
            {
                "threshold": float(t),
                "share_gated": gated.double().mean().item(),
                "mean_weight": w.masked_fill(gated, 0.0).mean().item(),
            }
        )
    return pd.DataFrame(rows, columns=["threshold", "share_gated", "mean_weight"], dtype="float64")


# --------------------------------------------------------------------------- what the spec searches


def _valid(value: object) -> bool:
    """A threshold a trial can run with; others (a null choice, 0, a string) show nothing."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0.0 < float(value) <= 1.0


def thresholds_to_show(spec: Spec) -> dict[str, float]:
    """Label -> threshold: a searched range's low, middle (geometric on a log scale) and high ends, a categorical
    search's choices, or the fixed `loss.threshold`; empty when no threshold is set or searched."""
    param = spec.search.get(THRESHOLD_KEY)
    if isinstance(param, CategoricalParam):
        shown = {f"{c:g}": float(c) for c in param.choices if _valid(c)}
    elif param is not None:
        mid = math.sqrt(param.low * param.high) if param.log else (param.low + param.high) / 2
        shown = {"low": param.low, "mid": mid, "high": param.high}
    else:
        shown = {"threshold": spec.loss.threshold}
    return {label: float(t) for label, t in shown.items() if _valid(t)}


def search_range(spec: Spec) -> Optional[tuple[float, float]]:
    """The searched span of `loss.threshold` (a categorical's smallest and largest choice), or None."""
    param = spec.search.get(THRESHOLD_KEY)
    if isinstance(param, CategoricalParam):
        values = list(thresholds_to_show(spec).values())
        return (min(values), max(values)) if len(values) > 1 else None
    return None if param is None else (float(param.low), float(param.high))


def shown_weighting(spec: Spec) -> str:
    """The weighting the view is computed for: the one the spec's method trains with.

    When `loss.weighting` is searched, trials differ, and only a gating weighting shows what the threshold
    does: the spec's own if it gates, else the first gating choice, else `entropy+threshold`. One curve is
    shown rather than one per choice, since the plan is meant to be read at a glance.
    """
    fixed = resolve_method(spec.loss.settings())["weighting"]  # a method may force one (kd: none)
    param = spec.search.get(WEIGHTING_KEY)
    if not isinstance(param, CategoricalParam):
        return fixed
    return next((w for w in [fixed, *param.choices] if w in GATED_WEIGHTINGS), "entropy+threshold")


# --------------------------------------------------------------------------- the plan and the parent run


def _header(spec: Spec, weighting: str, samples: int) -> str:
    line = f"teacher weight w by {THRESHOLD_KEY} on its {samples:,} training samples, weighting {weighting}"
    if WEIGHTING_KEY in spec.search:
        line += f" ({WEIGHTING_KEY} is searched: shown for {weighting})"
    elif weighting not in GATED_WEIGHTINGS:
        line += " (it does not gate: the threshold changes nothing)"
    return line + ":"


def shown_points(spec: Spec, train_logits: torch.Tensor) -> pd.DataFrame:
    """The curve at the thresholds to show, indexed by their labels (low, mid, high; threshold; or a choice)."""
    shown = thresholds_to_show(spec)
    return gating_curve(train_logits, shown_weighting(spec), shown.values()).set_axis(list(shown), axis=0)


def plan_lines(spec: Spec, train_logits: torch.Tensor) -> list[str]:
    """A header and one line per threshold to show, e.g. `teacher weight at loss.threshold 0.300 (low): 42.1 %
    of training samples gated out, mean w 0.412`; [] when the spec sets and searches no threshold."""
    points = shown_points(spec, train_logits)
    if points.empty:
        return []
    lines = [_header(spec, shown_weighting(spec), len(train_logits))]
    for label, row in points.iterrows():
        which = f" ({label})" if label in ("low", "mid", "high") else ""
        lines.append(
            f"teacher weight at {THRESHOLD_KEY} {row.threshold:.3f}{which}: {100 * row.share_gated:.1f} % "
            f"of training samples gated out, mean w {row.mean_weight:.3f}"
        )
    return lines


def plot_gating_curve(
    curve_df: pd.DataFrame,
    search_range: Optional[tuple[float, float]],
    out_path: str | Path,
    title: Optional[str] = None,
) -> Path:
    """Share gated out and mean w against the threshold, the searched range shaded."""
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(curve_df["threshold"], curve_df["share_gated"], color="C3", label="share gated out (u > threshold)")
    ax.plot(curve_df["threshold"], curve_df["mean_weight"], color="C0", label="mean teacher weight w")
    if search_range is not None:
        ax.axvspan(*search_range, color="grey", alpha=0.2, label=f"searched {THRESHOLD_KEY}")
    ax.set_xlim(0, 1)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(f"{THRESHOLD_KEY} (teacher normalised entropy u = H / log C)")
    ax.set_ylabel("share of training samples / mean w")
    ax.set_title(title or "Teacher weight against the threshold")
    ax.legend()
    out = Path(out_path)
    fig.savefig(out, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return out


def log_gating_curve(
    journal, parent_run_id: str, spec: Spec, train_logits: torch.Tensor, tmp_dir: str | Path
) -> dict[str, float]:
    """Log the curve on `parent_run_id` (a run of `journal`, an `orchestrator.journal.Journal`):
    `teacher_gating.png` and `.csv` as artifacts,
    and per shown threshold `teacher_gate/share_gated_at_LABEL` and `teacher_gate/mean_w_at_LABEL` (LABEL:
    low, mid, high; threshold; or a categorical choice) as metrics. Logs nothing when no threshold is
    set or searched. Returns the metrics."""
    points = shown_points(spec, train_logits)
    if points.empty:
        return {}
    weighting = shown_weighting(spec)
    out = Path(tmp_dir)
    out.mkdir(parents=True, exist_ok=True)
    curve = gating_curve(train_logits, weighting, GRID)
    curve.to_csv(out / CSV_FILE, index=False)
    plot_gating_curve(
        curve,
        search_range(spec),
        out / PLOT_FILE,
        title=f"{spec.name}: teacher weight ({weighting}), {len(train_logits):,} training samples",
    )
    for name in (PLOT_FILE, CSV_FILE):
        journal.log_artifact(parent_run_id, str(out / name))
    metrics = {}
    for label, row in points.iterrows():
        metrics[f"{METRIC_PREFIX}/share_gated_at_{label}"] = float(row.share_gated)
        metrics[f"{METRIC_PREFIX}/mean_w_at_{label}"] = float(row.mean_weight)
    for key, value in metrics.items():
        journal.log_metric(parent_run_id, key, value)
    return metrics


# --------------------------------------------------------------------------- the cached teacher's logits


@contextmanager
def _local(folder: str, names: Sequence[str]) -> Iterator[Path]:
    """A local folder holding `names` of `folder`: itself when local, else a temporary download of those files
    alone (`storage.local_copy` would fetch the teacher's whole folder, every bank epoch included, and keep it)."""
    if not storage.is_uri(folder):
        yield Path(folder)
        return
    with tempfile.TemporaryDirectory(prefix="dualkd-gating-") as tmp:
        for name in names:
            storage.download(storage.join(folder, name), Path(tmp) / name)
        yield Path(tmp)


def _first_bank(teacher_folder: str) -> Optional[str]:
    banks = storage.join(teacher_folder, "banks")
    return next(
        (storage.join(banks, key) for key in storage.subfolders(banks) if bank.is_built(storage.join(banks, key))), None
    )


def _bank_logits(bank_dir: str) -> torch.Tensor:
    """Bank epoch 0's logits (on that epoch's augmented views), without the rows of images the bank skipped as
    unreadable: those are all 0, which would read as a uniform, fully unsure teacher."""
    meta = json.loads(storage.read_text(storage.join(bank_dir, bank.META_FILE)) or "{}")
    names = [bank.META_FILE, *(bank.shard_name(0, rank, meta["world"]) for rank in range(meta["world"]))]
    with _local(bank_dir, names) as local:
        _, logits = bank.Bank(str(local)).epoch(0)
    logits = logits.float()
    return logits[logits.ne(0).any(dim=1)]


def train_logits_of(teacher_dir: str) -> Optional[torch.Tensor]:
    """The cached teacher's training-set logits (float32): its soft labels, else its first soft-label bank's
    first epoch; None when it has neither (`teacher.cache_soft_labels` off). Raises one of READ_ERRORS on a
    file that cannot be read."""
    if storage.exists(storage.join(teacher_dir, SOFT_LABELS_FILE)):
        with _local(teacher_dir, [SOFT_LABELS_FILE]) as local:
            logits = torch.load(local / SOFT_LABELS_FILE, map_location="cpu", weights_only=True)
        if not isinstance(logits, torch.Tensor):
            raise ValueError(f"{SOFT_LABELS_FILE} holds a {type(logits).__name__}, not a tensor of logits")
        return logits.float()
    found = _first_bank(teacher_dir)
    return _bank_logits(found) if found else None


def cached_plan_lines(spec: Spec) -> list[str]:
    """The plan's view of the teacher's weight, from the teacher cache alone: nothing is trained, built or kept.

    `spec` is resolved (`Spec.resolved`), so it names the teacher folder the run will use. A teacher that is not
    cached yet, or whose files cannot be read, is one line; [] when no threshold is set or searched.
    """
    if not thresholds_to_show(spec):
        return []
    try:
        folder = teacher_dir(storage.join(spec.storage_location, "teachers"), spec)
    except OSError:  # a missing teacher.checkpoint, which names the teacher: the pre-flight reports it
        return []
    try:
        cached = is_cached(folder)
        logits = train_logits_of(folder) if cached else None
        lines = [] if logits is None else plan_lines(spec, logits)
    except READ_ERRORS as err:  # ValueError too: logits of the wrong shape
        return [f"teacher weight by {THRESHOLD_KEY}: cannot read the cached teacher at {folder}: {one_line(err)}"]
    if not cached:
        return [f"teacher weight by {THRESHOLD_KEY}: shown here once the teacher is trained (not cached yet)"]
    return lines or [
        f"teacher weight by {THRESHOLD_KEY}: the cached teacher has no training-set logits "
        "(teacher.cache_soft_labels is off)"
    ]
