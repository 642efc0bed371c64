"""The table behind `accuracy_by_certainty.png`: each student's accuracy in equal-count bins of the teacher's
certainty, per method, with its paired difference to each reference (`compare.references`).

Uncertainty weighting can only differ from plain KD where the teacher is unsure, so a method's gain or loss
is read bin by bin, seed paired, not only over the whole val set. Pure functions on the saved validation
predictions (no MLflow, no plotting), so the tests call them directly; the plot in `comparison_plots`
bins, groups and picks its teacher logits with the same functions, so figure and table cannot disagree.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional, Sequence

import pandas as pd
import torch

from orchestrator.results.comparison import finished_trials, table_intervals, trial_method
from orchestrator.results.formatting import decided_cell, markdown_table, paired_cell, percent_cell
from orchestrator.results.paired import (
    INTERVAL_COLUMNS,
    IntervalLevel,
    difference_columns,
    paired_column_names,
    references_words,
    table_references,
)
from orchestrator.teacher import summary_lines, teacher_val_summary
from trainables.losses import normalized_entropy
from trainables.methods import PRESETS, TWO_STUDENT_METHODS

CERTAINTY_BINS = 5
REFERENCES = ("kd",)  # when the caller names none; a comparison's report passes its `compare.references`
CSV, MD = "accuracy_by_certainty.csv", "accuracy_by_certainty.md"
HEAD = ("bin", "u_low", "u_high", "samples", "method", "student", "seeds", "top1_mean_%")
SHARED = "both_wrong_same_%"  # two-student methods: both students wrong with the same class


def table_columns(references: Sequence[str] = REFERENCES) -> tuple[str, ...]:
    """The table's columns: one paired set (`vs_{ref}_*`) per reference, then the intervals' kind and level."""
    return (*HEAD, SHARED, *paired_column_names(references), *INTERVAL_COLUMNS)


CAPTION = (
    "Val top-1 (%) of each student in equal-count bins of the teacher's normalized entropy u = H / log C on "
    "the validation set (the bins of accuracy_by_certainty.png; bin 1 holds the samples the teacher is least "
    "sure of), mean over seeds. {listed}: per seed the method's top-1 in the bin minus {against} in the same bin, "
    "its mean in points and, in brackets, its {interval} over the seeds both have (none under 2 seeds or where "
    "every seed gave the same difference: no spread to estimate); `≠0` says whether the difference is decided: "
    "the interval excludes 0 and the exact sign-flip test agrees at the same level, {seeds}. Rows "
    "`classes ...` cover only the samples of those classes (the teacher's blind spots), rows `other classes` "
    "the rest, at every certainty; rows `all` every sample. `both wrong, same class`: for the two-student "
    "methods, the share (%) of the row's images where both students are wrong with the same class, mean over "
    "seeds (alike on both students' rows; none for one-student methods and for predictions saved without the "
    "class)."
)


def methods_in_order(trials: list[dict]) -> dict[str, list[str]]:
    """method -> finished trial ids, methods in the presets' order (so colours and rows agree across outputs)."""
    order = {m: i for i, m in enumerate(PRESETS)}
    groups: dict[str, list[str]] = {}
    for trial in finished_trials(trials):
        groups.setdefault(trial_method(trial) or "?", []).append(trial["trial_id"])
    return dict(sorted(groups.items(), key=lambda item: order.get(item[0], len(order))))


def reference_predictions(predictions: dict[str, dict], groups: dict[str, list[str]]) -> Optional[dict]:
    """The first trial's predictions (in `groups`' order) that hold teacher val logits, None if none does.

    The teacher is the same in every trial, so one trial's logits bin every method, those without a teacher too.
    """
    ids = [tid for group in groups.values() for tid in group]
    return next((predictions[tid] for tid in ids if "teacher_logits" in (predictions.get(tid) or {})), None)


