"""Failures that a restart cannot fix (a diverged loss, an unreadable image): one line, recorded once.

Ray Train restarts a failed worker group (`resources.max_failures`) and Tune restarts a failed trial;
both would train again into the same failure. So the worker records the failure's line in the run's
folder (a local folder or a bucket), and a restart that finds it stops at once with the same line.
No Ray or MLflow here.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from typing import Iterator, Optional

from trainables import storage
from trainables.config import ConfigError

FAILURE_FILE = "failure.txt"


class RunFailed(ConfigError):
    """A run stopped by something its settings or its data can fix: one line, not retried."""


def one_line(err: BaseException) -> str:
    """The error's message as one line.

    A DataLoader worker's error comes back as `Caught X in DataLoader worker process 0` plus the
    original traceback, whose last line is `module.X: message`: that message is the line.
    """
    lines = [line for line in str(err).strip().splitlines() if line.strip()]
    line = lines[-1].strip() if lines else type(err).__name__
    return re.sub(rf"^(?:\w+\.)*{re.escape(type(err).__name__)}: ", "", line)


def record(location: Optional[str], line: str) -> None:
    """Keep the failure's line at `location` (best effort: the failure itself is what must surface)."""
    if not location:
        return
    try:
        storage.write_text(location, line + "\n")
    except OSError:
        pass


def recorded(location: Optional[str]) -> Optional[str]:
    """The line of a failure recorded at `location` by an earlier attempt, or None."""
    if not location:
        return None
    text = storage.read_text(location)
    return text.strip() if text and text.strip() else None


def raise_recorded(location: Optional[str]) -> None:
    """Stop at once when an earlier attempt of this run failed in a way a restart cannot fix."""
    line = recorded(location)
    if line:
        raise RunFailed(line)


@contextmanager
def recording_failures(location: Optional[str]) -> Iterator[None]:
    """Run a worker's block after any failure recorded at `location` stops it at once; the block's own
    one-line failure (a `ConfigError`) is recorded there and raised as `RunFailed` with that line."""
    raise_recorded(location)
    try:
        yield
    except ConfigError as err:
        line = one_line(err)
        record(location, line)
        raise (type(err)(line) if isinstance(err, RunFailed) else RunFailed(line)) from None


def clear_recorded(runs: str) -> None:
    """Forget the failures recorded by the runs under `runs` (a sweep's trials), so that they run again."""
    for name in storage.subfolders(runs):
        storage.delete(storage.join(runs, name, FAILURE_FILE))
