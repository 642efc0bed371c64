"""Every method, several seeds: the comparison table beside the paper's figures, and the uncertainty plots.

Pure functions on plain data (trial dicts, the saved validation predictions, per-epoch histories), so
the comparison driver can call them after Tune returns and the tests can call them without Ray or
MLflow. Measured and quoted numbers live in separate, differently named columns: a reader must never
take the paper's ImageNet-100 figures for a result of this run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional

import matplotlib

matplotlib.use("Agg")  # plots are files; a comparison often runs without a display

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib import ticker  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402

from orchestrator.paired import LEVEL, Interval, paired_difference  # noqa: E402
from orchestrator.tables import _markdown, _save  # noqa: E402
from trainables.losses import PRESETS, normalized_entropy  # noqa: E402
from trainables.metrics import calibration_bins, expected_calibration_error  # noqa: E402

# The paper's ImageNet-100 top-1 (%). It states the dual-student numbers and the gains; the KD
# figures are derived from them (dual-student minus gain), see PAPER.md.
PAPER_TOP1: dict[tuple[str, str], float] = {
    ("kd", "resnet18"): 81.80,
    ("ua_dual", "resnet18"): 83.84,
    ("kd", "mobilenet_v2"): 80.54,
    ("ua_dual", "mobilenet_v2"): 81.46,
}
# The paper's compression ratios vs its teacher, as quoted. They match a ResNet-50 teacher counted
# with 1000-class heads, so they compare with `compression_1000`, not with `compression`.
PAPER_COMPRESSION: dict[str, float] = {"resnet18": 2.19, "mobilenet_v2": 7.31}

REFERENCES = ("kd", "ce")  # each method's top-1 is compared, seed by seed, with these
PAIRED = tuple(f"vs_{ref}_{part}" for ref in REFERENCES
               for part in ("mean_%", "ci_low_%", "ci_high_%", "excludes_0", "pairs"))
COLUMNS = ("method", "student", "seeds", "top1_mean_%", "top1_std_%", "top5_mean_%", "ece_mean_%",
           "params", "flops_per_image", "compression", "compression_1000", *PAIRED,
           "teacher_top1_%", "paper_top1_%_quoted", "paper_compression_quoted")
CAPTION = ("Top-1, top-5 and ECE in percent, mean ± sample std over seeds. `vs_kd` and `vs_ce`: the paired "
           "difference in top-1 points against kd (ce) on the same seeds (same initialisation and batch order), "
           "its mean and 95 % interval ({interval}); `≠0` says whether the interval excludes 0. Columns marked "
           "`_quoted` are the paper's ImageNet-100 figures (its KD top-1 derived as dual-student minus the "
           "stated gain), not measured here. `compression` = teacher params / student params with heads of "
           "this dataset's classes; `compression_1000` counts 1000-class heads, as the paper's ratios do.")
INTERVAL_NAMES = {"t": "t-based", "bootstrap": "bootstrap percentile"}
CERTAINTY_BINS = 5
RELIABILITY_BINS = 15  # the ECE's own bins, so the diagram shows what the ECE sums


def _finished(trials: list[dict]) -> list[dict]:
    """Trials with a result: an errored trial's last report is not a measurement of its method."""
    return [t for t in trials if not t.get("error") and t.get("metrics")]


def _method(trial: dict) -> Optional[str]:
    return (trial.get("params") or {}).get("loss.method")


def _values(metrics: list[dict], key: str) -> pd.Series:
    return pd.Series([m.get(key) for m in metrics], dtype=float)


def _first(metrics: list[dict], key: str) -> float:
    """A size that every trial reports alike (it depends on the architecture only); NaN if none does."""
    return next((float(m[key]) for m in metrics if m.get(key) is not None), math.nan)


def _top1_by_seed(runs: list[dict], name: str) -> dict[int, float]:
    return {t["params"].get("seed"): float(t["metrics"][f"{name}/val_top1"]) * 100
            for t in runs if t["metrics"].get(f"{name}/val_top1") is not None}