def equal_count_bins(w: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index per sample, each bin holding the same number of samples (ties split by order).

    Equal-count rather than equal-width: a good teacher puts most samples near w = 1, and equal-width
    bins would leave the low-certainty bins, the interesting ones, with a handful of samples.
    """
    idx = torch.empty(len(w), dtype=torch.long)
    idx[torch.argsort(w, stable=True)] = torch.arange(len(w)) * bins // len(w)
    return idx


@dataclass(frozen=True)
class CertaintyBins:
    """The val set's samples in bins of the teacher's certainty; bin 0 holds the least certain ones."""

    index: torch.Tensor  # per sample, its bin
    u: torch.Tensor  # per sample, the teacher's u = H / log C
    w: torch.Tensor  # per sample, 1 - u: the plot's x-axis
    bins: int

    @property
    def count(self) -> torch.Tensor:
        return torch.bincount(self.index, minlength=self.bins)


def certainty_bins(val_logits, bins: int = CERTAINTY_BINS) -> CertaintyBins:
    """`bins` equal-count bins of w = 1 - u over the teacher's val logits (fewer when there are fewer samples)."""
    u = normalized_entropy(torch.as_tensor(val_logits))
    w = 1 - u
    bins = min(bins, len(w))
    return CertaintyBins(equal_count_bins(w, bins), u, w, bins)


def matching_records(
    predictions: dict[str, dict], ids: Iterable[str], name: str, labels
) -> list[tuple[str, torch.Tensor]]:
    """(trial id, per-sample correctness of student `name`) of the trials among `ids` evaluated on the binned val
    set; a trial whose val labels differ (another split or order) is left out: its samples are not the binned ones.
    """
    labels = torch.as_tensor(labels)
    found = []
    for tid in ids:
        pred = predictions.get(tid) or {}
        if name in pred and torch.equal(torch.as_tensor(pred["labels"]), labels):
            found.append((tid, torch.as_tensor(pred[name]["correct"])))
    return found


def shared_mistakes(pred: dict, names: Sequence[str], labels) -> Optional[torch.Tensor]:
    """Per sample, whether the students `names` are all wrong with one same class: a shared blind spot that peer
    learning cannot correct (each student teaches the other its own mistake). None for a trial evaluated on
    other val labels or saved without predicted classes (records older than the class)."""
    labels = torch.as_tensor(labels)
    if not torch.equal(torch.as_tensor(pred.get("labels", torch.empty(0))), labels):
        return None
    classes = [(pred.get(name) or {}).get("predicted") for name in names]
    if len(classes) < 2 or any(c is None for c in classes):
        return None
    first = torch.as_tensor(classes[0])
    same = torch.stack([torch.as_tensor(c) == first for c in classes[1:]]).all(0)
    return same & (first != labels)


def bin_accuracy(correct, index: torch.Tensor, bins: int) -> torch.Tensor:
    """Top-1 per bin as a fraction (float64, so the bins recombine to the overall top-1); NaN for an empty bin."""
    hits = torch.bincount(index, weights=torch.as_tensor(correct).double(), minlength=bins)
    return hits / torch.bincount(index, minlength=bins).double()


def _subsets(cb: CertaintyBins, labels: torch.Tensor, focus_classes) -> list[tuple[str, torch.Tensor]]:
    """(bin label, sample mask): the certainty bins, the focus classes' samples and the others' when asked for, then
    every sample (`all`: the paired differences of the whole split, and the students' shared mistakes overall)."""
    subsets = [(str(b + 1), cb.index == b) for b in range(cb.bins)]
    if focus_classes:
        ids = sorted(int(c) for c in focus_classes)
        focus = torch.isin(labels, torch.tensor(ids))
        subsets += [("classes " + ",".join(map(str, ids)), focus), ("other classes", ~focus)]
    return subsets + [("all", torch.ones_like(cb.index, dtype=torch.bool))]


def accuracy_by_certainty_table(
    trials: list[dict],
    student_names: list[str],
    predictions: dict[str, dict],
    intervals: IntervalLevel = IntervalLevel(),
    focus_classes: Optional[Iterable[int]] = None,
    bins: int = CERTAINTY_BINS,
    references: Sequence[str] = REFERENCES,
) -> pd.DataFrame:
    """One row per (certainty bin, method, student): top-1 mean over seeds, and the paired difference to each of
    `references` (the spec's `compare.references`; kd alone by default).

    Bins, methods, teacher logits and the trials used are those of the plot. Per seed a method's top-1 in a
    bin is compared with a reference's top-1 in the same bin on the same seed (`orchestrator.results.paired`, the
    comparison table's kind of interval); the reference's own rows, and every row when it has no trial, have none.
    Percentages x100; an empty table (with the columns) when no trial saved teacher val logits.
    `focus_classes`: class ids that get extra rows, bin label `classes 3,7`, over only their samples, and rows
    `other classes` over the rest (a setting's blind-spot classes, `teacher.data`). A two-student method's rows
    also give `both_wrong_same_%` (`shared_mistakes`) over the row's images.
    """
    groups = methods_in_order(trials)
    reference = reference_predictions(predictions, groups)
    if reference is None:
        return _frame([], intervals, references)
    labels = torch.as_tensor(reference["labels"])
    cb = certainty_bins(reference["teacher_logits"], bins)
    seed_of = {t["trial_id"]: t["params"].get("seed") for t in trials}
    rows = []
    for label, mask in _subsets(cb, labels, focus_classes):
        u = cb.u[mask].double()
        where = {
            "bin": label,
            "u_low": u.min().item() if len(u) else math.nan,
            "u_high": u.max().item() if len(u) else math.nan,
            "samples": int(mask.sum()),
        }
        by_seed = {
            (method, name): {
                seed_of[tid]: correct[mask].double().mean().item() * 100
                for tid, correct in matching_records(predictions, ids, name, labels)
            }
            for method, ids in groups.items()
            for name in student_names
        }
        for method, ids in groups.items():
            shared = []
            if method in TWO_STUDENT_METHODS:
                records = [shared_mistakes(predictions.get(tid) or {}, student_names, labels) for tid in ids]
                shared = [r[mask].double().mean().item() * 100 for r in records if r is not None and mask.any()]
            for name in student_names:
                top1 = by_seed[method, name]
                paired = {}
                for ref in references:
                    against = by_seed.get((ref, name), {})
                    paired.update(difference_columns(top1, against, ref, method == ref, intervals))
                rows.append(
                    {
                        **where,
                        "method": method,
                        "student": name,
                        "seeds": len(top1),
                        "top1_mean_%": sum(top1.values()) / len(top1) if top1 else math.nan,
                        SHARED: sum(shared) / len(shared) if shared else math.nan,
                        **paired,
                        **intervals.columns(),
                    }
                )
    return _frame(rows, intervals, references)


def _frame(rows: list[dict], intervals: IntervalLevel, references: Sequence[str]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=list(table_columns(references)))
    df.attrs["intervals"] = intervals
    return df


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, for reading: u range in one cell, difference with its interval in one cell."""

    def u_range(row) -> str:
        return "-" if pd.isna(row["u_low"]) else f"{row['u_low']:.3f}-{row['u_high']:.3f}"

    columns = {
        "bin": df["bin"],
        "teacher u": df.apply(u_range, axis=1) if len(df) else [],
        "samples": df["samples"].astype(str),
        "method": df["method"],
        "student": df["student"],
        "seeds": df["seeds"].astype(str),
        "top1_% (mean)": df["top1_mean_%"].map(percent_cell),
        "both wrong, same class %": df[SHARED].map(percent_cell),
    }
    for ref in table_references(df.columns):
        columns[f"vs_{ref} [{table_intervals(df).label}]"] = df.apply(paired_cell(ref), axis=1) if len(df) else []
        columns[f"vs_{ref} ≠0"] = df[f"vs_{ref}_excludes_0"].map(decided_cell)
    return pd.DataFrame(columns)


def certainty_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table with its caption."""
    intervals = table_intervals(df)
    listed, against = references_words(table_references(df.columns), "'s")
    caption = CAPTION.format(listed=listed, against=against, interval=intervals.words, seeds=intervals.seeds_needed)
    return markdown_table(_display(df)) + "\n" + caption + "\n"


def teacher_figures(
    trials: list[dict], predictions: dict[str, dict], threshold: Optional[float] = None, blind_classes=()
) -> dict[str, float]:
    """The teacher's validation figures (`orchestrator.teacher.quality`) from the logits the bins use; {} if none."""
    reference = reference_predictions(predictions, methods_in_order(trials))
    if reference is None:
        return {}
    return teacher_val_summary(reference["teacher_logits"], reference["labels"], threshold, blind_classes)


def write_certainty_table(
    out_dir: str | Path,
    student_names: list[str],
    predictions: dict[str, dict],
    trials: list[dict],
    intervals: IntervalLevel = IntervalLevel(),
    focus_classes: Iterable[int] = (),
    teacher: Optional[dict[str, float]] = None,
    references: Sequence[str] = REFERENCES,
) -> dict[str, Path]:
    """accuracy_by_certainty.csv (exact values) and .md beside the plot, the .md under the `teacher` figures
    when given; name -> path.

    Nothing is written when no trial has the data the plot needs (teacher val logits, a student's records),
    so the table appears exactly when the plot does.
    """
    df = accuracy_by_certainty_table(
        trials, student_names, predictions, intervals, focus_classes=focus_classes, references=references
    )
    if not (df["seeds"] > 0).any():
        return {}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df.to_csv(out / CSV, index=False)
    lines = summary_lines(teacher, focus_classes) if teacher else []
    head = "The teacher on the validation set: " + "; ".join(lines) + ".\n\n" if lines else ""
    (out / MD).write_text(head + certainty_markdown(df))
    return {CSV: out / CSV, MD: out / MD}
