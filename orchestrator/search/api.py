"""The Python API: `run` a spec as `python -m orchestrator.sweep` does (the same launch, sweep folder and MLflow
runs), `open_sweep` a finished one; both give a `SweepResult` (`orchestrator.results.finished_sweep`): its tables
as DataFrames, its best or Pareto specs, its folder and its MLflow parent run. docs/python-api.md shows it in use.

A user mistake raises one `SpecError` (a `ConfigError`), whose one-line message names the fix, as the commands
print it. Ray, MLflow and torch load only when `run` starts a sweep.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable, Optional

from orchestrator.execution import SweepFolder, from_os_error, is_storage_error, latest_sweep_folder, stop_own_ray
from orchestrator.results import SweepResult, read_sweep
from orchestrator.search.launch import start_sweep
from orchestrator.spec import DEFAULT_STORAGE, STORAGE_ENV, SpecError
from trainables import storage


def run(
    spec: str | os.PathLike,
    overrides: Iterable[str] = (),
    *,
    address: Optional[str] = None,
    tracking_uri: Optional[str] = None,
    skip_data_check: bool = False,
    resume: bool = False,
    force: bool = False,
    from_sweep: Optional[str] = None,
) -> SweepResult:
    """Run the sweep or comparison of spec file `spec` with `overrides` (`"students.epochs=3"`, as `--set` takes
    them), as `python -m orchestrator.sweep` does with the same options, and read back what it wrote.

    Relative paths (the spec's storage, `sqlite:///mlflow.db`) are taken from the working folder, as on the command
    line. The result's `exit_code` is the command's: 0 when the sweep finished, 130 when interrupted, else the
    trials failed (`table` then says how)."""
    if isinstance(overrides, str):
        raise SpecError(f"overrides={overrides!r}: give a list of key=value strings, e.g. [{overrides!r}]")
    try:
        launched = start_sweep(
            os.fspath(spec),
            list(overrides),
            address=address,
            mlflow_uri=tracking_uri,
            skip_data_check=skip_data_check,
            resume=resume,
            force=force,
            earlier_sweep=from_sweep,
        )
    except OSError as err:
        stop_own_ray()  # as the commands do on any error: the next run starts a Ray of its own
        if is_storage_error(err):
            raise from_os_error(err) from None
        raise
    except BaseException:
        stop_own_ray()
        raise
    return read_sweep(launched.folder, launched.code)


def storage_sweeps(storage_location: Optional[str] = None) -> str:
    """STORAGE/sweeps of `storage_location`, else of $DUALKD_STORAGE, else of ./runs: where a spec without a
    storage setting puts its sweeps."""
    setting = storage_location or os.environ.get(STORAGE_ENV) or DEFAULT_STORAGE
    return storage.join(setting if storage.is_uri(setting) else str(Path(setting).absolute()), "sweeps")


def find_sweep(folder_or_name: str | os.PathLike, storage_location: Optional[str] = None) -> SweepFolder:
    """A sweep folder's path; else, under the storage's sweeps, the folder of that name or the newest sweep of
    that spec name."""
    given = os.fspath(folder_or_name)
    path = Path(given)
    if not storage.is_uri(given) and (path.is_dir() or len(path.parts) > 1):
        return SweepFolder(str(path.absolute().parent), path.name)
    if storage.is_uri(given):
        root, _, name = given.rstrip("/").rpartition("/")
        return SweepFolder(root, name)
    root = storage_sweeps(storage_location)
    if storage.exists(storage.join(root, given)):
        return SweepFolder(root, given)
    newest = latest_sweep_folder(root, given) if storage.exists(root) else None
    if newest is None:
        raise SpecError(
            f"no sweep named {given!r} under {root}: give a sweep folder, a sweep's name or a spec's name, "
            "and storage= where its sweeps are"
        )
    return newest


def open_sweep(folder_or_name: str | os.PathLike, *, storage: Optional[str] = None) -> SweepResult:
    """A finished (or stopped) sweep, read from its folder: a folder's path, a sweep's name
    (`smoke-20250601-093000`) or a spec's name (its newest sweep) under `storage`'s sweeps (default: as a spec
    without a storage setting: $DUALKD_STORAGE, else ./runs). Needs neither Ray nor the MLflow server."""
    return read_sweep(find_sweep(folder_or_name, storage))