def comparison_table(trials: list[dict], student_names: list[str], methods: list[str],
                     interval: Interval = "t", level: float = LEVEL, note: Optional[str] = None) -> pd.DataFrame:
    """One row per (method, student), in the given orders; seeds pooled, percentages x100.

    Sizes, compression and the teacher's top-1 come from any finished trial (one teacher and the
    same architectures for the whole comparison), so a method without a teacher still shows how
    much smaller its student is. A method with no finished trial keeps its row, with 0 seeds.
    The paired columns compare each method with kd and ce on the seeds both finished (NaN for the
    reference itself and where it is not among `methods`). `level`: the intervals' level (a sequential
    comparison's is higher: `orchestrator.sequential`); `note` goes into the caption.
    """
    done = _finished(trials)
    reports = [t["metrics"] for t in done]
    teacher_top1 = _values(reports, "teacher/val_top1").mean() * 100
    teacher_params, teacher_params_1000 = _first(reports, "teacher/params"), _first(reports, "teacher/params_1000")
    by_seed = {(method, name): _top1_by_seed([t for t in done if _method(t) == method], name)
               for method in methods for name in student_names}
    rows = []
    for method in methods:
        runs = [t["metrics"] for t in done if _method(t) == method]
        for name in student_names:
            measured = [m for m in runs if m.get(f"{name}/val_top1") is not None]
            paired = {}
            for ref in REFERENCES:
                d = paired_difference(by_seed[method, name], by_seed.get((ref, name), {}), interval, level)
                same = method == ref or d.seeds == 0
                paired.update({f"vs_{ref}_mean_%": math.nan if same else d.mean,
                               f"vs_{ref}_ci_low_%": math.nan if same else d.low,
                               f"vs_{ref}_ci_high_%": math.nan if same else d.high,
                               f"vs_{ref}_excludes_0": None if same else d.excludes_zero,
                               f"vs_{ref}_pairs": 0 if same else d.seeds})
            top1 = _values(measured, f"{name}/val_top1") * 100
            params, params_1000 = _first(reports, f"{name}/params"), _first(reports, f"{name}/params_1000")
            rows.append({
                "method": method, "student": name, "seeds": len(measured),
                "top1_mean_%": top1.mean(), "top1_std_%": top1.std(ddof=1),  # NaN for one seed
                "top5_mean_%": _values(measured, f"{name}/val_top5").mean() * 100,
                "ece_mean_%": _values(measured, f"{name}/val_ece").mean() * 100,
                "params": params, "flops_per_image": _first(reports, f"{name}/flops"),
                "compression": teacher_params / params, "compression_1000": teacher_params_1000 / params_1000,
                "teacher_top1_%": teacher_top1,
                "paper_top1_%_quoted": PAPER_TOP1.get((method, name), math.nan),
                "paper_compression_quoted": PAPER_COMPRESSION.get(name, math.nan),
                **paired,
            })
    df = pd.DataFrame(rows, columns=list(COLUMNS))
    df.attrs["interval"] = interval
    df.attrs["note"] = note
    for column in ("params", "flops_per_image"):
        df[column] = df[column].round().astype("Int64")
    return df


def _si(value) -> str:
    """11.69M rather than 11689512: sizes and FLOPs read at a glance (the CSV keeps the exact counts)."""
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f}{suffix}"
    return str(int(value))


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, for reading: mean ± std in one cell, 2 decimals, '-' for a gap."""
    def fmt(value, spec: str = ".2f") -> str:
        return "-" if pd.isna(value) else format(round(value, 2) + 0.0, spec)  # + 0.0: no "-0.00"

    def mean_std(row) -> str:
        if pd.isna(row["top1_mean_%"]):
            return "-"
        return fmt(row["top1_mean_%"]) + ("" if pd.isna(row["top1_std_%"]) else f" ± {row['top1_std_%']:.2f}")

    def paired(ref: str):
        def cell(row) -> str:
            mean, low, high = (row[f"vs_{ref}_{k}_%"] for k in ("mean", "ci_low", "ci_high"))
            if pd.isna(mean):
                return "-"
            return fmt(mean, "+.2f") + ("" if pd.isna(low) else f" [{fmt(low, '+.2f')}, {fmt(high, '+.2f')}]")
        return cell

    def excludes(value) -> str:
        return "-" if value is None or pd.isna(value) else ("yes" if value else "no")

    columns = {
        "method": df["method"], "student": df["student"], "seeds": df["seeds"].astype(str),
        "top1_% (mean ± std)": df.apply(mean_std, axis=1),
        "top5_%": df["top5_mean_%"].map(fmt), "ece_%": df["ece_mean_%"].map(fmt),
    }
    for ref in REFERENCES:
        columns[f"vs_{ref} [95% CI]"] = df.apply(paired(ref), axis=1)
        columns[f"vs_{ref} ≠0"] = df[f"vs_{ref}_excludes_0"].map(excludes)
    return pd.DataFrame({
        **columns,
        "params": df["params"].map(lambda v: "-" if pd.isna(v) else _si(v)),
        "flops/image": df["flops_per_image"].map(lambda v: "-" if pd.isna(v) else _si(v)),
        "compression": df["compression"].map(fmt), "compression_1000": df["compression_1000"].map(fmt),
        "teacher_top1_%": df["teacher_top1_%"].map(fmt),
        "paper_top1_%_quoted": df["paper_top1_%_quoted"].map(fmt),
        "paper_compression_quoted": df["paper_compression_quoted"].map(fmt),
    })


def format_comparison(df: pd.DataFrame) -> str:
    """A fixed-width table for the terminal."""
    return _display(df).to_string(index=False)


def comparison_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table with its caption (what is quoted, what the units and heads are)."""
    return _markdown(_display(df)) + "\n" + caption(df) + "\n"


