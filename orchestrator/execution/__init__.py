"""The places where the driver meets Ray: starting or joining it, one run's TorchTrainer, the folders a sweep
writes, storage that stops taking writes, and the Ray internals we lean on.

- `ray_start`: `start_ray` (a local Ray with TRAIN_DRIVER slots, or a cluster's), `stop_own_ray`.
- `ray_job`: a command inside `ray job submit`: outputs that outlive the job's temporary folder
  (`check_outputs_persist`), and a working folder of the command's own (`working_in`).
- `torch_trainer`: the Ray Train `TorchTrainer` of one run (`build_trainer`, `scaling_config`) and its `fit`,
  which turns a worker's one-line failure back into that line.
- `sweep_folder`: a sweep's folder on a shared disk or in a bucket (`SweepFolder`: a local scratch copy,
  `publish`, `fetch`), and how sweeps are named and found again.
- `storage_faults`: a full or read-only storage, as one line and a stop that keeps what is done (no Ray).
- `ray_internals`: every private or developer API of Ray (and Optuna) the driver uses, with the versions it was
  checked against.

Above it: `orchestrator.tracking` and `orchestrator.teacher`; below it: `orchestrator.spec`. Ray is imported
by the modules that use it, when they are imported: this package's face imports none of them.
"""

from orchestrator import lazy_face

_MODULES = {  # module -> the names it offers the other packages (imported when first used)
    "ray_start": ("start_ray", "stop_own_ray", "pin_state_api"),
    "ray_job": ("RAY_JOB_ENV", "in_ray_job", "check_outputs_persist", "working_in", "working_folder"),
    "torch_trainer": (
        "build_trainer",
        "fit",
        "scaling_config",
        "failure_location",
        "attempt_failure_location",
        "worker_failure",
    ),
    "sweep_folder": ("SPEC_FILE", "SweepFolder", "new_sweep_folder", "latest_sweep_folder", "sweep_order"),
    "storage_faults": (
        "StorageFailed",
        "storage_failure",
        "is_storage_error",
        "from_os_error",
        "found_in",
        "reason_in",
        "probe",
    ),
    "ray_internals": (
        "CHECKED_AGAINST",
        "OPTUNA_SEARCH_FIELDS",
        "CHECKPOINT_PATH_KEY",
        "TuneReportCallback",
        "UserCallback",
        "LeanTorchTrainer",
        "hand_over_last_report",
        "experiment_folders",
    ),
}
__getattr__, __dir__, __all__ = lazy_face(__name__, _MODULES)
