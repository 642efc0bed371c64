"""A command inside `ray job submit`: Ray runs its entrypoint in a temporary folder that is deleted with the job
(and may be unpacked again underneath a running driver). So a command refuses outputs relative to that folder
(`check_outputs_persist`), and once its inputs are read it works from a folder of its own (`working_in`).
"""

from __future__ import annotations

import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Optional

from trainables import storage
from trainables.config import ConfigError

# Set by Ray in the entrypoint of `ray job submit`, whose working folder Ray deletes with the job.
RAY_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def in_ray_job() -> bool:
    return RAY_JOB_ENV in os.environ


def check_outputs_persist(storage_setting: str, tracking_uri: Optional[str] = None) -> None:
    """In a Ray job, refuse outputs relative to its temporary folder: they would vanish with the job."""
    if not in_ray_job():
        return
    if not storage.is_uri(storage_setting) and not os.path.isabs(
        os.path.expandvars(os.path.expanduser(storage_setting))
    ):
        raise ConfigError(
            f"storage {storage_setting!r} is relative, and a Ray job runs in a temporary folder that is "
            "deleted with it: set DUALKD_STORAGE on the cluster to a folder every node shares "
            "(or s3://bucket/prefix), or --set storage=..."
        )
    if tracking_uri and tracking_uri.startswith("sqlite:///") and not tracking_uri.startswith("sqlite:////"):
        raise ConfigError(
            f"MLflow store {tracking_uri} is relative, and a Ray job runs in a temporary folder that "
            "is deleted with it: set MLFLOW_TRACKING_URI on the cluster (an http:// tracking server), "
            "or --tracking-uri"
        )


_working_folder: list[Optional[Path]] = [None]


@contextmanager
def working_in(folder: Path) -> Iterator[None]:
    """Once its inputs are read (every path absolute), a command works from a folder of its own: a Ray job's
    working folder may be unpacked again underneath it, which fails the `os.getcwd()` inside Tune's relpath
    calls. An internal error's traceback goes there too (`orchestrator.cli`). The caller's folder is back
    afterwards, if it still exists (a test that calls a command's main goes on where it was)."""
    before = os.getcwd()
    folder.mkdir(parents=True, exist_ok=True)
    os.chdir(folder)
    _working_folder[0] = folder
    try:
        yield
    finally:
        try:
            os.chdir(before)
        except OSError:
            pass


def working_folder() -> Optional[Path]:
    """The folder the command works in (`working_in`), if it entered one."""
    return _working_folder[0]