def caption(df: pd.DataFrame) -> str:
    text = CAPTION.format(interval=INTERVAL_NAMES[df.attrs.get("interval", "t")])
    return text + (f" {df.attrs['note']}" if df.attrs.get("note") else "")


def comparison_latex(df: pd.DataFrame) -> str:
    """A booktabs `table` with the Markdown's cells and caption.

    `DataFrame.to_latex` needs jinja2, which torch (a dependency) requires, so it is always there.
    """
    shown = _display(df)
    text = caption(df).replace("`", "").replace("≠", r"$\neq$").replace("_", r"\_").replace("%", r"\%")
    latex = shown.to_latex(index=False, escape=True, caption=text,
                           column_format="ll" + "r" * (len(shown.columns) - 2))
    return latex.replace("±", r"$\pm$").replace("≠", r"$\neq$")


def write_comparison(df: pd.DataFrame, out_dir: str | Path) -> dict[str, Path]:
    """comparison.csv (exact values), comparison.md and comparison.tex; name -> path."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {name: out / name for name in ("comparison.csv", "comparison.md", "comparison.tex")}
    df.to_csv(written["comparison.csv"], index=False)
    written["comparison.md"].write_text(comparison_markdown(df))
    written["comparison.tex"].write_text(comparison_latex(df))
    return written


# --------------------------------------------------------------------------- uncertainty analysis


def _by_method(trials: list[dict]) -> dict[str, list[str]]:
    """method -> finished trial ids, methods in the presets' order (so colours agree across plots)."""
    order = {m: i for i, m in enumerate(PRESETS)}
    groups: dict[str, list[str]] = {}
    for trial in _finished(trials):
        groups.setdefault(_method(trial) or "?", []).append(trial["trial_id"])
    return dict(sorted(groups.items(), key=lambda item: order.get(item[0], len(order))))


def _colour(method: str) -> str:
    return f"C{list(PRESETS).index(method)}" if method in PRESETS else "black"


def _subplots(n: int, title: str):
    fig, axes = plt.subplots(1, n, figsize=(5 * n, 4), squeeze=False)
    fig.suptitle(title)
    return fig, axes[0]


UNSURE_U = 0.3  # a teacher is "unsure" on a sample above this u (the hard setting's requirement)


def teacher_uncertainty(train_logits, threshold: Optional[float] = None) -> dict[str, float]:
    """The teacher's training-set u = H / log C: mean, quantiles, share above 0.3 and above the threshold.

    Logged on the parent run: whether the uncertainty weighting can matter at all on this data (a teacher
    sure of every sample gives every sample w close to 1, and every weighting is then plain KD). Metrics,
    to sort and filter runs by, so not under `teacher/`, whose figures are logged as params.
    """
    u = normalized_entropy(torch.as_tensor(train_logits)).double()
    summary = {"teacher_u/train_mean": u.mean().item(),
               **{f"teacher_u/train_p{q}": u.quantile(q / 100).item() for q in (10, 50, 90)},
               f"teacher_u/train_share_above_{UNSURE_U}": (u > UNSURE_U).double().mean().item()}
    if threshold is not None:
        summary["teacher_u/train_share_above_threshold"] = (u > threshold).double().mean().item()
    return summary


def _teacher_entropy(out: Path, train_logits, val_logits) -> Optional[Path]:
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
    return _save(fig, out / "teacher_entropy.png")


def _equal_count_bins(w: torch.Tensor, bins: int) -> torch.Tensor:
    """Bin index per sample, each bin holding the same number of samples (ties split by order).

    Equal-count rather than equal-width: a good teacher puts most samples near w = 1, and equal-width
    bins would leave the low-certainty bins, the interesting ones, with a handful of samples.
    """
    idx = torch.empty(len(w), dtype=torch.long)
    idx[torch.argsort(w, stable=True)] = torch.arange(len(w)) * bins // len(w)
    return idx


