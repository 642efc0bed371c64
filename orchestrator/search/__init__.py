"""The drivers: a sweep (Optuna's search or a comparison's fixed trials, through Ray Tune) and one run of fixed
values, from a command's arguments to their results.

- `launch`: `python -m orchestrator.sweep` up to the start: the spec read and checked, `--from-sweep`, `--resume`'s
  changes, the pre-flight and the plan (`launch_sweep`; `--dry-run` ends here, with no Ray, MLflow or torch);
  `start_sweep` also says which sweep folder it ran in.
- `plan`: the plan a sweep prints (`describe_plan`).
- `driver`: a sweep that runs: Ray, the MLflow parent run, the teacher once, then the search or the comparison
  (`run_sweep`).
- `tuner`: the Tune experiment of a sweep or a comparison round (`build_tuner`, `run_tuner`) and the settings Tune
  reads from the environment.
- `search_loop`: a search and its results; `comparison_rounds`: a comparison's rounds (a seed more at a time when
  sequential) and its tables.
- `outcomes`: what a round came to (every trial failed, interrupted, resource-hours used).
- `teacher_logging`: the teacher's uncertainty and gating curve on the parent run, before the first trial.
- `tune_callbacks`: the sweep's Tune callbacks (the study published to a bucket, the storage guard, the phase trace).
- `searcher`: Ray's `OptunaSearch` with the study in the sweep folder (`SweepSearch`).
- `trial`: the Tune function trainable: one trial = one `TorchTrainer` (`trial_trainable`).
- `tune_state`: a whole copy of Tune's saved state, so a full disk cannot make `--resume` start over.
- `single_run`: `python -m orchestrator.train`: one run, no Tuner (`train_once`).
- `api`: the Python API: `run` a spec as `python -m orchestrator.sweep` does, `open_sweep` a finished one; each a
  `SweepResult` (docs/python-api.md).

The top of the libraries: the doors call it; it calls `orchestrator.results`, `tracking`, `teacher`, `execution`
and `spec`. Ray, Tune, MLflow and torch load with the modules that use them (not `launch` and `plan`).
"""

from orchestrator import lazy_face

_MODULES = {  # module -> the names it offers the other packages (imported when first used)
    "launch": ("launch_sweep", "start_sweep", "Launched", "from_sweep", "sweep_folder", "sweeps_root"),
    "plan": ("describe_plan",),
    "driver": ("run_sweep",),
    "tuner": ("build_tuner", "run_tuner", "TUNE_ENVIRONMENT"),
    "outcomes": ("failure_summary", "trial_records"),
    "searcher": ("OPTUNA_DB", "SweepSearch", "SweepGenerator", "sweep_search_alg", "write_limits", "optuna_storage"),
    "trial": ("trial_trainable",),
    "tune_state": ("KEPT", "KeepTuneState", "repair_state", "reads_whole", "state_files"),
    "single_run": ("train_once",),
    "api": ("run", "open_sweep", "find_sweep", "SweepResult"),
}
__getattr__, __dir__, __all__ = lazy_face(__name__, _MODULES)
