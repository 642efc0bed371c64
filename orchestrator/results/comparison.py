"""Every method, several seeds: the comparison table beside the paper's figures.

Pure functions on plain data (trial dicts), so the comparison driver can call them
after Tune returns and the tests can call them without Ray or MLflow; the plots are `comparison_plots`.
Measured and quoted numbers live in separate, differently named columns: a reader must never take the
paper's ImageNet-100 figures for a result of this run.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Optional, Sequence

import pandas as pd

from orchestrator.results.formatting import decided_cell, markdown_table, paired_cell, percent_cell
from orchestrator.results.paired import (
    INTERVAL_COLUMNS,
    IntervalLevel,
    difference_columns,
    paired_column_names,
    references_words,
    table_references,
)
from orchestrator.spec import DEFAULT_REFERENCES

# The paper's ImageNet-100 top-1 (%) (Gore, Dey, Mishra, arXiv 2511.18826: the method this project
# implements). It states the dual-student numbers and their gains over KD; the KD figures here are
# derived from them (dual-student minus gain).
PAPER_TOP1: dict[tuple[str, str], float] = {
    ("kd", "resnet18"): 81.80,
    ("ua_dual", "resnet18"): 83.84,
    ("kd", "mobilenet_v2"): 80.54,
    ("ua_dual", "mobilenet_v2"): 81.46,
}
# The paper's compression ratios vs its teacher, as quoted. They match a ResNet-50 teacher counted
# with 1000-class heads, so they compare with `compression_1000`, not with `compression`.
PAPER_COMPRESSION: dict[str, float] = {"resnet18": 2.19, "mobilenet_v2": 7.31}

HEAD = (
    "method",
    "student",
    "seeds",
    "top1_mean_%",
    "top1_std_%",
    "top5_mean_%",
    "ece_mean_%",
    "params",
    "flops_per_image",
    "compression",
    "compression_1000",
)
TAIL = (*INTERVAL_COLUMNS, "teacher_top1_%", "paper_top1_%_quoted", "paper_compression_quoted")
CAPTION = (
    "Top-1, top-5 and ECE in percent, mean ± sample std over seeds. {listed}: the paired "
    "difference in top-1 points against {against} on the same seeds (same initialisation and batch order), "
    "its mean and, in brackets, its {interval} (none under 2 seeds or where every seed gave the same "
    "difference: no spread to estimate); `≠0` says whether the difference is decided: the interval excludes 0 "
    "and the exact sign-flip test agrees at the same level, {seeds}. Columns marked "
    "`_quoted` are the paper's ImageNet-100 figures (its KD top-1 derived as dual-student minus the "
    "stated gain), not measured here. `compression` = teacher params / student params with heads of "
    "this dataset's classes; `compression_1000` counts 1000-class heads, as the paper's ratios do."
)


def table_columns(references: Sequence[str] = DEFAULT_REFERENCES) -> tuple[str, ...]:
    """The table's columns: one paired set (`vs_{ref}_*`) per reference, between the sizes and the intervals."""
    return (*HEAD, *paired_column_names(references), *TAIL)


def finished_trials(trials: list[dict]) -> list[dict]:
    """Trials with a result: an errored trial's last report is not a measurement of its method."""
    return [t for t in trials if not t.get("error") and t.get("metrics")]


def trial_method(trial: dict) -> Optional[str]:
    """The trial's `loss.method`; None when its parameters do not say."""
    return (trial.get("params") or {}).get("loss.method")


def _values(metrics: list[dict], key: str) -> pd.Series:
    return pd.Series([m.get(key) for m in metrics], dtype=float)


def _first(metrics: list[dict], key: str) -> float:
    """A size that every trial reports alike (it depends on the architecture only); NaN if none does."""
    return next((float(m[key]) for m in metrics if m.get(key) is not None), math.nan)


def _top1_by_seed(runs: list[dict], name: str) -> dict[int, float]:
    return {
        t["params"].get("seed"): float(t["metrics"][f"{name}/val_top1"]) * 100
        for t in runs
        if t["metrics"].get(f"{name}/val_top1") is not None
    }