def _accuracy_by_certainty(out: Path, student_names, groups, predictions, labels, val_logits) -> Optional[Path]:
    w = 1 - normalized_entropy(torch.as_tensor(val_logits))
    bins = min(CERTAINTY_BINS, len(w))
    idx = _equal_count_bins(w, bins)
    count = torch.bincount(idx, minlength=bins).float()
    centre = torch.bincount(idx, weights=w, minlength=bins) / count
    fig, axes = _subplots(len(student_names), "Where does the peer help? Student accuracy by teacher certainty "
                          f"(validation set, {bins} equal-count bins)")
    drawn = False
    for ax, name in zip(axes, student_names):
        for method, ids in groups.items():
            hits, seen = torch.zeros(bins), torch.zeros(bins)
            for tid in ids:
                pred = predictions.get(tid) or {}
                if name in pred and torch.equal(torch.as_tensor(pred["labels"]), labels):
                    hits += torch.bincount(idx, weights=torch.as_tensor(pred[name]["correct"]).float(), minlength=bins)
                    seen += count
            if seen.sum() > 0:
                ax.plot(centre.numpy(), (100 * hits / seen).numpy(), marker="o", color=_colour(method), label=method)
                drawn = True
        ax.set_xlabel("teacher certainty w = 1 - u (bin mean)")
        ax.set_ylabel("val top-1 (%)")
        ax.set_title(name)
        if ax.lines:  # a student with no data keeps an empty panel
            ax.legend()
    if not drawn:
        plt.close(fig)
        return None
    return _save(fig, out / "accuracy_by_certainty.png")


def _reliability(out: Path, name: str, groups, predictions) -> Optional[Path]:
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
        ax.plot((b["confidence"][used] / b["count"][used]).numpy(), (b["correct"][used] / b["count"][used]).numpy(),
                marker="o",
                color=_colour(method), label=f"{method} (ECE {100 * ece:.2f}%)")
        drawn = True
    if not drawn:
        plt.close(fig)
        return None
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence (bin mean)")
    ax.set_ylabel("accuracy")
    ax.set_title(f"{name}: reliability, validation set, seeds pooled")
    ax.legend(fontsize="small")
    return _save(fig, out / f"reliability_{name}.png")


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
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(ticker.MaxNLocator(integer=True))
        ax.set_ylabel("val top-1 (%)")
        ax.set_title(name)
        if ax.lines:  # a student with no data keeps an empty panel
            ax.legend()
    if not drawn:
        plt.close(fig)
        return None
    return _save(fig, out / "accuracy_vs_epoch.png")


def analysis_plots(out_dir: str | Path, student_names: list[str], predictions: dict[str, dict],
                   trials: list[dict], histories: dict[str, dict[str, list[tuple[int, float]]]],
                   teacher_train_logits=None) -> list[Path]:
    """The uncertainty analysis as PNGs; each plot whose data is missing is skipped, never an error.

    - teacher_entropy.png: the teacher's u over the training set (else the validation set);
    - accuracy_by_certainty.png: each student's accuracy in equal-count bins of the teacher's
      w = 1 - u, one line per method. The teacher is the same in every trial, so the first teacher
      logits found bin every method, those without a teacher too; a trial whose validation labels
      differ from that trial's (another split or order) is left out;
    - reliability_<student>.png: accuracy against confidence, ECE per method in the legend;
    - accuracy_vs_epoch.png: val top-1 against epoch, mean over seeds.
    Seeds are pooled per method; errored trials are left out, as in the table.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    groups = _by_method(trials)
    ids = [tid for group in groups.values() for tid in group]
    reference = next((predictions[tid] for tid in ids if "teacher_logits" in (predictions.get(tid) or {})), None)
    val_logits = reference["teacher_logits"] if reference is not None else None
    written = [_teacher_entropy(out, teacher_train_logits, val_logits)]
    if student_names:  # the per-student figures have one panel per student
        if reference is not None:
            written.append(_accuracy_by_certainty(out, student_names, groups, predictions,
                                                  torch.as_tensor(reference["labels"]), val_logits))
        written += [_reliability(out, name, groups, predictions) for name in student_names]
        written.append(_accuracy_vs_epoch(out, student_names, groups, histories))
    return [path for path in written if path is not None]
