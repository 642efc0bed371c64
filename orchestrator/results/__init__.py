"""A finished sweep's results: its tables, figures and ready-to-run specs, a comparison's statistics, and the
report rebuilt from MLflow.

- `tables`: the trials table (`trials_table`), its best trial, the every-trial-failed line.
- `formatting`: numbers as the terminal and Markdown show them (`format_table`, `markdown_table`).
- `figures`: the one place the plotting backend is chosen (`pyplot`, on first use) and `save_figure`.
- `best_specs`: `best.yaml` and a front trial's spec (`best_spec_yaml`).
- `sweep_plots`: the study's progress, parameter importances, top-1 against the uncertainty settings.
- `pareto`: a Pareto search's front, its plot and its files.
- `search_outputs`: what a finished search writes (`write_results`).
- `paired`: paired differences over seeds, their intervals, when they decide.
- `sequential`: seeds added until the paired difference decides, with the error split over the looks.
- `comparison`: the comparison table beside the paper's quoted figures; `certainty_bins`: accuracy by the
  teacher's certainty; `comparison_plots`: the uncertainty analysis as PNGs.
- `teacher_gating`: the teacher's gating curve as the parent run's plot, CSV and metrics.
- `logged_sweep`: a sweep read back from MLflow (`load_sweep`); `sweep_report`: its tables and plots
  (`build_report`; `rebuild_report`: `python -m orchestrator.report`).
- `finished_sweep`: a sweep read back from its folder's files (`read_sweep`, a `SweepResult`): what the Python API
  returns.

Pure functions on plain data where they can be, so the tests call them without Ray or MLflow. Above it:
`orchestrator.search`; below it: `orchestrator.tracking` (MLflow), `orchestrator.teacher` (the teacher's figures),
`orchestrator.execution` and `orchestrator.spec`. pandas, matplotlib, torch and MLflow load with the modules that
use them.
"""

from orchestrator import lazy_face

_MODULES = {  # module -> the names it offers the other packages (imported when first used)
    "tables": ("trials_table", "best_trial", "best_params", "all_failed_line", "ALL_FAILED", "RANKED_STATES"),
    "formatting": ("format_table", "markdown_table", "format_float", "plain_value"),
    "figures": ("pyplot", "save_figure"),
    "best_specs": ("best_spec_yaml", "FROM_SWEEP_TAG", "PARETO_DIR"),
    "sweep_plots": ("make_plots",),
    "pareto": ("dominates", "candidates", "pareto_front", "plot_front", "write_front"),
    "search_outputs": ("write_results",),
    "paired": (
        "IntervalLevel",
        "paired_difference",
        "t_interval",
        "has_spread",
        "difference_columns",
        "table_references",
        "decides",
        "min_seeds",
        "INTERVAL_COLUMNS",
    ),
    "sequential": ("STOP_TAG", "SequentialPlan", "plan_of", "stop_reason", "intervals_of", "table_note"),
    "comparison": (
        "comparison_table",
        "format_comparison",
        "comparison_markdown",
        "write_comparison",
        "table_intervals",
        "DEFAULT_REFERENCES",
    ),
    "certainty_bins": ("accuracy_by_certainty_table", "write_certainty_table", "teacher_figures"),
    "comparison_plots": ("analysis_plots",),
    "teacher_gating": ("PLOT_FILE", "CSV_FILE", "plot_gating_curve", "log_gating_curve"),
    "logged_sweep": ("LoggedSweep", "load_sweep", "find_parent", "CONFIG_ARTIFACT", "TEACHER_LOGITS_ARTIFACT"),
    "sweep_report": ("build_report", "parent_metrics", "rebuild_report"),
    "finished_sweep": ("SweepResult", "read_sweep", "RESULTS_FILE"),
}
__getattr__, __dir__, __all__ = lazy_face(__name__, _MODULES)
