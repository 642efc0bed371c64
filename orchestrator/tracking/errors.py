"""Why a trial failed, in one line, from the error text Tune kept: what its MLflow run's `error` tag and a sweep's
every-trial-failed line say.
"""

from __future__ import annotations

import re
from pathlib import Path

from trainables.config import ConfigError


def _user_error_names() -> set[str]:
    """Class names of the one-line user errors (ConfigError and its subclasses)."""
    names, todo = set(), [ConfigError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def error_line(text: str) -> str:
    """The line that says why a trial failed: the last line of its error text, which is the exception.

    For our one-line user errors (a diverged loss, an unreadable image) the exception's class is
    dropped, leaving the message the user reads on the command line.
    """
    lines = [line for line in text.strip().splitlines() if line.strip()]
    if not lines:
        return "failed"
    match = re.match(r"^(?:\w+\.)*(\w+): (.*)$", lines[-1].strip())
    if match and match.group(1) in _user_error_names():
        return match.group(2)
    return lines[-1].strip()


def error_text(trial) -> str:
    """The traceback Tune wrote for a failed trial ("" when there is none)."""
    error_file = Path(trial.error_file or "/nonexistent")
    return error_file.read_text(errors="replace") if error_file.is_file() else ""