def comparison_table(
    trials: list[dict],
    student_names: list[str],
    methods: list[str],
    intervals: IntervalLevel = IntervalLevel(),
    note: Optional[str] = None,
    references: Sequence[str] = DEFAULT_REFERENCES,
) -> pd.DataFrame:
    """One row per (method, student), in the given orders; seeds pooled, percentages x100.

    Sizes, compression and the teacher's top-1 come from any finished trial (one teacher and the
    same architectures for the whole comparison), so a method without a teacher still shows how
    much smaller its student is. A method with no finished trial keeps its row, with 0 seeds.
    The paired columns compare each method with each of `references` (the spec's `compare.references`) on the
    seeds both finished (NaN for the reference itself and where it is not among `methods`). `intervals`: their
    kind and level (a sequential comparison's are per look: `orchestrator.results.sequential`), also in the
    table's `interval_*` columns; `note` goes into the caption.
    """
    done = finished_trials(trials)
    reports = [t["metrics"] for t in done]
    teacher_top1 = _values(reports, "teacher/val_top1").mean() * 100
    teacher_params, teacher_params_1000 = _first(reports, "teacher/params"), _first(reports, "teacher/params_1000")
    by_seed = {
        (method, name): _top1_by_seed([t for t in done if trial_method(t) == method], name)
        for method in methods
        for name in student_names
    }
    rows = []
    for method in methods:
        runs = [t["metrics"] for t in done if trial_method(t) == method]
        for name in student_names:
            measured = [m for m in runs if m.get(f"{name}/val_top1") is not None]
            paired = {}
            for ref in references:
                reference = by_seed.get((ref, name), {})
                paired.update(difference_columns(by_seed[method, name], reference, ref, method == ref, intervals))
            top1 = _values(measured, f"{name}/val_top1") * 100
            params, params_1000 = _first(reports, f"{name}/params"), _first(reports, f"{name}/params_1000")
            rows.append(
                {
                    "method": method,
                    "student": name,
                    "seeds": len(measured),
                    "top1_mean_%": top1.mean(),
                    "top1_std_%": top1.std(ddof=1),  # NaN for one seed
                    "top5_mean_%": _values(measured, f"{name}/val_top5").mean() * 100,
                    "ece_mean_%": _values(measured, f"{name}/val_ece").mean() * 100,
                    "params": params,
                    "flops_per_image": _first(reports, f"{name}/flops"),
                    "compression": teacher_params / params,
                    "compression_1000": teacher_params_1000 / params_1000,
                    "teacher_top1_%": teacher_top1,
                    "paper_top1_%_quoted": PAPER_TOP1.get((method, name), math.nan),
                    "paper_compression_quoted": PAPER_COMPRESSION.get(name, math.nan),
                    **paired,
                    **intervals.columns(),
                }
            )
    df = pd.DataFrame(rows, columns=list(table_columns(references)))
    df.attrs["intervals"] = intervals
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


def table_intervals(df: pd.DataFrame) -> IntervalLevel:
    """The intervals a table was built with, for its header and caption."""
    return df.attrs.get("intervals", IntervalLevel())


def _display(df: pd.DataFrame) -> pd.DataFrame:
    """The table as strings, for reading: mean ± std in one cell, 2 decimals, '-' for a gap."""

    def mean_std(row) -> str:
        if pd.isna(row["top1_mean_%"]):
            return "-"
        return percent_cell(row["top1_mean_%"]) + ("" if pd.isna(row["top1_std_%"]) else f" ± {row['top1_std_%']:.2f}")

    columns = {
        "method": df["method"],
        "student": df["student"],
        "seeds": df["seeds"].astype(str),
        "top1_% (mean ± std)": df.apply(mean_std, axis=1),
        "top5_%": df["top5_mean_%"].map(percent_cell),
        "ece_%": df["ece_mean_%"].map(percent_cell),
    }
    for ref in table_references(df.columns):
        columns[f"vs_{ref} [{table_intervals(df).label}]"] = df.apply(paired_cell(ref), axis=1)
        columns[f"vs_{ref} ≠0"] = df[f"vs_{ref}_excludes_0"].map(decided_cell)
    return pd.DataFrame(
        {
            **columns,
            "params": df["params"].map(lambda v: "-" if pd.isna(v) else _si(v)),
            "flops/image": df["flops_per_image"].map(lambda v: "-" if pd.isna(v) else _si(v)),
            "compression": df["compression"].map(percent_cell),
            "compression_1000": df["compression_1000"].map(percent_cell),
            "teacher_top1_%": df["teacher_top1_%"].map(percent_cell),
            "paper_top1_%_quoted": df["paper_top1_%_quoted"].map(percent_cell),
            "paper_compression_quoted": df["paper_compression_quoted"].map(percent_cell),
        }
    )


def format_comparison(df: pd.DataFrame) -> str:
    """A fixed-width table for the terminal."""
    return _display(df).to_string(index=False)


def comparison_markdown(df: pd.DataFrame) -> str:
    """A GitHub Markdown table with its caption (what is quoted, what the units and heads are)."""
    return markdown_table(_display(df)) + "\n" + caption(df) + "\n"


def caption(df: pd.DataFrame) -> str:
    intervals = table_intervals(df)
    listed, against = references_words(table_references(df.columns))
    text = CAPTION.format(listed=listed, against=against, interval=intervals.words, seeds=intervals.seeds_needed)
    return text + (f" {df.attrs['note']}" if df.attrs.get("note") else "")


def comparison_latex(df: pd.DataFrame) -> str:
    """A booktabs `table` with the Markdown's cells and caption.

    `DataFrame.to_latex` needs jinja2, which torch (a dependency) requires, so it is always there.
    """
    shown = _display(df)
    text = caption(df).replace("`", "").replace("≠", r"$\neq$").replace("_", r"\_").replace("%", r"\%")
    latex = shown.to_latex(index=False, escape=True, caption=text, column_format="ll" + "r" * (len(shown.columns) - 2))
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
