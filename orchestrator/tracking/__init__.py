"""MLflow on the driver: where the store is, the runs a command writes, and the journal that keeps every write
until the tracking server takes it.

- `uris`: the tracking URI of a command, a sqlite store's file and artifacts, where to look at the runs; no
  MLflow import.
- `client`: an MLflow client whose store exists (`open_client`), one that reads a store and creates nothing
  (`read_store`), and the experiment (`ensure_experiment`).
- `records`: what a run's record holds: the tags that find it (`SWEEP_TAG`, `TRIAL_TAG`), its name, which
  figures are curves and which params, the git commit.
- `errors`: why a trial failed, in one line (`error_line`).
- `journal`: the append-only journal of every write (`Journal`), and a finished sweep's run ids read from it
  (`sent_run_id`); `sender`: the thread that sends it, in order,
  for as long as it takes (`Sender`); `resend`: sending what a journal kept (`python -m orchestrator.sync`).
- `runs`: the runs a command writes through its journal: a sweep's parent run (`SweepTracker`), one
  `orchestrator.train` run (`TrackedRun`), and each run's writes (`RunLog`).
- `callbacks`: the Ray callbacks that write from the driver: the Tune callback of a sweep's trials
  (`trial_tracker`) and the Ray Train callback of one run's epochs (`EpochLogger`).

Above it: `orchestrator.results` (which reads sweeps back from MLflow) and `orchestrator.search`; below it:
`orchestrator.execution`. MLflow is imported by `client`, `sender`, `runs` and `callbacks`, Ray by `callbacks`,
each when first used through this face.
"""

from orchestrator import lazy_face

_MODULES = {  # module -> the names it offers the other packages (imported when first used)
    "uris": (
        "DEFAULT_TRACKING_URI",
        "tracking_uri",
        "sqlite_path",
        "absolute_uri",
        "artifact_location",
        "where_to_look",
    ),
    "client": ("open_client", "read_store", "ensure_experiment", "EXPERIMENT_KIND"),
    "records": (
        "SWEEP_TAG",
        "TRIAL_TAG",
        "is_constant",
        "numeric_metrics",
        "constant_figures",
        "run_name",
        "flatten",
        "git_commit",
    ),
    "errors": ("error_line", "error_text"),
    "journal": (
        "JOURNAL_FOLDER",
        "PARENT_TAG",
        "RUN_KEY_TAG",
        "Journal",
        "JournalFiles",
        "open_journal",
        "sent_run_id",
    ),
    "sender": ("Sender", "SendLock", "short_error", "dataset_input"),
    "resend": ("journal_files", "send_kept"),
    "runs": ("RunLog", "TrackedRun", "SweepTracker", "log_params"),
    "callbacks": ("EpochLogger", "TrialTracker", "trial_tracker"),
}
__getattr__, __dir__, __all__ = lazy_face(__name__, _MODULES)
