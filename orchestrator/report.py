"""`python -m orchestrator.report SWEEP [--tracking-uri URI] [--out DIR]`: rebuild a finished sweep's or
comparison's tables and plots from MLflow alone, training nothing.

SWEEP is a sweep folder's name (`peer-20261126-101500`) or a spec name (its newest sweep).
The sweep driver calls the same code when a comparison ends, so both give the same tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pandas as pd
import torch
import yaml
from mlflow import MlflowClient
from mlflow.entities import Metric

from orchestrator.certainty_bins import teacher_figures, write_certainty_table
from orchestrator.cli import run_main
from orchestrator.comparison import (
    REFERENCES,
    comparison_table,
    format_comparison,
    table_intervals,
    write_comparison,
)
from orchestrator.comparison_plots import analysis_plots
from orchestrator.execution import sweep_order
from orchestrator.paired import IntervalLevel
from orchestrator.sequential import STOP_TAG, intervals_of, table_note
from orchestrator.spec import Spec, SpecError
from orchestrator.tables import ALL_FAILED, all_failed_line, format_table, trials_table, write_results
from orchestrator.teacher import summary_lines
from orchestrator.tracking import (
    PARENT_TAG,
    SWEEP_TAG,
    TRIAL_TAG,
    Journal,
    absolute_uri,
    is_constant,
    open_client,
    tracking_uri,
)
from trainables.files import PREDICTIONS_FILE

os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one line per download is noise here
CONFIG_ARTIFACT = "resolved_config.json"
TEACHER_LOGITS_ARTIFACT = "teacher_train_logits.pt"


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
    config_path = _download(client, parent.info.run_id, CONFIG_ARTIFACT)
    if not config_path:
        raise SpecError(f"sweep {name!r} has no {CONFIG_ARTIFACT} in MLflow: it was not logged by this tool")
    spec = Spec.model_validate(json.loads(Path(config_path).read_text()))
    sweep = LoggedSweep(parent.data.tags[SWEEP_TAG], parent.info.run_id, spec)
    children = client.search_runs(
        [parent.info.experiment_id], f"tags.`{PARENT_TAG}` = '{parent.info.run_id}'", max_results=5000
    )
    for child in sorted(children, key=lambda r: r.info.start_time):
        trial_id = child.data.tags.get(TRIAL_TAG, child.info.run_id)
        sweep.child_ids[trial_id] = child.info.run_id
        sweep.names[trial_id] = (child.info.run_name or trial_id).split()[0]
        params = {k: _param_value(v) for k, v in child.data.params.items()}
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


def _download(client: MlflowClient, run_id: str, path: str) -> Optional[str]:
    names = {a.path for a in client.list_artifacts(run_id)}
    return client.download_artifacts(run_id, path, tempfile.mkdtemp()) if path in names else None


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
        table = comparison_table(sweep.trials, names, spec.compare.methods, intervals_of(spec), note)
        files.update(write_comparison(table, out_dir))
        predictions, histories = {}, {}
        for trial_id, run_id in sweep.child_ids.items():
            path = _download(client, run_id, PREDICTIONS_FILE)
            if path:
                predictions[trial_id] = torch.load(path, weights_only=True)
            histories[trial_id] = {
                f"{n}/val_top1": [(m.step, m.value) for m in client.get_metric_history(run_id, f"{n}/val_top1")]
                for n in names
            }
        logits_path = _download(client, sweep.parent_id, TEACHER_LOGITS_ARTIFACT)
        teacher_logits = torch.load(logits_path, weights_only=True) if logits_path else None
        for path in analysis_plots(out_dir, names, predictions, sweep.trials, histories, teacher_logits):
            files[path.name] = path
        blind = spec.teacher.blind_classes()
        teacher = teacher_figures(sweep.trials, predictions, spec.loss.threshold, blind)
        files.update(
            write_certainty_table(
                out_dir, names, predictions, sweep.trials, IntervalLevel(spec.compare.interval), blind, teacher
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
    """`{method}/{student}/val_top1` (mean over seeds) and its paired differences to kd and ce with their
    interval (`.../vs_kd_mean`, `.../vs_kd_ci_low`, `.../vs_kd_ci_high`), as fractions like every top-1, and
    `paired_interval_level`, the intervals' level (per look in a sequential comparison)."""
    parts = {
        "val_top1": "top1_mean_%",
        **{f"vs_{ref}_{end}": f"vs_{ref}_{end}_%" for ref in REFERENCES for end in ("mean", "ci_low", "ci_high")},
    }
    figures = {
        f"{row['method']}/{row['student']}/{name}": row[column] / 100
        for _, row in table.iterrows()
        for name, column in parts.items()
        if pd.notna(row[column])
    }
    return {**figures, "paired_interval_level": table_intervals(table).level}


def parse_args(argv: Optional[list[str]]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m orchestrator.report", description=__doc__.splitlines()[0])
    p.add_argument("sweep", help="a sweep folder's name, or a spec name for its newest sweep")
    p.add_argument("--tracking-uri", help="MLflow store (default: MLFLOW_TRACKING_URI, else sqlite:///mlflow.db)")
    p.add_argument("--out", help="where to write the tables and plots (default: reports/SWEEP)")
    return p.parse_args(argv)


def main(argv: Optional[list[str]] = None) -> int:
    args = parse_args(argv)
    client = open_client(absolute_uri(tracking_uri(args.tracking_uri)))
    sweep = load_sweep(client, args.sweep)
    out = Path(args.out or Path("reports") / sweep.name)
    files = build_report(client, sweep, out)
    print(f"\n{len(sweep.trials)} trials of {sweep.name}; {len(files)} files in {out}")
    failed = all_failed_line([trial["error"] for trial in sweep.trials])
    if failed:
        sys.stdout.flush()
        print(f"error: sweep {sweep.name}: {failed}", file=sys.stderr)
        return ALL_FAILED
    return 0


if __name__ == "__main__":
    run_main(main)
