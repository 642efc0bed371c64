"""A comparison's uncertainty analysis as PNGs: where the teacher is unsure, and what each method does there.

Pure functions on plain data (trial dicts, the saved validation predictions, per-epoch histories), like
the table in `orchestrator.results.comparison`, so the report can draw them after Tune returns and the tests
can call them without Ray or MLflow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from matplotlib import ticker

from orchestrator.results.certainty_bins import (
    certainty_bins,
    matching_records,
    methods_in_order,
    reference_predictions,
)
from orchestrator.results.figures import pyplot, save_figure
from trainables.losses import normalized_entropy
from trainables.methods import PRESETS
from trainables.metrics import calibration_bins, expected_calibration_error

RELIABILITY_BINS = 15  # the ECE's own bins, so the diagram shows what the ECE sums


def _colour(method: str) -> str:
    return f"C{list(PRESETS).index(method)}" if method in PRESETS else "black"


def _subplots(n: int, title: str):
    plt = pyplot()
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


def _label_panel(ax, xlabel: str, title: str) -> None:
    """A student's panel of val top-1: axes, title, and a legend when something was drawn on it."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel("val top-1 (%)")
    ax.set_title(title)
    if ax.lines:  # a student with no data keeps an empty panel
        ax.legend()


def _finish(fig, drawn: bool, path: Path) -> Optional[Path]:
    """The figure saved to `path`, or closed (and None) when nothing was drawn on it."""
    plt = pyplot()
    if not drawn:
        plt.close(fig)
        return None
    return save_figure(fig, path)


def _teacher_entropy(out: Path, train_logits, val_logits) -> Optional[Path]:
    plt = pyplot()
    logits, split = (train_logits, "training") if train_logits is not None else (val_logits, "validation")
    if logits is None:
        return None
    u = normalized_entropy(torch.as_tensor(logits)).numpy()
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.hist(u, bins=50, range=(0, 1), color="C0")
    ax.axvline(u.mean(), color="black", linestyle="--", label=f"mean {u.mean():.3f}")
    ax.set_xlabel("teacher normalized entropy u = H / log C")
    ax.set_ylabel("samples")
    ax.set_title(f"Teacher uncertainty, {split} set ({len(u)} samples)")
    ax.legend()
    return save_figure(fig, out / "teacher_entropy.png")


def _accuracy_by_certainty(out: Path, student_names, groups, predictions, labels, val_logits) -> Optional[Path]:
    cb = certainty_bins(val_logits)  # the bins of accuracy_by_certainty.csv too
    w, idx, bins = cb.w, cb.index, cb.bins
    count = cb.count.float()
    centre = torch.bincount(idx, weights=w, minlength=bins) / count
    fig, axes = _subplots(
        len(student_names),
        f"Where does the peer help? Student accuracy by teacher certainty (validation set, {bins} equal-count bins)",
    )
    drawn = False
    for ax, name in zip(axes, student_names):
        for method, ids in groups.items():
            hits, seen = torch.zeros(bins), torch.zeros(bins)
            for _, correct in matching_records(predictions, ids, name, labels):
                hits += torch.bincount(idx, weights=correct.float(), minlength=bins)
                seen += count
            if seen.sum() > 0:
                ax.plot(centre.numpy(), (100 * hits / seen).numpy(), marker="o", color=_colour(method), label=method)
                drawn = True
        _label_panel(ax, "teacher certainty w = 1 - u (bin mean)", name)
    return _finish(fig, drawn, out / "accuracy_by_certainty.png")


def _reliability(out: Path, name: str, groups, predictions) -> Optional[Path]:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", label="perfect calibration")
    drawn = False
    for method, ids in groups.items():
        pooled = [predictions[tid][name] for tid in ids if name in (predictions.get(tid) or {})]
        if not pooled:
            continue
        conf = torch.cat([torch.as_tensor(p["confidence"]).float() for p in pooled])
        correct = torch.cat([torch.as_tensor(p["correct"]).bool() for p in pooled])
        b = calibration_bins(conf, correct, RELIABILITY_BINS)
        used = b["count"] > 0
        ece = expected_calibration_error(conf, correct, RELIABILITY_BINS)
        ax.plot(
            (b["confidence"][used] / b["count"][used]).numpy(),
            (b["correct"][used] / b["count"][used]).numpy(),
            marker="o",
            color=_colour(method),
            label=f"{method} (ECE {100 * ece:.2f}%)",
        )
        drawn = True
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (bin mean)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{name}: reliability, validation set, seeds pooled")
    ax.legend(fontsize="small")
    return _finish(fig, drawn, out / f"reliability_{name}.png")


def _accuracy_vs_epoch(out: Path, student_names, groups, histories) -> Optional[Path]:
    fig, axes = _subplots(len(student_names), "Val top-1 by epoch (mean over seeds)")
    drawn = False
    for ax, name in zip(axes, student_names):
        for method, ids in groups.items():
            points = [(e, v) for tid in ids for e, v in (histories.get(tid) or {}).get(f"{name}/val_top1", [])]
            if points:
                mean = pd.DataFrame(points, columns=["epoch", "top1"]).groupby("epoch")["top1"].mean()
                ax.plot(mean.index, 100 * mean.values, marker=".", color=_colour(method), label=method)
                drawn = True
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        _label_panel(ax, "epoch", name)
    return _finish(fig, drawn, out / "accuracy_vs_epoch.png")


def analysis_plots(
    out_dir: str | Path,
    student_names: list[str],
    predictions: dict[str, dict],
    trials: list[dict],
    histories: dict[str, dict[str, list[tuple[int, float]]]],
    teacher_train_logits=None,
) -> list[Path]:
    """The uncertainty analysis as PNGs; each plot whose data is missing is skipped, never an error.

    - teacher_entropy.png: the teacher's u over the training set (else the validation set);
    - accuracy_by_certainty.png: each student's accuracy in equal-count bins of the teacher's
      w = 1 - u, one line per method. The teacher is the same in every trial, so the first teacher
      logits found bin every method, those without a teacher too; a trial whose validation labels
      differ from that trial's (another split or order) is left out. Its numbers, with paired differences
      to the references, are `orchestrator.results.certainty_bins`' accuracy_by_certainty.csv, from the same bins;
    - reliability_<student>.png: accuracy against confidence, ECE per method in the legend;
    - accuracy_vs_epoch.png: val top-1 against epoch, mean over seeds.
    Seeds are pooled per method; errored trials are left out, as in the table.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = methods_in_order(trials)
    reference = reference_predictions(predictions, groups)
    val_logits = reference["teacher_logits"] if reference is not None else None
    written = [_teacher_entropy(out, teacher_train_logits, val_logits)]
    if student_names:  # the per-student figures have one panel per student
        if reference is not None:
            written.append(
                _accuracy_by_certainty(
                    out, student_names, groups, predictions, torch.as_tensor(reference["labels"]), val_logits
                )
            )
        written += [_reliability(out, name, groups, predictions) for name in student_names]
        written.append(_accuracy_vs_epoch(out, student_names, groups, histories))
    return [path for path in written if path is not None]
