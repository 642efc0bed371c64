"""A logged sweep's tables and plots, built from what MLflow holds: what `python -m orchestrator.report` rebuilds, and
what the sweep driver builds when a comparison ends, so both give the same tables.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path
from typing import Optional

import pandas as pd
import torch
from mlflow import MlflowClient
from mlflow.entities import Metric

from orchestrator.results.certainty_bins import teacher_figures, write_certainty_table
from orchestrator.results.comparison import comparison_table, format_comparison, table_intervals, write_comparison
from orchestrator.results.comparison_plots import analysis_plots
from orchestrator.results.formatting import format_table
from orchestrator.results.logged_sweep import TEACHER_LOGITS_ARTIFACT, LoggedSweep, download, load_sweep
from orchestrator.results.paired import IntervalLevel, table_references
from orchestrator.results.search_outputs import write_results
from orchestrator.results.sequential import STOP_TAG, intervals_of, table_note
from orchestrator.results.tables import ALL_FAILED, all_failed_line, trials_table
from orchestrator.teacher import summary_lines
from orchestrator.tracking import Journal, absolute_uri, open_client, tracking_uri
from trainables.files import PREDICTIONS_FILE


def build_report(
    client: MlflowClient, sweep: LoggedSweep, out_dir: Path, log_to: Optional[tuple[Journal, str]] = None
) -> dict[str, Path]:
    """Tables and plots of a logged sweep into out_dir (and onto the parent run, through a journal and the
    parent's key in it, when `log_to`)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    spec = sweep.spec
    trials = trials_table(sweep.trials, spec)
    files = write_results(trials, spec, out_dir, sweep.name, names=sweep.names)
    teacher: dict[str, float] = {}  # its validation figures, in a comparison
    if spec.compare:
        names = spec.students.names
        stopped = client.get_run(sweep.parent_id).data.tags.get(STOP_TAG)
        note = table_note(spec, sweep.trials, stopped)
        references = spec.compare.references
        table = comparison_table(sweep.trials, names, spec.compare.methods, intervals_of(spec), note, references)
        files.update(write_comparison(table, out_dir))
        predictions, histories = {}, {}
        for trial_id, run_id in sweep.child_ids.items():
            path = download(client, run_id, PREDICTIONS_FILE)
            if path:
                predictions[trial_id] = torch.load(path, weights_only=True)
            histories[trial_id] = {
                f"{n}/val_top1": [(m.step, m.value) for m in client.get_metric_history(run_id, f"{n}/val_top1")]
                for n in names
            }
        logits_path = download(client, sweep.parent_id, TEACHER_LOGITS_ARTIFACT)
        teacher_logits = torch.load(logits_path, weights_only=True) if logits_path else None
        for path in analysis_plots(out_dir, names, predictions, sweep.trials, histories, teacher_logits):
            files[path.name] = path
        blind = spec.teacher.blind_classes()
        teacher = teacher_figures(sweep.trials, predictions, spec.loss.threshold, blind)
        files.update(
            write_certainty_table(
                out_dir,
                names,
                predictions,
                sweep.trials,
                IntervalLevel(spec.compare.interval),
                blind,
                teacher,
                references,
            )
        )
        print("\n" + format_comparison(table))
        if teacher:
            print("\nthe teacher on the validation set: " + "; ".join(summary_lines(teacher, blind)))
    else:
        print("\n" + format_table(trials))
    if log_to:
        journal, parent = log_to
        if spec.compare:  # per method and student, so comparisons compare in the runs table
            now = int(time.time() * 1000)
            figures = {**parent_metrics(table), **{k: v for k, v in teacher.items() if not math.isnan(v)}}
            journal.log_batch(parent, metrics=[Metric(k, v, now, 0) for k, v in figures.items()])
        for name, path in files.items():
            journal.log_artifact(parent, str(path), str(Path("report") / Path(name).parent))
    return files


def parent_metrics(table) -> dict[str, float]:
    """`{method}/{student}/val_top1` (mean over seeds) and its paired differences to each of the table's references
    with their interval (`.../vs_kd_mean`, `.../vs_kd_ci_low`, `.../vs_kd_ci_high`), as fractions like every top-1, and
    `paired_interval_level`, the intervals' level (per look in a sequential comparison)."""
    paired = table_references(table.columns)
    parts = {
        "val_top1": "top1_mean_%",
        **{f"vs_{ref}_{end}": f"vs_{ref}_{end}_%" for ref in paired for end in ("mean", "ci_low", "ci_high")},
    }
    figures = {
        f"{row['method']}/{row['student']}/{name}": row[column] / 100
        for _, row in table.iterrows()
        for name, column in parts.items()
        if pd.notna(row[column])
    }
    return {**figures, "paired_interval_level": table_intervals(table).level}


def rebuild_report(name: str, uri: Optional[str] = None, out: Optional[str] = None) -> int:
    """`python -m orchestrator.report`: the tables and plots of sweep `name` (a folder's or a spec's name) from the
    MLflow store at `uri`, into `out` (default reports/NAME); the exit status (ALL_FAILED when every trial failed)."""
    client = open_client(absolute_uri(tracking_uri(uri)))
    sweep = load_sweep(client, name)
    out = Path(out or Path("reports") / sweep.name)
    files = build_report(client, sweep, out)
    print(f"\n{len(sweep.trials)} trials of {sweep.name}; {len(files)} files in {out}")
    failed = all_failed_line([trial["error"] for trial in sweep.trials])
    if failed:
        sys.stdout.flush()
        print(f"error: sweep {sweep.name}: {failed}", file=sys.stderr)
        return ALL_FAILED
    return 0
